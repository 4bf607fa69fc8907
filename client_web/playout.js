// Our own playout buffer for the low-latency transport (issue 17): decoded frames in, a steady
// stream of samples out, with an adaptive depth. A pure class: no AudioWorklet globals, no
// clock. Time is the samples pulled: the playout worklet (playout-worklet.js) calls `push()`
// for every decoded packet and `pull()` once per render quantum; tests drive it the same way
// with scripted arrivals.
//
// What it does, in the order a frame meets it:
//
// - Reorder: packets are keyed by their u16 sequence number; the run of consecutive ones from
//   the next expected is committed to the FIFO at once, the rest wait. A packet older than the
//   next expected (already played or concealed) is dropped as late; a repeat is dropped.
// - Start at one frame (`minTarget`: one frame, or two when a frame is shorter than the render
//   quantum): nothing plays until the FIFO holds the target.
// - Missing packet: when the FIFO runs dry while later packets wait, the missing frame is
//   concealed and play goes on. WebCodecs exposes neither Opus PLC nor decoding the next
//   packet's FEC, so the concealment is ours: the last real frame played back and forth
//   (reversed, forward, …: continuous at every turn), fading to silence over
//   `concealFadeSamples` (one frame, at least 5 ms: a transient in the last frame, a drum hit,
//   is not heard again as a forward copy); the next real frame is crossfaded in over
//   XFADE_SAMPLES.
// - Underrun (dry, nothing waiting): the concealment plays out and the buffer refills to the
//   target before playing again. If the packet we ran dry for then arrives, it was late: the
//   target grows by a frame (up to `maxTarget`). If a later one comes first, it was lost: its
//   time was concealed already, it is skipped and the target stays.
// - Calm (no underrun or concealment for `calmSamples`, and the slack never under a frame):
//   the target shrinks by a frame; the drift control below drains the extra samples.
// - Drift: every `windowSamples` the smallest slack seen (samples left after a pull) is
//   compared with the slack of the first window after the start. Half a frame more: one sample
//   is dropped; half a frame less: one is inserted, each spread over SLIP_SAMPLES by reading at a rate of 1 ± 1/SLIP_SAMPLES with
//   linear interpolation (no click: the read position glides by one sample), at most one slip
//   per SLIP_GAP_SAMPLES (≈ 0.3 %, far more than a sound card's clock drift).
// - Backlog: a window whose smallest slack is more than SKIP_FRAMES_OVER + 1 frames above the
//   reference (the burst that ends a network stall) skips the whole frames beyond one, with a
//   crossfade from where play was: late audio is no use to a musician (Jamulus drops it too).
// - Fixed (`setFixedFrames`, the player's manual choice, as Jamulus and SonoBus offer): the
//   target is that many frames and stays there: no growth after an underrun, no shrinking in
//   calm. A deeper choice is reached by the drift control's inserted samples (a few seconds,
//   no click); a shallower one skips the excess frames with a crossfade.

import { sequenceDelta } from "./dcpacket.js";

export const PLAYING = "playing";
export const BUFFERING = "buffering";

/** A slip (one sample dropped or inserted) is spread over this many output samples. */
export const SLIP_SAMPLES = 64;
/** At least this many samples from the start of one slip to the next. */
export const SLIP_GAP_SAMPLES = 320;
/**
 * More slack than the reference by more than this many frames (the burst that ends a network
 * stall): the backlog is skipped at once (crossfaded), not played late.
 */
export const SKIP_FRAMES_OVER = 1;
/** Real audio after a concealment is crossfaded in over this many samples. */
export const XFADE_SAMPLES = 64;
/** A sequence number this far ahead of the expected one means the sender started again. */
const RESTART_PACKETS = 1000;

