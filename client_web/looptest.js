// "Test my latency": clicks out through the server and back into your own mix, timed to the
// sample.
//
// 1. `recordLoop()` swaps the microphone on the RTCRtpSender for a track fed by Web Audio
//    (sender.replaceTrack: no renegotiation) — or, on the low-latency transport, the
//    microphone at the capture worklet's input for the clicks (`sendInstead`, lowlatency.js) —
//    and lets one AudioWorklet (looptest-worklet.js)
//    play a train of clicks into that track while it records the received mix. Both are
//    counted on the AudioContext's sample clock, so every click's emit time and the recording
//    share one time axis. The microphone goes back on the sender when the recording ends,
//    whatever happened. (The caller turns self-monitoring on before, and back after.)
// 2. `findClicks()` locates each click in the recording by cross-correlation (a matched
//    filter) and gives the round trip per click = received index − emitted index.
// 3. `explain()` splits the median round trip into what the browser and the server measure
//    (media RTT, the server's stages, the jitter buffer) and the rest, derived.
//
// The clicks come back after being sent as Opus, decoded at the server, rendered through the
// HRTF at your own position, encoded again and decoded by the browser: what is found is a
// shape close to the click, not the click itself; a matched filter copes with that.

import { readPeerStats } from "./latency.js";

/** A click: a 4 ms sweep from 3 to 7 kHz under a Hann window, at half of full scale. */
const CLICK_MS = 4;
const CLICK_LOW_HZ = 3000;
const CLICK_HIGH_HZ = 7000;
const CLICK_AMPLITUDE = 0.5;
/** Silence before the first click: the self-monitor and the new track take effect meanwhile. */
const LEAD_MS = 400;
/**
 * The gaps between clicks, about 400 ms each but all different, so that only one lag lines
 * every click up with the recording: with a regular train, a lag one gap too long would match
 * all clicks but one, and a round trip longer than a gap could not be told apart.
 */
const GAPS_MS = [400, 370, 430, 390, 450, 360, 420, 380, 440];
/** The longest round trip looked for; the recording runs this long after the last click. */
export const MAX_ROUND_TRIP_MS = 1500;
/** A lag found for the train may drift per click by this much (jitter-buffer time stretch). */
const SEARCH_MS = 25;
/** A click counts as found at this many times the recording's median matched-filter level… */
const FLOOR_RATIO = 3;
/** …and at least this fraction of the emitted click's own correlation (−50 dB)… */
const MIN_OF_CLICK = 0.003;
/** …and at least this fraction of the median found click (rejects stray peaks)… */
const MIN_OF_TYPICAL = 0.25;
/**
 * …and shaped like the click: a normalised cross-correlation of at least this much. Clicks
 * that came back measure 0.85–0.95 through Opus and the HRTF; loud drum-like noise that
 * happens to sit where a click was expected, under 0.4.
 */
const MIN_SHAPE = 0.7;
/** Fewer found clicks than this give no result. */
export const MIN_CLICKS = 3;

const worklets = new WeakMap(); // AudioContext -> Promise of addModule()

/** The click's samples at `sampleRate`. */
export function makeClick(sampleRate) {
  const n = Math.round((CLICK_MS / 1000) * sampleRate);
  const click = new Float32Array(n);
  const duration = n / sampleRate;
  const sweep = (CLICK_HIGH_HZ - CLICK_LOW_HZ) / duration; // Hz per second
  for (let i = 0; i < n; i++) {
    const t = i / sampleRate;
    const phase = 2 * Math.PI * (CLICK_LOW_HZ * t + 0.5 * sweep * t * t);
    const hann = 0.5 - 0.5 * Math.cos((2 * Math.PI * (i + 0.5)) / n);
    click[i] = CLICK_AMPLITUDE * hann * Math.sin(phase);
  }
  return click;
}

/** The whole signal to send: {signal, click, onsets (sample index of each click's start)}. */
export function clickPlan(sampleRate) {
  const click = makeClick(sampleRate);
  const onsets = [];
  let ms = LEAD_MS;
  onsets.push(Math.round((ms / 1000) * sampleRate));
  for (const gap of GAPS_MS) {
    ms += gap;
    onsets.push(Math.round((ms / 1000) * sampleRate));
  }
  const signal = new Float32Array(onsets.at(-1) + click.length + Math.round(0.02 * sampleRate));
  for (const onset of onsets) signal.set(click, onset);
  return { signal, click, onsets };
}

/**
 * Load the worklet into `ctx` (once). Worth doing early, at join: in Chrome the context's
 * rendering moves to a new thread when its first AudioWorklet module arrives, and a Web Audio
 * track sent meanwhile loses audio (the first test after a join lost its first clicks, about
 * 1.5 s, one time in three, when the module was loaded only then).
 */
