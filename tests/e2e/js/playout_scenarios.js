// Scripted packet arrivals for client_web/playout.js's PlayoutBuffer (tests/e2e/
// test_browser_playout.py runs them in Chromium; `node --experimental-default-type=module`
// runs them too). No clock: time is samples. A sender makes a 440 Hz sine in frames on its own
// clock; frame j is complete at (j + 1)·frame of the sender's samples and reaches us at
// (j + 1)·frame / senderRate + delay(j) of ours; before each
// render quantum of ours, every packet that has arrived is pushed, then one quantum is pulled.

const SAMPLE_RATE = 48000;
const TONE_HZ = 440;
const AMPLITUDE = 0.5;
/** The largest step between two samples of the tone itself. */
export const TONE_STEP = AMPLITUDE * 2 * Math.PI * TONE_HZ / SAMPLE_RATE;

/**
 * Run one scripted session and say what came out.
 *
 * @param {typeof import("../../../client_web/playout.js").PlayoutBuffer} PlayoutBuffer
 * @param {object} script
 *   frame (samples), seconds, senderRate (sender samples per ours), delay(j) (extra samples
 *   for packet j), lost (Set of j never sent), startSequence, options (for the buffer),
 *   actions ([{at, run(buffer)}]: run before the pull at sample `at`, as a player would)
 * @returns {{stats: object, maxJump: number, startedAt: number, targets: number[],
 *            underrunsAfterStart: number, maxDepthLate: number}}
 */
export function simulate(PlayoutBuffer, {
  frame = 240, seconds = 10, senderRate = 1, delay = () => 0, lost = new Set(),
  startSequence = 0, options = {}, quantum = 128, actions = [],
} = {}) {
  const buffer = new PlayoutBuffer({ frame, quantum, ...options });
  const total = Math.round(seconds * SAMPLE_RATE);
  const frames = Math.ceil((total * senderRate) / frame) + 8;
  const arrivals = [];
  for (let j = 0; j < frames; j++) {
    if (!lost.has(j)) arrivals.push({ j, at: ((j + 1) * frame) / senderRate + delay(j) });
  }
  arrivals.sort((a, b) => a.at - b.at);
  const packet = (j) => {
    const data = new Float32Array(frame);
    for (let i = 0; i < frame; i++) {
      data[i] = AMPLITUDE * Math.sin((2 * Math.PI * TONE_HZ * (j * frame + i)) / SAMPLE_RATE);
    }
    return [data];
  };
  const left = new Float32Array(quantum);
  const right = new Float32Array(quantum);
  let next = 0;
  let previous = null;
  let maxJump = 0;
  let jumpAt = -1;
  let startedAt = -1;
  let underrunsAtStart = 0;
  let maxDepthLate = 0;
  const targets = [];
  const todo = [...actions].sort((a, b) => a.at - b.at);
  for (let t = 0; t < total; t += quantum) {
    while (todo.length && todo[0].at <= t) todo.shift().run(buffer);
    while (next < arrivals.length && arrivals[next].at <= t) {
      const { j } = arrivals[next++];
      buffer.push((startSequence + j) & 0xffff, packet(j));
    }
    buffer.pull([left, right]);
    if (startedAt < 0 && buffer.state === "playing") {
      startedAt = t;
      underrunsAtStart = buffer.counts.underruns;
    }
    if (startedAt >= 0) {
      for (let i = 0; i < quantum; i++) {
        if (previous !== null && Math.abs(left[i] - previous) > maxJump) {
          maxJump = Math.abs(left[i] - previous);
          jumpAt = t + i;
        }
        previous = left[i];
      }
    }
    if (t > total / 2) maxDepthLate = Math.max(maxDepthLate, buffer.depth);
    if (t % SAMPLE_RATE < quantum) targets.push(buffer.stats().target_ms);
  }
  const stats = buffer.stats();
  return { stats, maxJump, jumpAt, startedAt, targets, maxDepthLate,
    underrunsAfterStart: stats.underruns - underrunsAtStart };
}

/** The scenarios the e2e test checks, by name. */
export function scenarios(PlayoutBuffer) {
  const run = (script) => simulate(PlayoutBuffer, script);
  // A 40 ms stall of the network: packets 400 to 408 held up and then delivered together.
  const stalled = (j) => (j >= 400 && j <= 408 ? (408 - j) * 240 : 0);
  // Arrival jitter: each packet up to 1.5 frames late (a fixed pseudo-random sequence).
  let seed = 12345;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const jitter = Array.from({ length: 3000 }, () => random() * 360);
  const probes = []; // buffer depths (samples) read by scripted actions
  return {
    steady: run({ seconds: 6 }),
    underrun: run({ seconds: 12, delay: stalled }),
    jitter: run({ seconds: 12, delay: (j) => jitter[j % jitter.length] }),
    missing: run({ seconds: 4, lost: new Set([300]) }),
    // Packet 300 is not lost but 50 ms late: concealed first, then dropped as late.
    late: run({ seconds: 4, delay: (j) => (j === 300 ? 2400 : 0) }),
    faster: run({ seconds: 30, senderRate: 1.002 }),
    slower: run({ seconds: 30, senderRate: 0.998 }),
    wrap: run({ seconds: 4, startSequence: 65400 }),
    frame20: run({ frame: 960, seconds: 6, lost: new Set([100]), senderRate: 1.001 }),
    frame2_5: run({ frame: 120, seconds: 6, lost: new Set([1000]) }),
    // The player's fixed buffer of 3 frames: the stall's underrun does not grow it, calm does
    // not shrink it.
    fixed: run({ seconds: 12, delay: stalled, options: { fixedFrames: 3 } }),
    // Adaptive, grown to 3 frames by the stall, then fixed at 1 frame at 3.5 s: the excess is
    // skipped at once, and it stays at 1 frame.
    fixedDown: { ...run({ seconds: 10, delay: stalled, actions: [
      { at: 3.4 * SAMPLE_RATE, run: (b) => probes.push(b.depth) },
      { at: 3.5 * SAMPLE_RATE, run: (b) => b.setFixedFrames(1) },
      { at: 3.6 * SAMPLE_RATE, run: (b) => probes.push(b.depth) }] }),
    probes: probes.splice(0) },
    // Fixed at 1 frame, then at 4 frames at 3 s (reached by inserted samples, no click), then
    // adaptive again at 9 s.
    fixedUp: { ...run({ seconds: 12, options: { fixedFrames: 1 }, actions: [
      { at: 3 * SAMPLE_RATE, run: (b) => b.setFixedFrames(4) },
      { at: 8.9 * SAMPLE_RATE, run: (b) => probes.push(b.depth) },
      { at: 9 * SAMPLE_RATE, run: (b) => b.setFixedFrames(null) }] }),
    probes: probes.splice(0) },
  };
}
