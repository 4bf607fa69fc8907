// The low-latency transport (issue 17; docs/PROTOCOL.md, "Data-channel audio"): the browser's
// audio path owned end to end, as the server owns its own, instead of WebRTC's media track
// (whose receive buffer, NetEq, starts at 80 ms and never goes under 20 ms).
//
//   microphone ─ capture worklet ─┐            ┌─ playout worklet (playout.js) ─ speakers
//    (frames of the room's frame) │            │   (our adaptive buffer)         └ analysis
//                                 ▼            │
//                 codec Worker: AudioEncoder (Opus lowdelay) / AudioDecoder (stereo Opus)
//                                 ▼            ▲
//              RTCDataChannel "audio" {ordered: false, maxRetransmits: 0} ⇄ server
//
// The channel is created on the peer connection before its offer, then transferred to the
// Worker; the worklets talk to the Worker through MessagePorts: no audio crosses the main
// thread. `chooseTransport()` says which transport a page uses and why.

import { decoderConfig, encoderConfig } from "./opusconfig.js";

export const DATA_CHANNEL = "datachannel";
export const MEDIA = "media";
/** The room's frame when `joined` does not say (servers before rooms had frame sizes). */
export const DEFAULT_FRAME_MS = 20;
/** The playout depths kept for meanDepthFromNow(): 100 s of them. */
const MAX_DEPTHS = 400;

/**
 * Which transport this page uses for a room of `frameMs` frames: the data channel where the
 * browser encodes and decodes Opus with WebCodecs at that frame (and has AudioWorklet and
 * Workers that take a data channel), else the media track. `?transport=media` in the page's
 * URL forces the media track.
 *
 * @returns {Promise<{transport: string, why: string}>}
 */
export async function chooseTransport(frameMs, search = location.search) {
  if (new URLSearchParams(search).get("transport") === MEDIA) {
    return { transport: MEDIA, why: "chosen in the page's address (?transport=media)",
      forced: true };
  }
  const missing = ["AudioEncoder", "AudioDecoder", "AudioWorkletNode", "Worker",
    "RTCDataChannel"].filter((name) => typeof globalThis[name] === "undefined");
  if (missing.length) {
    return { transport: MEDIA, why: `this browser has no ${missing.join(", ")}` };
  }
  try {
    const [encode, decode] = await Promise.all([
      AudioEncoder.isConfigSupported(encoderConfig(frameMs)),
      AudioDecoder.isConfigSupported(decoderConfig()),
    ]);
    if (!encode.supported) {
      return { transport: MEDIA,
        why: `this browser cannot encode Opus in ${frameMs} ms low-delay frames (WebCodecs)` };
    }
    if (!decode.supported) {
      return { transport: MEDIA, why: "this browser cannot decode stereo Opus (WebCodecs)" };
    }
  } catch (error) {
    return { transport: MEDIA, why: `WebCodecs refused the Opus settings: ${error.message}` };
  }
  return { transport: DATA_CHANNEL,
    why: `WebCodecs Opus in ${frameMs} ms frames over a data channel` };
}

/**
 * The AudioContext at the lowest latency the device allows: `latencyHint: 0` and
 * "interactive" are both tried and the one whose baseLatency is lower kept (its
 * outputLatency is not known until the device runs; Chromium 156 headless: 0 gives 2.7 ms
 * base + 8 ms output, "interactive" 10 + 30 ms).
 */
export async function lowestLatencyContext() {
  const make = (latencyHint) => {
    try {
      return new AudioContext({ latencyHint, sampleRate: 48000 });
    } catch {
      return new AudioContext({ latencyHint }); // the device insists on its own rate
    }
  };
  const zero = make(0);
  const interactive = make("interactive");
  const [keep, drop] = (zero.baseLatency ?? 0) <= (interactive.baseLatency ?? 0)
    ? [zero, interactive] : [interactive, zero];
  drop.close();
  await keep.resume();
  return keep;
}

export class LowLatencyAudio extends EventTarget {
  /**
   * @param {AudioContext} ctx
   * @param {number} frameMs  the room's frame (`joined.frame_ms`)
   */
  constructor(ctx, frameMs) {
    super();
    this.ctx = ctx;
    this.frameMs = frameMs;
    this.frame = Math.round((frameMs * ctx.sampleRate) / 1000);
    this.channelState = "connecting";
    this.playout = null; // the playout buffer's last stats (playout.js's stats())
    this.link = null; // the Worker's last counts
    this.worker = null;
    this.mic = null;
    this.sendingMicrophone = false; // whether the microphone is what is sent now
    this.depths = []; // the playout buffer's mean depth (ms), four times a second
    this.depthsSeen = 0;
  }

