// The Web Audio side: the microphone and the received mix, analysed for meters and tests.
//
// On the media track, playback goes through an <audio> element (see app.js): Chrome only feeds
// a remote WebRTC stream into Web Audio while that stream is attached to a media element. On
// the low-latency transport our playout worklet plays the mix (lowlatency.js) and is analysed
// here as a node.

/** About 0.68 s at 48 kHz: the window `levels()` averages over. */
const ANALYSIS_FFT_SIZE = 32768;
/** About 43 ms at 48 kHz: what the meters show. */
const METER_FFT_SIZE = 2048;
const SILENCE_DB = -120;

/** The microphone as a musician wants it: no speech processing, mono, 48 kHz. */
export const MIC_CONSTRAINTS = {
  audio: {
    echoCancellation: false,
    noiseSuppression: false,
    autoGainControl: false,
    channelCount: 1,
    sampleRate: 48000,
  },
  video: false,
};

export class AudioAnalysis {
  /** @param {AudioContext} ctx */
  constructor(ctx) {
    this.ctx = ctx;
    this.input = this.branch();
    this.left = this.branch();
    this.right = this.branch();
    // A remote WebRTC track arrives as 2 channels when Opus is decoded in stereo; split them
    // without any up/down-mixing ("discrete"), so a mono downlink shows up as silence right.
    this.splitter = new ChannelSplitterNode(ctx, { numberOfOutputs: 2 });
    this.splitter.connect(this.left.node, 0);
    this.splitter.connect(this.right.node, 1);
    this.inputSource = null;
    this.outputSource = null;
  }

  /** A pair of analysers on one signal: a long one for `levels()`, a short one for meters. */
  branch() {
    const node = new GainNode(this.ctx);
    const long = new AnalyserNode(this.ctx, { fftSize: ANALYSIS_FFT_SIZE, smoothingTimeConstant: 0 });
    const short = new AnalyserNode(this.ctx, { fftSize: METER_FFT_SIZE, smoothingTimeConstant: 0 });
    node.connect(long);
    node.connect(short);
    return {
      node, long, short,
      samples: new Float32Array(ANALYSIS_FFT_SIZE),
      meterSamples: new Float32Array(METER_FFT_SIZE),
      spectrum: new Float32Array(ANALYSIS_FFT_SIZE / 2),
    };
  }

  setInput(stream) {
    this.setInputNode(this.ctx.createMediaStreamSource(stream));
  }

  /** What you send, as a node (input.js: after your input gain). */
  setInputNode(node) {
    this.inputSource?.disconnect(this.input.node);
    this.inputSource = node;
    node.connect(this.input.node);
  }

  setOutput(stream) {
    this.setOutputNode(this.ctx.createMediaStreamSource(stream));
  }

  /** The received mix as a Web Audio node (the low-latency transport's playout). */
  setOutputNode(node) {
    try {
      this.outputSource?.disconnect(this.splitter);
    } catch {
      // (already disconnected: the transport that fed it has closed)
    }
    this.outputSource = node;
    node.connect(this.splitter);
  }

  /**
   * RMS levels in dBFS over the last ~0.68 s: received left and right, and the microphone.
   * With `lowHz`/`highHz`, only the power between them counts (from the spectrum, same
   * window for both ears, so their difference is the interaural level difference).
   */
  levels({ lowHz = null, highHz = null } = {}) {
    const measure = lowHz === null ? (b) => this.rmsDb(b) : (b) => this.bandDb(b, lowHz, highHz);
    return {
      left_db: measure(this.left),
      right_db: measure(this.right),
      input_db: measure(this.input),
      window_s: ANALYSIS_FFT_SIZE / this.ctx.sampleRate,
    };
  }

  /** Short-window RMS in dBFS for the meters: {input, left, right}. */
  meterLevels() {
    const rms = (b) => {
      b.short.getFloatTimeDomainData(b.meterSamples);
      return toDb(meanSquare(b.meterSamples));
    };
    const input = rms(this.input);
    return { input, left: rms(this.left), right: rms(this.right),
      inputPeak: peak(this.input.meterSamples) };
  }

  /** The last ~0.68 s of the received mix's left ear, as samples (for tests: timing). */
  receivedLeft() {
    this.left.long.getFloatTimeDomainData(this.left.samples);
    return Array.from(this.left.samples);
  }

  rmsDb(b) {
    b.long.getFloatTimeDomainData(b.samples);
    return toDb(meanSquare(b.samples));
  }

  bandDb(b, lowHz, highHz) {
    b.long.getFloatFrequencyData(b.spectrum);
    const binHz = this.ctx.sampleRate / ANALYSIS_FFT_SIZE;
    let power = 0;
    const first = Math.max(0, Math.ceil(lowHz / binHz));
    const last = Math.min(b.spectrum.length - 1, Math.floor(highHz / binHz));
    for (let k = first; k <= last; k++) power += 10 ** (b.spectrum[k] / 10);
    return toDb(power);
  }
}

function peak(samples) {
  let most = 0;
  for (let i = 0; i < samples.length; i++) most = Math.max(most, Math.abs(samples[i]));
  return most;
}

function meanSquare(samples) {
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  return sum / samples.length;
}

function toDb(power) {
  return power > 0 ? Math.max(SILENCE_DB, 10 * Math.log10(power)) : SILENCE_DB;
}