export class PlayoutBuffer {
  /**
   * @param {object} options
   * @param {number} options.frame  samples per frame (the room's frame: 240 at 5 ms)
   * @param {number} [options.channels=2]  output channels (a mono frame is copied to both)
   * @param {number} [options.sampleRate=48000]  only for the stats in ms
   * @param {number} [options.quantum=128]  samples per pull (Web Audio's render quantum)
   * @param {number} [options.maxTarget]  the deepest the target grows (samples; 200 ms)
   * @param {number} [options.calmSamples]  calm this long before the target shrinks (2 s)
   * @param {number} [options.windowSamples]  the drift control's window (0.2 s, ≥ 4 frames)
   * @param {number} [options.concealFadeSamples]  concealment fades out over this (a frame,
   *   at least 5 ms)
   * @param {number|null} [options.fixedFrames]  a fixed depth of this many frames (null:
   *   adaptive)
   */
  constructor({ frame, channels = 2, sampleRate = 48000, quantum = 128, maxTarget, calmSamples,
    windowSamples, concealFadeSamples, fixedFrames = null } = {}) {
    if (!(Number.isInteger(frame) && frame > 0)) {
      throw new RangeError(`frame must be a positive number of samples, not ${frame}`);
    }
    this.frame = frame;
    this.channels = channels;
    this.sampleRate = sampleRate;
    this.quantum = quantum;
    this.minTarget = frame * Math.max(1, Math.ceil(quantum / frame));
    this.maxTarget = Math.max(this.minTarget, maxTarget ?? Math.round(0.2 * sampleRate));
    this.calmSamples = calmSamples ?? 2 * sampleRate;
    this.windowSamples = windowSamples ?? Math.max(4 * frame, Math.round(0.2 * sampleRate));
    this.concealFadeSamples = concealFadeSamples ?? Math.max(frame, sampleRate / 200);

    const capacity = 2 ** Math.ceil(Math.log2(this.maxTarget + 4 * frame + 4096));
    this.mask = capacity - 1;
    this.fifo = Array.from({ length: channels }, () => new Float32Array(capacity));
    this.readAt = 0; // absolute index of the next sample to play
    this.writeAt = 0; // absolute index one past the last committed sample
    this.pending = new Map(); // sequence -> channels, waiting for the ones before it
    this.nextSequence = null;
    this.dryFor = null; // after an underrun: the sequence number we ran dry waiting for

    this.state = BUFFERING;
    this.target = this.minTarget;
    this.fixed = false; // a fixed target (setFixedFrames), not adaptive
    this.slip = { direction: 0, left: 0, step: 0, since: SLIP_GAP_SAMPLES };
    this.window = { pulled: 0, floor: Infinity };
    this.trend = 0; // −1: drop samples, +1: insert samples, 0: hold
    this.reference = null; // the slack the drift control holds (samples), set after a start
    this.calm = { pulled: 0, floor: Infinity };

    this.lastFrame = null; // the last real frame committed (channels)
    this.tail = null; // a Concealment when the FIFO ends in concealed samples
    this.out = null; // the Concealment playing while buffering, then crossfaded out
    this.xfade = 0; // samples of that crossfade still to play

    this.counts = { received: 0, played: 0, underruns: 0, concealed: 0, late: 0,
      duplicates: 0, overflows: 0, restarts: 0, dropped: 0, inserted: 0, grown: 0, shrunk: 0,
      skipped: 0 };
    if (fixedFrames !== null) this.setFixedFrames(fixedFrames);
  }

  /**
   * Play `frames` frames deep from now on, and stay there (null: adaptive again, from the
   * depth it has). Kept within one frame (two below a render quantum) and `maxTarget`.
   */
  setFixedFrames(frames) {
    if (frames === null) {
      this.fixed = false;
      return;
    }
    const target = Math.min(this.maxTarget,
      Math.max(this.minTarget, Math.round(frames) * this.frame));
    this.fixed = true;
    if (target === this.target) return;
    this.target = target;
    // The drift control holds the new slack from now on: a deeper target is reached by
    // inserting samples (one per SLIP_GAP_SAMPLES, no click: a few seconds), a shallower one
    // at once by skipping the excess frames (crossfaded).
    this.reference = target - this.quantum;
    this.window = { pulled: 0, floor: Infinity };
    this.resetCalm();
    if (this.state === PLAYING && this.depth - target >= this.frame) {
      this.skip(Math.floor((this.depth - target) / this.frame) * this.frame, 0);
    }
  }

  /** Samples committed and not yet played. */
  get depth() {
    return this.writeAt - this.readAt;
  }

