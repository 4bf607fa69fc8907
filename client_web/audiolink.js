// Your audio connection to the server, on the transport this browser supports at the room's
// frame (lowlatency.js chooseTransport): the low-latency data channel (WebCodecs, our playout)
// or the WebRTC media track. One per (re)join; app.js keeps the current one.

import { DATA_CHANNEL, LowLatencyAudio, chooseTransport } from "./lowlatency.js";
import { notify } from "./notices.js";
import { ServerPeer } from "./peer.js";

export class AudioLink extends EventTarget {
  /**
   * @param {{ctx: AudioContext, mic: MediaStream, micNode: AudioNode,
   *          analysis: import("./audio.js").AudioAnalysis, mixAudio: HTMLAudioElement,
   *          send: (message: object) => void}} parts  `mic`: what the media track sends;
   *   `micNode`: the same as a node (the low-latency transport's input)
   */
  constructor(parts) {
    super();
    Object.assign(this, parts);
    this.peer = null;
    this.lowLatency = null; // LowLatencyAudio on the data channel
    this.mixStream = null; // the received stream on the media track
    this.transport = null;
    this.frameMs = null;
    this.closed = false;
  }

  /**
   * Choose the transport, build its audio and send the offer (`messageId`); a `transport`
   * event says which ({transport, why}), `state` events follow the peer connection's.
   */
  async start(iceServers, frameMs, messageId) {
    const choice = await chooseTransport(frameMs);
    let ll = null;
    if (choice.transport === DATA_CHANNEL) {
      ll = new LowLatencyAudio(this.ctx, frameMs);
      await ll.prepare();
      ll.setInputNode(this.micNode);
      ll.addEventListener("error", (e) => notify("audio", e.detail.message));
      this.analysis.setOutputNode(ll.output);
      this.mixAudio.srcObject = null;
    }
    if (this.closed) {
      ll?.close();
      return;
    }
    Object.assign(this, { lowLatency: ll, transport: choice.transport, frameMs });
    if (!ll && !choice.forced) {
      notify("audio", `Using the browser's WebRTC audio (higher latency): ${choice.why}.`);
    }
    this.emit("transport", choice);
    const peer = new ServerPeer(this.mic, this.send, iceServers, { lowLatency: ll });
    this.peer = peer;
    peer.addEventListener("mix", (e) => {
      if (!ll) this.playMix(e.detail.stream); // (on the data channel the mix comes there)
    });
    peer.addEventListener("state", (e) => this.emit("state", e.detail));
    await peer.start(messageId);
  }

  playMix(stream) {
    const audio = this.mixAudio;
    this.mixStream = stream;
    // Chrome feeds a remote stream to Web Audio only while a media element plays it.
    audio.srcObject = stream;
    audio.play().catch(() => {
      // Autoplay was refused: the next click anywhere starts the sound.
      notify("audio", "click anywhere to start the sound");
      document.addEventListener("click", () => {
        audio.play();
        this.ctx.resume();
      }, { once: true });
    });
    this.analysis.setOutput(stream);
  }

  /** What "Test my latency" needs of a live connection (latencytest.js), or null. */
  live() {
    const { ctx, peer, transport, frameMs } = this;
    if (!peer) return null;
    const ll = this.lowLatency;
    if (ll) {
      return { ctx, pc: peer.pc, received: ll.output, transport, frameMs,
        sendInstead: (node) => ll.sendInstead(node),
        playoutFromNow: () => ll.meanDepthFromNow() };
    }
    return this.mixStream ? { ctx, pc: peer.pc, received: this.mixStream, transport, frameMs }
      : null;
  }

  close() {
    this.closed = true;
    this.peer?.close();
    this.lowLatency?.close();
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
