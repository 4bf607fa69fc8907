// Your input: which microphone (or audio interface input), how loud, and whether the room
// hears you. One chain for every transport and every device change:
//
//   microphone -> [input gain] -> output (a node: the low-latency capture worklet, the meter)
//                                \-> stream (a MediaStream: the WebRTC media track)
//
// The stream's track stays the same when the device changes, so nothing is renegotiated.
// "Mute myself" is the server's (`mute_self`): the room sees it and nobody hears you, not
// even through a recording; this chain does not silence itself, so your meter still moves.

import { MIC_CONSTRAINTS } from "./audio.js";

export const MIN_INPUT_GAIN_DB = -30;
export const MAX_INPUT_GAIN_DB = 12;
const DEVICE_KEY = "spatialjam.inputDevice";
const GAIN_KEY = "spatialjam.inputGainDb";

/** The input gain last chosen on this browser (dB), or 0. */
export function savedInputGainDb() {
  const db = Number(localStorage.getItem(GAIN_KEY));
  return Number.isFinite(db) ? Math.min(MAX_INPUT_GAIN_DB, Math.max(MIN_INPUT_GAIN_DB, db)) : 0;
}

export class InputChain {
  /** @param {AudioContext} ctx */
  constructor(ctx) {
    this.ctx = ctx;
    this.mic = null; // the getUserMedia stream
    this.source = null;
    this.gainDb = savedInputGainDb();
    this.output = new GainNode(ctx, { gain: 10 ** (this.gainDb / 20) });
    const uplink = new MediaStreamAudioDestinationNode(ctx, { channelCount: 1 });
    this.output.connect(uplink);
    /** What the WebRTC media track sends. */
    this.stream = uplink.stream;
    /** The device in use (its deviceId), "" for the browser's default. */
    this.deviceId = "";
  }

  /**
   * Open the microphone: `deviceId`, or the one chosen last time on this browser, or the
   * default (a remembered device that is gone falls back to the default).
   */
  async open(deviceId = localStorage.getItem(DEVICE_KEY) ?? "") {
    let mic;
    try {
      mic = await navigator.mediaDevices.getUserMedia(constraintsFor(deviceId));
    } catch (error) {
      if (!deviceId || !["OverconstrainedError", "NotFoundError"].includes(error.name)) throw error;
      deviceId = "";
      mic = await navigator.mediaDevices.getUserMedia(constraintsFor(""));
    }
    this.source?.disconnect();
    this.mic?.getTracks().forEach((t) => t.stop());
    this.mic = mic;
    this.source = this.ctx.createMediaStreamSource(mic);
    this.source.connect(this.output);
    this.deviceId = mic.getAudioTracks()[0]?.getSettings().deviceId ?? deviceId;
    if (deviceId) localStorage.setItem(DEVICE_KEY, deviceId);
    return this.deviceId;
  }

  /** Input gain in dB (remembered on this browser); glides over 10 ms, no click. */
  setGainDb(db) {
    this.gainDb = Math.min(MAX_INPUT_GAIN_DB, Math.max(MIN_INPUT_GAIN_DB, db));
    this.output.gain.setTargetAtTime(10 ** (this.gainDb / 20), this.ctx.currentTime, 0.01);
    localStorage.setItem(GAIN_KEY, String(this.gainDb));
  }

  close() {
    this.source?.disconnect();
    this.mic?.getTracks().forEach((t) => t.stop());
    this.stream.getTracks().forEach((t) => t.stop());
    this.mic = null;
  }
}

function constraintsFor(deviceId) {
  return deviceId
    ? { ...MIC_CONSTRAINTS, audio: { ...MIC_CONSTRAINTS.audio, deviceId: { exact: deviceId } } }
    : MIC_CONSTRAINTS;
}

/**
 * Fill `select` with the devices of `kind` ("audioinput" or "audiooutput"), `current` chosen.
 * Without labels (no microphone permission yet) devices read "Microphone 1", "Output 1"….
 */
export async function listDevices(select, kind, current) {
  const devices = (await navigator.mediaDevices.enumerateDevices())
    .filter((d) => d.kind === kind && d.deviceId !== "communications");
  const word = kind === "audioinput" ? "Microphone" : "Output";
  const options = devices.map((d, k) => {
    const option = document.createElement("option");
    option.value = d.deviceId === "default" ? "" : d.deviceId;
    option.textContent = d.label || `${word} ${k + 1}`;
    return option;
  });
  if (!options.some((o) => o.value === "")) {
    const option = document.createElement("option");
    option.value = "";
    option.textContent = "System default";
    options.unshift(option);
  }
  select.replaceChildren(...options);
  select.value = options.some((o) => o.value === current) ? current : "";
  return devices.length;
}

/** Whether this browser can send the mix to an output device of our choice. */
export function canChooseOutput() {
  return typeof AudioContext !== "undefined" && "setSinkId" in AudioContext.prototype
    && "setSinkId" in HTMLMediaElement.prototype;
}