  /**
   * A decoded packet arrived.
   *
   * @param {number} sequence  its u16 sequence number
   * @param {Float32Array[]} data  one array per channel (1 or more), one frame long
   * @returns {"queued"|"late"|"duplicate"} what became of it
   */
  push(sequence, data) {
    this.counts.received += 1;
    if (this.nextSequence === null) this.nextSequence = sequence;
    const ahead = sequenceDelta(sequence, this.nextSequence);
    if (ahead < 0) {
      this.counts.late += 1;
      return "late";
    }
    if (ahead > RESTART_PACKETS) {
      this.counts.restarts += 1;
      this.pending.clear();
      this.nextSequence = sequence;
    }
    if (this.pending.has(sequence)) {
      this.counts.duplicates += 1;
      return "duplicate";
    }
    this.pending.set(sequence, data);
    if (this.dryFor !== null) this.afterUnderrun(sequence);
    this.commitReady();
    return "queued";
  }

  /**
   * Fill `out` (one Float32Array per channel, all the same length) with the next samples.
   * Call once per render quantum, whatever the state: silence or concealment comes out while
   * buffering.
   */
  pull(out) {
    const n = out[0].length;
    if (this.state === BUFFERING) this.tryToStart();
    if (this.state === BUFFERING) {
      this.writeConcealment(out, 0);
      this.resetCalm();
      return;
    }
    this.observe(this.depth - n, n);
    for (let i = 0; i < n; i++) {
      if (this.depth < 1) {
        if (this.pending.size > 0) {
          this.concealMissing();
        } else {
          this.underrun();
          this.writeConcealment(out, i);
          return;
        }
      }
      this.readSample(out, i);
    }
    this.counts.played += n;
  }

  /** What a panel or a test wants to know; times in ms. */
  stats() {
    const ms = (samples) => (1000 * samples) / this.sampleRate;
    return {
      state: this.state,
      target_ms: ms(this.target),
      fixed: this.fixed,
      depth_ms: ms(this.depth),
      frame_ms: ms(this.frame),
      waiting: this.pending.size,
      ...this.counts,
    };
  }

  // -- filling -------------------------------------------------------------------------------

  /** Commit the consecutive run of packets from the next expected one. */
  commitReady() {
    while (this.pending.has(this.nextSequence)) {
      const data = this.pending.get(this.nextSequence);
      this.pending.delete(this.nextSequence);
      this.nextSequence = (this.nextSequence + 1) & 0xffff;
      this.append(data);
    }
  }

  /** The first packet after an underrun: was the one we ran dry for late, or lost? */
  afterUnderrun(sequence) {
    if (sequence === this.dryFor) {
      if (this.target < this.maxTarget && !this.fixed) {
        this.target = Math.min(this.maxTarget, this.target + this.frame);
        this.counts.grown += 1;
      }
    } else {
      while (!this.pending.has(this.nextSequence)) { // lost: concealment played in its time
        this.counts.concealed += 1;
        this.nextSequence = (this.nextSequence + 1) & 0xffff;
      }
    }
    this.dryFor = null;
  }

  /** The next expected packet is given up on: a concealed frame takes its place. */
  concealMissing() {
    this.counts.concealed += 1;
    this.resetCalm();
    const length = this.lastFrame ? this.lastFrame[0].length : this.frame;
    this.makeRoom(length);
    this.tail ??= new Concealment(this.lastFrame, this.channels, this.concealFadeSamples);
    const start = this.writeAt;
    this.writeAt += length;
    for (let i = 0; i < length; i++) this.tail.next(this.fifo, (start + i) & this.mask);
    this.nextSequence = (this.nextSequence + 1) & 0xffff;
    this.commitReady();
  }

  /** A real frame into the FIFO, crossfaded in if concealment played before it. */
  append(data) {
    const length = data[0].length;
    this.makeRoom(length);
    const channel = (c) => data[Math.min(c, data.length - 1)];
    const start = this.writeAt;
    const fade = this.tail ? Math.min(XFADE_SAMPLES, length) : 0;
    const faded = Array.from({ length: this.channels }, () => new Float32Array(1));
    for (let i = 0; i < length; i++) {
      const at = (start + i) & this.mask;
      if (i < fade) {
        this.tail.next(faded, 0);
        const w = (i + 1) / (fade + 1);
        for (let c = 0; c < this.channels; c++) {
          this.fifo[c][at] = w * channel(c)[i] + (1 - w) * faded[c][0];
        }
      } else {
        for (let c = 0; c < this.channels; c++) this.fifo[c][at] = channel(c)[i];
      }
    }
    this.writeAt += length;
    this.lastFrame = Array.from({ length: this.channels }, (_, c) => Float32Array.from(channel(c)));
    this.tail = null;
  }

