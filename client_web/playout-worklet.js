// The low-latency downlink's audio-thread half (lowlatency.js): decoded frames of your mix come
// from the codec Worker (lowlatency-worker.js) over a MessagePort and are played through our
// own adaptive buffer (playout.js, a pure class; its behaviour is described there).
//
// Every STATS_INTERVAL_S it posts the buffer's stats on its node's port, with the mean depth
// over the interval (what the latency panel and "Test my latency" show as our playout buffer).

import { PlayoutBuffer } from "./playout.js";

const STATS_INTERVAL_S = 0.25;

class PlayoutProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.buffer = new PlayoutBuffer({ frame: options.processorOptions.frame, channels: 2,
      sampleRate, quantum: 128 });
    this.running = true;
    this.depthSum = 0;
    this.pulls = 0;
    this.nextStats = currentFrame + STATS_INTERVAL_S * sampleRate;
    this.port.onmessage = ({ data }) => {
      if (data.port) data.port.onmessage = ({ data: frame }) => this.receive(frame);
      if (data.stop) this.running = false;
      if ("fixedFrames" in data) this.buffer.setFixedFrames(data.fixedFrames); // null: adaptive
    };
  }

  /** {sequence, left, right?}: one decoded frame. */
  receive({ sequence, left, right }) {
    this.buffer.push(sequence, right ? [left, right] : [left]);
  }

  process(inputs, outputs) {
    const out = outputs[0];
    this.depthSum += this.buffer.depth;
    this.pulls += 1;
    this.buffer.pull(out);
    if (currentFrame >= this.nextStats) {
      const stats = this.buffer.stats();
      stats.depth_mean_ms = (1000 * this.depthSum) / this.pulls / sampleRate;
      this.port.postMessage({ type: "playout", stats });
      this.depthSum = 0;
      this.pulls = 0;
      this.nextStats = currentFrame + STATS_INTERVAL_S * sampleRate;
    }
    return this.running;
  }
}

registerProcessor("spatialjam-playout", PlayoutProcessor);