export function loadWorklet(ctx) {
  let loading = worklets.get(ctx);
  if (!loading) {
    loading = ctx.audioWorklet.addModule(new URL("./looptest-worklet.js", import.meta.url));
    worklets.set(ctx, loading);
  }
  return loading;
}

/**
 * Send the clicks instead of the microphone and record what comes back.
 *
 * @param {{ctx: AudioContext, pc: RTCPeerConnection, received: MediaStream | AudioNode,
 *          sendInstead?: (node: AudioNode) => () => void,
 *          onPlaying?: (seconds: number) => void}} options
 *   `received` is the downlink (your mix: the media track's stream, or the low-latency
 *   playout node); `sendInstead(node)` sends `node` instead of the microphone until the
 *   function it returns is called (the low-latency transport; without it the RTP sender's
 *   track is replaced); `onPlaying` is told when the clicks start, with the recording's
 *   length in seconds.
 * @returns the recording (left, right), the plan, and getStats() before and after.
 */
export async function recordLoop({ ctx, pc, received, sendInstead = null, onPlaying = () => {} }) {
  const sender = sendInstead ? null : pc.getSenders().find((s) => s.track?.kind === "audio");
  if (!sendInstead && !sender) throw new Error("no microphone is being sent");
  if (ctx.state !== "running") throw new Error(`the audio engine is ${ctx.state}`);
  await loadWorklet(ctx);
  const sampleRate = ctx.sampleRate;
  const plan = clickPlan(sampleRate);
  const recordFrames = plan.signal.length + Math.ceil((MAX_ROUND_TRIP_MS / 1000) * sampleRate);

  // received mix -> [worklet: records input, plays the clicks] -> the track we send.
  // "discrete" and 2 channels: the stereo mix is kept as left and right, not down-mixed.
  const node = new AudioWorkletNode(ctx, "spatialjam-loop-test", {
    numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
    channelCount: 2, channelCountMode: "explicit", channelInterpretation: "discrete",
  });
  const source = received instanceof AudioNode ? received : ctx.createMediaStreamSource(received);
  source.connect(node);
  let restore;
  if (sendInstead) {
    restore = sendInstead(node);
  } else {
    const uplink = new MediaStreamAudioDestinationNode(ctx, { channelCount: 1 });
    node.connect(uplink);
    const clickTrack = uplink.stream.getAudioTracks()[0];
    const micTrack = sender.track;
    restore = async () => {
      // The microphone back first, whatever happened (a closed connection refuses: fine).
      await sender.replaceTrack(micTrack).catch(() => {});
      clickTrack.stop();
    };
    await sender.replaceTrack(clickTrack);
  }
  try {
    const statsBefore = await pc.getStats();
    const recordedS = recordFrames / sampleRate;
    const recorded = message(node.port, "recorded", 1000 * recordedS + 5000);
    const started = message(node.port, "started", 5000);
    node.port.postMessage({ signal: plan.signal, recordFrames });
    await started;
    onPlaying(recordedS);
    const { left, right, startFrame } = await recorded;
    const statsAfter = await pc.getStats();
    return { sampleRate, startFrame, left, right, ...plan, statsBefore, statsAfter };
  } finally {
    await restore();
    source.disconnect(node);
    node.disconnect();
    node.port.close();
  }
}

/** The next message of `type` from the worklet, or a rejection after `timeoutMs`. */
function message(port, type, timeoutMs) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      port.removeEventListener("message", listen);
      reject(new Error("the audio engine stopped: no recording came back"));
    }, timeoutMs);
    const listen = ({ data }) => {
      if (data.type !== type) return;
      clearTimeout(timer);
      port.removeEventListener("message", listen);
      resolve(data);
    };
    port.addEventListener("message", listen);
    port.start();
  });
}

/**
 * Find each click of `onsets` in the recording.
 *
 * The recording is run through a matched filter (cross-correlation with the click); its
 * magnitude, the louder of the two ears, peaks where a click starts. First one lag is chosen
 * for the whole train: the one that lines up the most clicks with strong peaks (on a 1 ms
 * grid, each click's peak counted on a log scale, so one loud stray sound cannot outvote the
 * train). Then each click is looked for within ±SEARCH_MS of that lag, to the sample, and
 * counts as found if it stands out of the rest of the mix, is not far weaker than the other
 * clicks, and has the click's shape (so a loud drum hit where a click should be is not one).
 *
 * @param {Float32Array} left, right  the recording; index 0 is the signal's sample 0
 * @returns {{found: {emitted: number, received: number, ms: number, shape: number}[],
 *            lagMs: number|null}}  sample indices and the round trip of each click found
 */