  /** Past the FIFO's capacity the oldest samples go (a sender far ahead of us). */
  makeRoom(length) {
    const over = this.depth + length - (this.mask + 1);
    if (over > 0) {
      this.readAt += over;
      this.counts.overflows += 1;
    }
  }

  // -- playing -------------------------------------------------------------------------------

  /** While buffering: start once the target is held, conceal a gap that holds things up. */
  tryToStart() {
    while (this.pending.size > 0 && this.depth < this.target
      && this.depth + this.frame * this.pending.size >= this.target) {
      this.concealMissing();
    }
    if (this.depth >= this.target) {
      this.state = PLAYING;
      this.xfade = this.out ? XFADE_SAMPLES : 0;
      this.slip = { direction: 0, left: 0, step: 0, since: SLIP_GAP_SAMPLES };
    }
  }

  /**
   * Dry, and nothing waiting: buffer again. Whether the target grows is known when the next
   * packet comes: the one we ran dry for (late: grow), or a later one (it was lost: its time
   * has been concealed already; skip it, no growth).
   */
  underrun() {
    this.counts.underruns += 1;
    this.dryFor = this.nextSequence;
    this.state = BUFFERING;
    this.readAt = Math.min(this.readAt, this.writeAt); // a slip may have read one past
    this.resetCalm();
    this.window = { pulled: 0, floor: Infinity };
    this.trend = 0;
    this.reference = null;
  }

  /** One output sample at the read position; the read position moves on (gliding in a slip). */
  readSample(out, i) {
    const slip = this.slip;
    if (slip.left === 0 && this.trend !== 0 && slip.since >= SLIP_GAP_SAMPLES
      && (this.trend > 0 || this.depth > SLIP_SAMPLES + 2)) {
      Object.assign(slip, { direction: this.trend, left: SLIP_SAMPLES, since: 0 });
      if (this.trend < 0) this.counts.dropped += 1;
      else this.counts.inserted += 1;
    }
    const at = this.readAt & this.mask;
    const next = this.depth > 1 ? (this.readAt + 1) & this.mask : at;
    const frac = slip.step / SLIP_SAMPLES;
    for (let c = 0; c < out.length; c++) {
      const x = this.fifo[Math.min(c, this.channels - 1)];
      out[c][i] = frac === 0 ? x[at] : x[at] + frac * (x[next] - x[at]);
    }
    if (this.xfade > 0) this.crossfadeOut(out, i);
    slip.since += 1;
    if (slip.left === 0) {
      this.readAt += 1;
      return;
    }
    slip.left -= 1;
    if (slip.direction < 0) { // read at 1 + 1/SLIP_SAMPLES: one sample fewer played
      this.readAt += 1;
      slip.step += 1;
      if (slip.step === SLIP_SAMPLES) {
        slip.step = 0;
        this.readAt += 1;
      }
    } else if (slip.step === 0) { // read at 1 − 1/SLIP_SAMPLES: one sample more played
      slip.step = SLIP_SAMPLES - 1;
    } else {
      slip.step -= 1;
      this.readAt += 1;
    }
  }

  /** `out` from index `from` on: the concealment, fading out (silence once faded). */
  writeConcealment(out, from) {
    // What played last continues: the FIFO's concealed tail, or the last real frame.
    this.out ??= this.tail ? this.tail.copy()
      : new Concealment(this.lastFrame, this.channels, this.concealFadeSamples);
    this.xfade = 0;
    const sample = Array.from({ length: this.channels }, () => new Float32Array(1));
    for (let i = from; i < out[0].length; i++) {
      this.out.next(sample, 0);
      for (let c = 0; c < out.length; c++) out[c][i] = sample[Math.min(c, this.channels - 1)][0];
    }
  }

