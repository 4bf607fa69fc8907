// The low-latency uplink's audio-thread half (lowlatency.js): the microphone, cut into frames
// of the room's frame size and handed to the codec Worker (lowlatency-worker.js) over a
// MessagePort, without passing through the page's main thread.
//
// Each message is {pcm: Float32Array (one frame, mono), index: the frame's number on this
// capture clock (0, 1, 2, …)}; the Worker timestamps it index × frame samples. Without input
// (the microphone stopped) frames of silence go on, so the server's buffer keeps its pace.

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.frame = options.processorOptions.frame;
    this.pcm = new Float32Array(this.frame);
    this.filled = 0;
    this.index = 0;
    this.out = null; // the Worker's port, sent by lowlatency.js
    this.running = true;
    this.port.onmessage = ({ data }) => {
      if (data.port) this.out = data.port;
      if (data.stop) this.running = false;
    };
  }

  process(inputs) {
    const input = inputs[0][0]; // mono: the first channel (the microphone is mono)
    const n = input ? input.length : 128;
    let read = 0;
    while (read < n) {
      const count = Math.min(n - read, this.frame - this.filled);
      if (input) this.pcm.set(input.subarray(read, read + count), this.filled);
      else this.pcm.fill(0, this.filled, this.filled + count);
      this.filled += count;
      read += count;
      if (this.filled === this.frame) {
        if (this.out) this.out.postMessage({ pcm: this.pcm, index: this.index }, [this.pcm.buffer]);
        this.index += 1;
        this.pcm = new Float32Array(this.frame);
        this.filled = 0;
      }
    }
    return this.running;
  }
}

registerProcessor("spatialjam-capture", CaptureProcessor);
