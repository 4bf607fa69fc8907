// The WebRTC half: one RTCPeerConnection to the server per (re)join.
//
// - The STUN and TURN servers are the ones `joined` gave (`ice_servers`; none: the server is
//   reached directly). A failed connection is explained in a notice (icepath.js).
// - Our offer is edited for stereo Opus BEFORE setLocalDescription (see sdp.js).
// - We wait for ICE gathering to finish, so the offer we send carries every candidate
//   (the server also accepts trickled `ice` messages; it trickles none itself today, but any it
//   sends are added).
// - The server may renegotiate with its own `offer`: we answer, edited the same way.
// - On the low-latency transport (lowlatency.js) the offer carries the `audio` data channel and
//   no audio track at all: the server then sends our mix on the channel, and we send no RTP.

import { explainIceFailure } from "./icepath.js";
import { notify } from "./notices.js";
import { withStereoOpus } from "./sdp.js";

const GATHERING_TIMEOUT_MS = 3000;

export class ServerPeer extends EventTarget {
  /**
   * @param {MediaStream} micStream  the microphone; its audio track is sent
   * @param {(message: object) => void} send  sends a signaling message
   * @param {RTCIceServer[]} iceServers  the `ice_servers` of `joined`
   * @param {{lowLatency?: import("./lowlatency.js").LowLatencyAudio}} [options]  with
   *   `lowLatency`, its data channel is opened instead of sending the microphone's track
   */
  constructor(micStream, send, iceServers = [], { lowLatency = null } = {}) {
    super();
    this.send = send;
    this.iceServers = iceServers;
    this.gatheredRelay = false; // whether the TURN server gave us a relay candidate
    this.pc = new RTCPeerConnection({ iceServers });
    this.pc.onicecandidate = (event) => {
      if (event.candidate?.type === "relay") this.gatheredRelay = true;
    };
    if (lowLatency) lowLatency.attach(this.pc); // before the offer: it must list the channel
    else for (const track of micStream.getAudioTracks()) this.pc.addTrack(track, micStream);
    this.pc.ontrack = (event) => {
      const stream = event.streams[0] ?? new MediaStream([event.track]);
      this.emit("mix", { stream });
    };
    this.pc.onconnectionstatechange = () => {
      if (this.pc.connectionState === "failed") {
        notify("media", explainIceFailure(this.iceServers, this.gatheredRelay));
      }
      this.emit("state", { state: this.pc.connectionState });
    };
    this.offerId = null;
  }

  /** Create, edit and send our offer; the `answer` arrives through `handle()`. */
  async start(messageId) {
    const offer = await this.pc.createOffer();
    // The stereo edit must reach setLocalDescription: Chrome configures its Opus decoder from
    // the *local* description, so editing only what we send would still give mono.
    await this.pc.setLocalDescription({ type: "offer", sdp: withStereoOpus(offer.sdp) });
    await iceGatheringComplete(this.pc, GATHERING_TIMEOUT_MS);
    this.offerId = messageId;
    this.send({ type: "offer", id: messageId, sdp: this.pc.localDescription.sdp });
  }

  /** Apply a server message meant for the peer (answer, offer, ice). */
  async handle(message) {
    if (message.type === "answer") {
      await this.pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
    } else if (message.type === "offer") {
      await this.pc.setRemoteDescription({ type: "offer", sdp: message.sdp });
      const answer = await this.pc.createAnswer();
      await this.pc.setLocalDescription({ type: "answer", sdp: withStereoOpus(answer.sdp) });
      this.send({ type: "answer", sdp: this.pc.localDescription.sdp });
    } else if (message.type === "ice") {
      if (message.candidate) {
        const { candidate, sdpMid, sdpMLineIndex, usernameFragment } = message;
        await this.pc.addIceCandidate({ candidate, sdpMid, sdpMLineIndex, usernameFragment });
      } else {
        await this.pc.addIceCandidate(); // end of candidates
      }
    }
  }

  /** The inbound audio and the transport's stats, as RTCStatsReport. */
  getStats() {
    return this.pc.getStats();
  }

  close() {
    this.pc.ontrack = null;
    this.pc.onicecandidate = null;
    this.pc.onconnectionstatechange = null;
    this.pc.close();
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** Resolves when `pc` has gathered all its candidates, or after `timeoutMs`. */
function iceGatheringComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}