export function findClicks(left, right, click, onsets, sampleRate,
  maxLagMs = MAX_ROUND_TRIP_MS) {
  const first = Math.max(0, onsets[0] - click.length);
  const envelope = matchedEnvelope(left, right, click, first);
  const selfCorrelation = click.reduce((sum, v) => sum + v * v, 0);

  // Peaks per 1 ms block, and their median: the level of whatever else is in the mix.
  const block = Math.max(1, Math.round(sampleRate / 1000));
  const blocks = new Float32Array(Math.ceil(envelope.length / block));
  for (let i = 0; i < envelope.length; i++) {
    const b = (i / block) | 0;
    if (envelope[i] > blocks[b]) blocks[b] = envelope[i];
  }
  const floor = Math.max(median(blocks.subarray((first / block) | 0)), 1e-4 * selfCorrelation);

  // The train's lag, in blocks.
  const maxLag = Math.ceil(maxLagMs / 1000 * sampleRate / block);
  const at = (b) => (b < blocks.length ? blocks[b] : 0);
  let bestLag = -1;
  let bestScore = 0;
  for (let lag = 0; lag <= maxLag; lag++) {
    let score = 0;
    for (const onset of onsets) {
      const b = ((onset / block) | 0) + lag;
      score += Math.log1p(Math.max(at(b), at(b + 1)) / floor);
    }
    if (score > bestScore) {
      bestScore = score;
      bestLag = lag;
    }
  }
  if (bestLag < 0) return { found: [], lagMs: null };

  // Each click near that lag, to the sample.
  const search = Math.round((SEARCH_MS / 1000) * sampleRate);
  const candidates = [];
  for (const onset of onsets) {
    const centre = onset + bestLag * block;
    const lo = Math.max(onset, centre - search);
    const hi = Math.min(envelope.length - 1, centre + search + block);
    let peak = -1;
    for (let i = lo; i <= hi; i++) if (peak < 0 || envelope[i] > envelope[peak]) peak = i;
    if (peak >= 0) {
      candidates.push({ emitted: onset, received: peak, level: envelope[peak],
        shape: shapeMatch(left, right, click, peak, sampleRate) });
    }
  }
  const strong = candidates.filter((c) => c.level >= FLOOR_RATIO * floor
    && c.level >= MIN_OF_CLICK * selfCorrelation && c.shape >= MIN_SHAPE);
  const typical = median(strong.map((c) => c.level));
  const found = strong.filter((c) => c.level >= MIN_OF_TYPICAL * typical).map((c) => ({
    emitted: c.emitted,
    received: c.received,
    ms: (1000 * (c.received - c.emitted)) / sampleRate,
    shape: c.shape,
  }));
  return { found, lagMs: (1000 * bestLag * block) / sampleRate };
}

/**
 * max(|left ⋆ click|, |right ⋆ click|) at every index from `first` (zeros before it): the
 * cross-correlation of each ear's signal with the click, index i = a click starting at i.
 */
function matchedEnvelope(left, right, click, first) {
  const n = Math.max(0, left.length - click.length + 1);
  const out = new Float32Array(n);
  const m = click.length;
  for (let i = first; i < n; i++) {
    let l = 0;
    let r = 0;
    for (let k = 0; k < m; k++) {
      l += left[i + k] * click[k];
      r += right[i + k] * click[k];
    }
    out[i] = Math.max(Math.abs(l), Math.abs(r));
  }
  return out;
}

/**
 * How much the recording at `at` looks like the click, whichever ear is more alike: the
 * normalised cross-correlation of the waveforms (1 for the click at any level), both first
 * band-passed to the click's 3–7 kHz. Without the band-pass, loud sound elsewhere in the
 * spectrum (most of music's energy, the tests' 2 kHz tone) would hide a click that is plainly
 * there; without comparing waveforms, in-band noise (a drum hit) would pass: its matched
 * filter output peaks much like a click's, but its waveform is no rising sweep.
 */
function shapeMatch(left, right, click, at, sampleRate) {
  const taps = bandPass(sampleRate);
  const half = (taps.length - 1) / 2;
  const span = click.length + 2 * half; // the filtered click, tails included
  const own = filtered(click, taps, -half, span);
  let ownPower = 0;
  for (const v of own) ownPower += v * v;
  let best = 0;
  for (const x of [left, right]) {
    const y = filtered(x, taps, at - half, span);
    let dot = 0;
    let power = 0;
    for (let j = 0; j < span; j++) {
      dot += y[j] * own[j];
      power += y[j] * y[j];
    }
    if (power > 0) best = Math.max(best, Math.abs(dot) / Math.sqrt(power * ownPower));
  }
  return best;
}

