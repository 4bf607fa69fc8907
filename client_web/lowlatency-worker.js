// The low-latency transport's codec Worker (lowlatency.js starts it): WebCodecs Opus both ways
// and the `audio` data channel itself, off the page's main thread.
//
// - Uplink: frames of the microphone arrive from the capture worklet (capture-worklet.js) on
//   `capturePort`; AudioEncoder (Opus, `lowdelay`, the room's frame) encodes each; each packet
//   goes out on the channel with the 12-byte header (dcpacket.js).
// - Downlink: each packet of your mix from the channel is decoded by AudioDecoder (stereo Opus)
//   and its two channels go to the playout worklet (playout-worklet.js) on `playoutPort`.
//
// The RTCDataChannel was transferred here (Chrome transfers data channels to Workers), so no
// packet crosses the main thread. Counts go to the page once a second ({type: "link"}), with
// the mean time a frame spent in the encoder and a packet in the decoder.

import { packPacket, parsePacket } from "./dcpacket.js";
import { SAMPLE_RATE, decoderConfig, encoderConfig } from "./opusconfig.js";

/**
 * Audio queued in the channel (SCTP not taking it as fast as it comes) beyond this much is
 * dropped, not queued: late audio is no use, and a queue would be delay that no stat shows.
 */
const MAX_QUEUED_MS = 40;
/** More frames waiting for the encoder or decoder than this: the next is dropped. */
const MAX_CODEC_QUEUE = 8;
const STATS_INTERVAL_MS = 1000;
/** A codec that fails is started afresh this many times before the page is told. */
const MAX_CODEC_RESTARTS = 5;

let link = null;

onmessage = ({ data }) => {
  if (data.type === "start") link = new Link(data);
  else if (data.type === "stop") link?.close();
};

class Link {
  constructor({ channel, capturePort, playoutPort, frameMs }) {
    this.frame = Math.round((frameMs * SAMPLE_RATE) / 1000);
    this.frameMs = frameMs;
    this.channel = channel;
    this.playoutPort = playoutPort;
    this.sequence = 0;
    this.counts = { sent: 0, received: 0, not_sent: 0, refused: 0, encode_errors: 0,
      decode_errors: 0, codec_dropped: 0, bytes_sent: 0, bytes_received: 0, gaps_late: 0 };
    // The packets in the decoder, in order ({sequence, at: when handed to it}): one output
    // comes per packet, and Chrome stamps outputs from a running count, not with the packet's
    // timestamp.
    this.decoding = [];
    this.encoding = []; // when each frame in the encoder was handed to it (ms)
    this.timing = { encode: [0, 0], decode: [0, 0] }; // [sum ms, count] this interval
    this.encoder = this.makeEncoder();
    this.decoder = this.makeDecoder();

    channel.binaryType = "arraybuffer";
    channel.onmessage = ({ data }) => this.receive(data);
    channel.onopen = () => this.post({ type: "channel", state: "open" });
    channel.onclose = () => this.post({ type: "channel", state: "closed" });
    capturePort.onmessage = ({ data: frame }) => this.encode(frame);
    this.lastArrivalMs = null;
    this.gapMaxMs = 0; // the longest time between two mix packets, this interval
    this.timer = setInterval(() => {
      const mean = ([sum, count]) => (count ? sum / count : null);
      this.post({ type: "link", counts: { ...this.counts }, gap_max_ms: this.gapMaxMs,
        encode_ms: mean(this.timing.encode), decode_ms: mean(this.timing.decode),
        channel: channel.readyState, buffered_bytes: channel.bufferedAmount });
      this.gapMaxMs = 0;
      this.timing = { encode: [0, 0], decode: [0, 0] };
    }, STATS_INTERVAL_MS);
    if (channel.readyState === "open") this.post({ type: "channel", state: "open" });
  }

  post(message) {
    postMessage(message);
  }

  makeEncoder() {
    const encoder = new AudioEncoder({
      output: (chunk) => this.send(chunk),
      error: (error) => {
        // A failed encoder is closed: start a fresh one (a few times; then say so and stop).
        this.counts.encode_errors += 1;
        this.encoding = [];
        if (this.counts.encode_errors <= MAX_CODEC_RESTARTS) {
          this.encoder = this.makeEncoder();
        } else {
          this.post({ type: "error", message: `the Opus encoder failed: ${error.message}` });
        }
      },
    });
    encoder.configure(encoderConfig(this.frameMs));
    return encoder;
  }