  /** A function giving our playout buffer's mean depth (ms) from now until it is called. */
  meanDepthFromNow() {
    const from = this.depthsSeen;
    return () => {
      const count = Math.min(this.depthsSeen - from, this.depths.length);
      if (count <= 0) return this.playout?.depth_mean_ms ?? null;
      const recent = this.depths.slice(-count);
      return recent.reduce((sum, v) => sum + v, 0) / count;
    };
  }

  /** Load the worklets and build the graph: `input` → capture; playout → `output`. */
  async prepare() {
    await Promise.all([
      this.ctx.audioWorklet.addModule(new URL("./capture-worklet.js", import.meta.url)),
      this.ctx.audioWorklet.addModule(new URL("./playout-worklet.js", import.meta.url)),
    ]);
    const processorOptions = { frame: this.frame };
    // No outputs: Web Audio pulls such a node by itself (nothing to connect downstream).
    this.capture = new AudioWorkletNode(this.ctx, "spatialjam-capture", {
      numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1, channelCountMode: "explicit",
      processorOptions,
    });
    /** What is sent: the microphone, or the latency test's clicks (`sendInstead`). */
    this.input = new GainNode(this.ctx);
    this.input.connect(this.capture);
    /** Your mix as it plays (two channels). */
    this.output = new AudioWorkletNode(this.ctx, "spatialjam-playout", {
      numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [2], processorOptions,
    });
    this.output.port.onmessage = ({ data }) => {
      if (data.type !== "playout") return;
      this.playout = data.stats;
      this.depths.push(data.stats.depth_mean_ms);
      if (this.depths.length > MAX_DEPTHS) this.depths.splice(0, this.depths.length - MAX_DEPTHS);
      this.depthsSeen += 1;
    };
    this.output.connect(this.ctx.destination);
  }

  /**
   * Open the `audio` channel on `pc` (call before its offer) and hand it to the codec Worker.
   * @param {RTCPeerConnection} pc
   */
  attach(pc) {
    const channel = pc.createDataChannel("audio", { ordered: false, maxRetransmits: 0 });
    const toCapture = new MessageChannel();
    const toPlayout = new MessageChannel();
    this.capture.port.postMessage({ port: toCapture.port1 }, [toCapture.port1]);
    this.output.port.postMessage({ port: toPlayout.port1 }, [toPlayout.port1]);
    this.worker = new Worker(new URL("./lowlatency-worker.js", import.meta.url), { type: "module" });
    this.worker.onmessage = ({ data }) => this.onWorker(data);
    this.worker.onerror = (event) => this.emit("error", { message: event.message });
    this.worker.postMessage({ type: "start", channel, frameMs: this.frameMs,
      capturePort: toCapture.port2, playoutPort: toPlayout.port2 },
    [channel, toCapture.port2, toPlayout.port2]);
  }

  onWorker(data) {
    if (data.type === "link") {
      const { counts, type, channel, ...timing } = data;
      this.link = { ...counts, ...timing };
      this.channelState = data.channel;
    } else if (data.type === "channel") {
      this.channelState = data.state;
      this.emit("channel", { state: data.state });
    } else if (data.type === "error") {
      this.emit("error", { message: data.message });
    }
  }

  /** The microphone's stream as what is sent. */
  setMicrophone(stream) {
    this.setInputNode(this.ctx.createMediaStreamSource(stream));
  }

  /** Send `node`'s sound (your input after its gain: input.js) as your microphone. */
  setInputNode(node) {
    this.mic?.disconnect(this.input);
    this.mic = node;
    this.mic.connect(this.input);
    this.sendingMicrophone = true;
  }

  /**
   * Send `node`'s sound instead of the microphone (the latency test's clicks) until the
   * returned function is called.
   */
  sendInstead(node) {
    this.mic?.disconnect(this.input);
    this.sendingMicrophone = false;
    node.connect(this.input);
    return () => {
      node.disconnect(this.input);
      this.mic?.connect(this.input);
      this.sendingMicrophone = Boolean(this.mic);
    };
  }

  /** Our playout buffer fixed at `frames` frames (the player's choice), or adaptive (null). */
  setPlayoutFrames(frames) {
    this.output?.port.postMessage({ fixedFrames: frames });
  }

  /** What the latency panel shows of this transport. */
  stats() {
    return { frame_ms: this.frameMs, channel: this.channelState, playout: this.playout,
      link: this.link };
  }

  close() {
    this.worker?.postMessage({ type: "stop" });
    setTimeout(() => this.worker?.terminate(), 200);
    for (const node of [this.capture, this.output]) node?.port.postMessage({ stop: true });
    try {
      this.mic?.disconnect(this.input); // (the input chain lives on: the next link takes it)
    } catch {
      // not connected now (a latency test had it)
    }
    this.input?.disconnect();
    this.output?.disconnect();
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