/** A linear-phase band-pass around the click's band: a Hann-windowed sinc, 3 ms long. */
function bandPass(sampleRate) {
  const half = Math.round(0.0015 * sampleRate);
  const lo = (CLICK_LOW_HZ - 200) / sampleRate;
  const hi = (CLICK_HIGH_HZ + 200) / sampleRate;
  const sinc = (f, t) => (t === 0 ? 2 * f : Math.sin(2 * Math.PI * f * t) / (Math.PI * t));
  const taps = new Float32Array(2 * half + 1);
  for (let i = 0; i < taps.length; i++) {
    const t = i - half;
    const hann = 0.5 + 0.5 * Math.cos((Math.PI * t) / (half + 1));
    taps[i] = hann * (sinc(hi, t) - sinc(lo, t));
  }
  return taps;
}

/** `count` samples of `x` filtered by the symmetric `taps` (no delay), from index `from`. */
function filtered(x, taps, from, count) {
  const half = (taps.length - 1) / 2;
  const y = new Float32Array(count);
  for (let j = 0; j < count; j++) {
    let sum = 0;
    for (let i = 0; i < taps.length; i++) sum += taps[i] * (x[from + j - half + i] ?? 0);
    y[j] = sum;
  }
  return y;
}

export function median(values) {
  const sorted = Array.from(values).sort((a, b) => a - b);
  if (!sorted.length) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * The result of a test: the median round trip and what is known of its parts.
 *
 * - media round trip: the ICE candidate pair's currentRoundTripTime (STUN, measured);
 * - server: your frames' wait at the server (p50) + the tick (p50) + your mix's wait to be
 *   sent (p95), as the server's `stats` reports them (docs/PROTOCOL.md);
 * - jitter buffer: getStats jitterBufferDelay / jitterBufferEmittedCount, over the test
 *   (the media track), or our playout buffer's mean depth (`playoutMs`, the low-latency
 *   transport);
 * - rest = round trip − the above: derived, not measured (codec framing and look-ahead,
 *   the browser's capture and playout buffers between WebRTC and Web Audio).
 *
 * The round trip runs from the page's audio graph back to it: the sound card's own input and
 * output buffers are outside it (`deviceOutputMs`, AudioContext.outputLatency, is reported
 * beside it, not in it).
 */
export function explain(recording, found, server, deviceOutputMs, playoutMs = null) {
  const perClick = found.map((f) => f.ms);
  const roundTrip = perClick.length >= MIN_CLICKS ? median(perClick) : null;
  const before = readPeerStats(recording.statsBefore);
  const after = readPeerStats(recording.statsAfter);
  const rtt = after.pair?.currentRoundTripTime;
  let jitterBuffer = null;
  if (before.inbound && after.inbound) {
    const emitted = after.inbound.jitterBufferEmittedCount - before.inbound.jitterBufferEmittedCount;
    const delay = after.inbound.jitterBufferDelay - before.inbound.jitterBufferDelay;
    if (emitted > 0) jitterBuffer = (1000 * delay) / emitted;
  }
  const breakdown = {
    media_rtt_ms: rtt != null ? 1000 * rtt : null,
    server_uplink_wait_ms: server ? server.uplink_wait_ms_p50 ?? server.uplink_buffer_ms : null,
    server_tick_ms: server ? server.tick_ms_p50 : null,
    server_downlink_wait_ms: server ? server.downlink_wait_ms_p95 ?? server.downlink_queue_ms : null,
    jitter_buffer_ms: jitterBuffer,
    playout_buffer_ms: playoutMs,
  };
  const { server_uplink_wait_ms: up, server_tick_ms: tick, server_downlink_wait_ms: down } = breakdown;
  breakdown.server_ms = server ? up + tick + down : null;
  const known = [breakdown.media_rtt_ms, breakdown.server_ms, breakdown.jitter_buffer_ms,
    breakdown.playout_buffer_ms];
  breakdown.rest_ms = roundTrip == null ? null
    : roundTrip - known.reduce((sum, v) => sum + (v ?? 0), 0);
  return {
    round_trip_ms: roundTrip,
    clicks: perClick.length,
    clicks_sent: recording.onsets.length,
    per_click_ms: perClick,
    /** When the first click left the page, on the AudioContext's clock (seconds). */
    started_at_s: (recording.startFrame + recording.onsets[0]) / recording.sampleRate,
    breakdown,
    device_output_ms: deviceOutputMs,
  };
}
