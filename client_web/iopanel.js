// The "Input and output" panel and the "Mute me" button: which microphone and how loud
// (input.js), the clip light, the level meters, muting yourself for the room (key M), and
// which output device plays your mix (where the browser can choose).

import { InputChain, canChooseOutput, listDevices } from "./input.js";
import { LevelMeter } from "./meters.js";
import { notify } from "./notices.js";

const CLIP_HOLD_MS = 1500; // the clip light stays on this long after the input reached full scale
const CLIP_LEVEL = 0.99;
const OUTPUT_KEY = "spatialjam.outputDevice";
const BUFFER_KEY = "spatialjam.playoutFrames";
const BUFFER_CHOICES = [1, 2, 3, 4, 6, 8, 12];

export class IoPanel {
  /**
   * @param {(id: string) => HTMLElement} $  the page's elements by id
   * @param {{onMute: () => void}} handlers  `onMute`: the player asked to (un)mute themselves
   */
  constructor($, { onMute }) {
    this.$ = $;
    this.ctx = null;
    this.input = null; // InputChain while in a room
    this.link = null; // the low-latency transport's audio (its playout buffer), if in use
    this.enabled = false;
    this.clipAt = -Infinity;
    this.meters = {
      input: new LevelMeter($("meter-input")),
      left: new LevelMeter($("meter-left")),
      right: new LevelMeter($("meter-right")),
    };
    $("mute-self").addEventListener("click", () => onMute());
    document.addEventListener("keydown", (event) => {
      if (!this.enabled || event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
      const target = event.target;
      if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement
          || target instanceof HTMLSelectElement) return; // typing, not a command
      if (event.key === "m" || event.key === "M") {
        event.preventDefault();
        onMute();
      }
    });
    const gain = $("input-gain");
    gain.addEventListener("input", () => this.setGainDb(Number(gain.value)));
    gain.addEventListener("dblclick", () => this.setGainDb(0));
    $("input-device").addEventListener("change", (event) => {
      this.chooseInput(event.target.value).catch((error) => notify("microphone", error.message));
    });
    $("output-device").addEventListener("change", (event) => {
      this.chooseOutput(event.target.value).catch((error) => notify("output", error.message));
    });
    $("buffer").addEventListener("change", (event) => {
      const value = event.target.value;
      localStorage.setItem(BUFFER_KEY, value);
      this.link?.setPlayoutFrames(value === "auto" ? null : Number(value));
    });
    navigator.mediaDevices?.addEventListener?.("devicechange", () => {
      this.listDevices().catch(() => {});
    });
  }

  /** Open the input on `ctx` (the device chosen last time) and the output chosen last time. */
  async start(ctx) {
    this.ctx = ctx;
    this.input = new InputChain(ctx);
    await this.input.open();
    this.enabled = true;
    this.renderGain();
    this.listDevices().catch(() => {});
    const output = localStorage.getItem(OUTPUT_KEY);
    if (output) this.chooseOutput(output).catch(() => localStorage.removeItem(OUTPUT_KEY));
    if (ctx.state !== "running") this.waitForAGesture();
    return this.input;
  }

  close() {
    this.enabled = false;
    this.link = null;
    this.input?.close();
    this.input = null;
    this.ctx = null;
  }

  setGainDb(db) {
    this.input?.setGainDb(db);
    this.renderGain();
  }

  async chooseInput(deviceId) {
    if (!this.input) return;
    await this.input.open(deviceId);
    await this.listDevices();
  }

  async chooseOutput(deviceId) {
    localStorage.setItem(OUTPUT_KEY, deviceId);
    if (!canChooseOutput() || !this.ctx) return;
    await Promise.all([this.ctx.setSinkId(deviceId), this.$("mix-audio").setSinkId(deviceId)]);
  }

  async listDevices() {
    if (!this.input) return;
    await listDevices(this.$("input-device"), "audioinput", this.input.deviceId);
    if (canChooseOutput()) {
      this.$("output-device-row").hidden = false;
      await listDevices(this.$("output-device"), "audiooutput",
        localStorage.getItem(OUTPUT_KEY) ?? "");
    }
  }

  /**
   * The browser keeps the sound off until the person acts on the page (autoplay policy): after
   * a reload rejoined by itself, the first click or key anywhere starts it.
   */
  waitForAGesture() {
    notify("sound", "Back in the room: click anywhere or press a key to hear it again.");
    const resume = () => {
      this.ctx?.resume();
      this.$("mix-audio").play().catch(() => {});
    };
    document.addEventListener("pointerdown", resume, { once: true });
    document.addEventListener("keydown", resume, { once: true });
  }

  /**
   * The audio connection's transport is known: on the low-latency one (`lowLatency`, its
   * LowLatencyAudio) the buffer can be fixed at a number of the room's frames (`frameMs`);
   * the browser's WebRTC audio keeps its own.
   */
  setTransport(lowLatency, frameMs) {
    this.link = lowLatency;
    const select = this.$("buffer");
    this.$("buffer-row").hidden = !lowLatency;
    this.$("buffer-media-note").hidden = Boolean(lowLatency);
    if (!lowLatency) return;
    const saved = localStorage.getItem(BUFFER_KEY) ?? "auto";
    const options = [["auto", "Auto (adapts)"],
      ...BUFFER_CHOICES.map((n) => [String(n), `${n} × ${frameMs} ms = ${n * frameMs} ms`])];
    select.replaceChildren(...options.map(([value, label]) => {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = label;
      return option;
    }));
    select.value = options.some(([value]) => value === saved) ? saved : "auto";
    lowLatency.setPlayoutFrames(select.value === "auto" ? null : Number(select.value));
  }

  /** Whether you are muted for the room (as `room_state` says): the button and the note. */
  setMuted(muted) {
    const button = this.$("mute-self");
    button.textContent = muted ? "Unmute me" : "Mute me";
    button.setAttribute("aria-pressed", String(muted));
    button.classList.toggle("active", muted);
    this.$("muted-note").hidden = !muted;
  }

  renderGain() {
    if (!this.input) return;
    const slider = this.$("input-gain");
    const db = this.input.gainDb;
    if (document.activeElement !== slider) slider.value = String(db);
    this.$("input-gain-value").textContent = db === 0 ? "0 dB"
      : `${db > 0 ? "+" : "−"}${Math.abs(db).toFixed(1)} dB`;
  }

  /** The meters and the clip light at `now`, from `levels` (AudioAnalysis.meterLevels()). */
  drawMeters(levels, now) {
    if (levels.inputPeak >= CLIP_LEVEL) this.clipAt = now;
    this.$("input-clip").classList.toggle("on", now - this.clipAt < CLIP_HOLD_MS);
    this.meters.input.set(levels.input, now);
    this.meters.left.set(levels.left, now);
    this.meters.right.set(levels.right, now);
  }
}
