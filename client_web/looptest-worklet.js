// The audio-thread half of "Test my latency" (looptest.js): one AudioWorkletProcessor that
// plays the click signal into the uplink and records the received mix, both on the same
// sample clock.
//
// Why in one processor: in each render quantum, the output we write here goes to the
// MediaStreamAudioDestinationNode (the track the RTCRtpSender now sends) and the input we read
// is what the MediaStreamAudioSourceNode of the received stream rendered in that same quantum.
// Counting both from the same `currentFrame` (the AudioContext's sample clock) makes "sample k
// of the signal left the page" and "sample k of the recording came back" the same instant, so
// (found index − emitted index) / sampleRate is the round trip with no clock to reconcile.

class LoopTestProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.run = null; // {signal, left, right, frames, start}
    this.finished = false;
    this.port.onmessage = ({ data }) => {
      // {signal: Float32Array, recordFrames: number}: start at the next render quantum.
      this.run = {
        signal: data.signal,
        left: new Float32Array(data.recordFrames),
        right: new Float32Array(data.recordFrames),
        frames: data.recordFrames,
        start: null,
      };
    };
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    const run = this.run;
    if (!run) {
      out.fill(0); // silence until told to start (and after the run)
      return !this.finished;
    }
    if (run.start === null) {
      // Sample 0 of both the signal and the recording is this quantum's first frame.
      run.start = currentFrame;
      this.port.postMessage({ type: "started", startFrame: currentFrame, sampleRate });
    }
    const offset = currentFrame - run.start;
    const n = out.length;
    const { signal } = run;
    for (let i = 0; i < n; i++) {
      const k = offset + i;
      out[i] = k < signal.length ? signal[k] : 0;
    }
    // The received mix: stereo (two channels), or mono, or nothing yet (no active input).
    const input = inputs[0];
    const left = input[0];
    const right = input[1] ?? input[0];
    const count = Math.min(n, run.frames - offset);
    if (left && count > 0) {
      run.left.set(count < n ? left.subarray(0, count) : left, offset);
      run.right.set(count < n ? right.subarray(0, count) : right, offset);
    }
    if (offset + n >= run.frames) {
      const { left: l, right: r, start } = run;
      this.port.postMessage({ type: "recorded", startFrame: start, left: l, right: r },
        [l.buffer, r.buffer]);
      this.run = null;
      this.finished = true;
    }
    return true;
  }
}

registerProcessor("spatialjam-loop-test", LoopTestProcessor);