  /** Just after buffering: sample `i` of `out` from the FIFO, crossfaded from concealment. */
  crossfadeOut(out, i) {
    const sample = Array.from({ length: this.channels }, () => new Float32Array(1));
    this.out.next(sample, 0);
    const w = (XFADE_SAMPLES - this.xfade + 1) / (XFADE_SAMPLES + 1);
    for (let c = 0; c < out.length; c++) {
      out[c][i] = w * out[c][i] + (1 - w) * sample[Math.min(c, this.channels - 1)][0];
    }
    this.xfade -= 1;
    if (this.xfade === 0) this.out = null;
  }

  // -- adapting ------------------------------------------------------------------------------

  /**
   * Before each pull of `n` samples: `slack` = samples left after it. The smallest slack of
   * the first window after a start is the reference; later windows whose smallest slack moved
   * half a frame from it set the drift trend (the sender's clock runs faster or slower than
   * ours). A long calm with a frame of slack to spare shrinks the target (and the reference).
   */
  observe(slack, n) {
    const w = this.window;
    w.floor = Math.min(w.floor, slack);
    w.pulled += n;
    if (w.pulled >= this.windowSamples) {
      // (At most the slack of a buffer holding just the target: a backlog that came in a burst
      // is not what we want to keep.)
      if (this.reference === null) this.reference = Math.min(w.floor, this.target - n);
      const ref = this.reference;
      const dropAbove = ref + this.frame / 2;
      const insertBelow = Math.max(ref - this.frame / 2, ref / 2);
      const backlog = Math.floor((w.floor - ref) / this.frame) - 1;
      if (backlog >= SKIP_FRAMES_OVER) this.skip(backlog * this.frame, n);
      this.trend = w.floor > dropAbove ? -1 : w.floor < insertBelow ? 1 : 0;
      this.window = { pulled: 0, floor: Infinity };
    }
    const calm = this.calm;
    calm.floor = Math.min(calm.floor, slack);
    calm.pulled += n;
    if (calm.pulled >= this.calmSamples) {
      if (this.target > this.minTarget && calm.floor >= this.frame && !this.fixed) {
        this.target -= this.frame;
        if (this.reference !== null) this.reference -= this.frame;
        this.counts.shrunk += 1;
      }
      this.resetCalm();
    }
  }

  /**
   * Skip `samples` of the FIFO (whole frames of a backlog): play goes on from further ahead,
   * crossfaded from where it was over XFADE_SAMPLES. Called before a pull of `n` samples.
   */
  skip(samples, n) {
    if (this.xfade > 0 || this.depth - samples < n + SLIP_SAMPLES) return;
    this.out = new FifoTail(this.fifo, this.readAt, this.mask);
    this.xfade = XFADE_SAMPLES;
    this.readAt += samples;
    this.counts.skipped += samples / this.frame;
  }

  resetCalm() {
    this.calm = { pulled: 0, floor: Infinity };
  }
}

/**
 * Concealment of missing audio: the last real frame played reversed, forward, reversed, … (the
 * first sample continues where the frame ended; every turn is continuous), its gain falling
 * linearly to silence over `fadeSamples`.
 */
class Concealment {
  /** @param {Float32Array[] | null} last  the last real frame (null: silence) */
  constructor(last, channels, fadeSamples) {
    this.last = last;
    this.channels = channels;
    this.at = 0;
    this.gain = last ? 1 : 0;
    this.step = 1 / fadeSamples;
  }

  /** The next sample into `into[c][at]` for every channel. */
  next(into, at) {
    const { last, gain } = this;
    if (!last || gain <= 0) {
      for (let c = 0; c < this.channels; c++) into[c][at] = 0;
      return;
    }
    const length = last[0].length;
    const k = this.at % (2 * length);
    const index = k < length ? length - 1 - k : k - length;
    for (let c = 0; c < this.channels; c++) into[c][at] = gain * last[c][index];
    this.at += 1;
    this.gain = Math.max(0, gain - this.step);
  }

  copy() {
    return Object.assign(Object.create(Concealment.prototype), this);
  }
}

/** The FIFO read on from `at`: what would have played, faded out when play skips ahead. */
class FifoTail {
  constructor(fifo, at, mask) {
    Object.assign(this, { fifo, at, mask });
  }

  next(into, at) {
    const k = this.at & this.mask;
    for (let c = 0; c < into.length; c++) into[c][at] = this.fifo[Math.min(c, this.fifo.length - 1)][k];
    this.at += 1;
  }
}