  makeDecoder() {
    return new AudioDecoder({
      output: (audio) => this.play(audio),
      error: () => {
        // A packet the decoder could not take closes it: start a fresh one.
        this.counts.decode_errors += 1;
        this.decoding = [];
        if (this.counts.decode_errors <= MAX_CODEC_RESTARTS) this.decoder = this.makeDecoder();
        else this.post({ type: "error", message: "the Opus decoder keeps failing" });
      },
    });
  }

  /** {pcm, index} from the capture worklet. */
  encode({ pcm, index }) {
    if (this.encoder.state !== "configured") return;
    if (this.encoder.encodeQueueSize > MAX_CODEC_QUEUE) {
      this.counts.codec_dropped += 1;
      return;
    }
    this.encoding.push(performance.now());
    this.encoder.encode(new AudioData({
      format: "f32-planar", sampleRate: SAMPLE_RATE, numberOfFrames: pcm.length,
      numberOfChannels: 1, timestamp: (index * this.frame * 1e6) / SAMPLE_RATE, data: pcm,
    }));
  }

  send(chunk) {
    this.took(this.timing.encode, this.encoding.shift());
    const opus = new Uint8Array(chunk.byteLength);
    chunk.copyTo(opus);
    const timestamp = Math.round((chunk.timestamp * SAMPLE_RATE) / 1e6);
    const captureUs = Math.round(1000 * (performance.timeOrigin + performance.now()));
    const packet = packPacket({ sequence: this.sequence, timestamp, captureUs }, opus);
    this.sequence = (this.sequence + 1) & 0xffff;
    const channel = this.channel;
    const most = Math.max(2, Math.ceil(MAX_QUEUED_MS / this.frameMs)) * packet.byteLength;
    if (channel.readyState !== "open" || channel.bufferedAmount > most) {
      // Not open yet, or the network cannot take them: late audio is no use, drop it.
      this.counts.not_sent += 1;
      return;
    }
    channel.send(packet);
    this.counts.sent += 1;
    this.counts.bytes_sent += packet.byteLength;
  }

  receive(data) {
    const packet = parsePacket(data);
    if (packet.error) {
      this.counts.refused += 1;
      return;
    }
    this.counts.received += 1;
    this.counts.bytes_received += data.byteLength;
    const now = performance.now();
    if (this.lastArrivalMs !== null) {
      const gap = now - this.lastArrivalMs;
      this.gapMaxMs = Math.max(this.gapMaxMs, gap);
      if (gap > 1.5 * this.frameMs) this.counts.gaps_late += 1;
    }
    this.lastArrivalMs = now;
    if (this.decoder.state === "closed") return;
    if (this.decoder.state !== "configured") {
      this.decoder.configure(decoderConfig());
    }
    if (this.decoder.decodeQueueSize > MAX_CODEC_QUEUE) {
      this.counts.codec_dropped += 1;
      return;
    }
    this.decoding.push({ sequence: packet.sequence, at: performance.now() });
    this.decoder.decode(new EncodedAudioChunk({
      type: "key", timestamp: (packet.timestamp * 1e6) / SAMPLE_RATE, data: packet.opus,
    }));
  }

  /** A decoded frame (AudioData) to the playout worklet. */
  play(audio) {
    const { sequence, at } = this.decoding.shift() ?? {};
    this.took(this.timing.decode, at);
    const frames = audio.numberOfFrames;
    const left = new Float32Array(frames);
    audio.copyTo(left, { planeIndex: 0, format: "f32-planar" });
    let right = null;
    if (audio.numberOfChannels > 1) {
      right = new Float32Array(frames);
      audio.copyTo(right, { planeIndex: 1, format: "f32-planar" });
    }
    audio.close();
    if (sequence === undefined) return;
    this.playoutPort.postMessage({ sequence, left, right },
      right ? [left.buffer, right.buffer] : [left.buffer]);
  }

  /** Count the time since `at` (ms) in `timing` ([sum, count]). */
  took(timing, at) {
    if (at === undefined) return;
    timing[0] += performance.now() - at;
    timing[1] += 1;
  }

  close() {
    clearInterval(this.timer);
    this.channel.close();
    if (this.encoder.state !== "closed") this.encoder.close();
    if (this.decoder.state !== "closed") this.decoder.close();
  }
}
