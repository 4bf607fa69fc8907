// The AI musician panel: add one to the room, change how it plays, take it out, download what
// it played. It is a source like any other: its marker is on the stage (drag it), and it is in
// "My mix" (its gain and mute are yours). Messages: `ai_add`, `ai_update`, `ai_remove`
// (docs/PROTOCOL.md): the room admin's (grant `admin`); others see the controls disabled, and why.

import { pageToken, withToken } from "./access.js";

const SETTINGS = ["role", "instrument", "style", "temperature", "bpm", "volume", "metronome"];
/** What `ai_hears.waiting` means, in words. */
const WAITING = {
  beat: "Listening for the beat: it plays once it has found it.",
  key: "Listening for the key: it plays no note before it has heard it.",
  players: "Resting while you rest.",
};

export class AiPanel {
  /**
   * @param {HTMLElement} root  the panel
   * @param {(message: object) => void} send  sends a signaling message
   */
  constructor(root, send) {
    this.send = send;
    this.el = (name) => root.querySelector(`[data-ai='${name}']`);
    this.ai = null; // the AI's source id while the room has one
    this.hears = null; // its last `ai_hears`
    this.room = "";
    this.el("add").addEventListener("click", () => this.send({ type: "ai_add", ...this.settings() }));
    this.el("remove").addEventListener("click", () => {
      if (this.ai) this.send({ type: "ai_remove", ai: this.ai });
    });
    for (const name of SETTINGS) {
      this.el(name).addEventListener("change", () => {
        if (this.ai) this.send({ type: "ai_update", ai: this.ai, [name]: this.settings()[name] });
      });
    }
    this.el("temperature").addEventListener("input", () => this.renderValues());
    this.el("volume").addEventListener("input", () => this.renderValues());
    this.renderValues();
  }

  /** The settings as the controls show them. */
  settings() {
    const bpm = Number(this.el("bpm").value);
    return {
      role: this.el("role").value,
      instrument: this.el("instrument").value,
      style: this.el("style").value,
      temperature: Number(this.el("temperature").value),
      bpm: Number.isFinite(bpm) && bpm >= 40 && bpm <= 240 ? bpm : 0,
      volume: Number(this.el("volume").value),
      metronome: this.el("metronome").checked,
    };
  }

  /**
   * The room changed (room_state): is there an AI, and which; `allowed`: this listener may
   * add, change and remove it (the `admin` grant).
   */
  update(room, members, joined, allowed = true) {
    this.room = room;
    this.ai = members.find((m) => m.id.startsWith("ai-"))?.id ?? null;
    this.el("add").disabled = !joined || !allowed || this.ai !== null;
    this.el("remove").disabled = !joined || !allowed || this.ai === null;
    for (const name of SETTINGS) this.el(name).disabled = !allowed;
    this.el("reason").hidden = allowed;
    const midi = this.el("midi");
    midi.href = withToken(`/ai/${encodeURIComponent(room)}.mid`, pageToken());
    midi.hidden = this.ai === null;
    if (!this.ai) this.hears = null;
    this.renderState();
  }

  /** What the AI hears now (`ai_hears`): its tempo, the key and the chord. */
  onHears(message) {
    this.hears = message;
    this.renderState();
  }

  renderState() {
    const h = this.hears;
    const heard = h ? [h.key, h.chord && `chord ${h.chord}`, h.bpm && `${h.bpm} bpm`,
      h.style && `plays ${h.style} style`].filter(Boolean).join(" · ") : "";
    const waiting = h && WAITING[h.waiting];
    const lead = h && h.lead_ms ? ` It decides each note ${Math.round(h.lead_ms)} ms before it sounds` : "";
    const ahead = h?.arrives_ms ?? null;
    const arrives = !lead || ahead === null ? ""
      : ahead >= 0 ? `; its notes reach the room ${Math.round(ahead)} ms early`
        : `; its notes reach the room ${Math.round(-ahead)} ms late`;
    const late = lead && h.late ? ` (${h.late} came too late and were dropped)` : "";
    const plan = h && h.playing ? ` Playing ${h.playing}${h.coming ? `, next beat ${h.coming}` : ""}.` : "";
    this.el("state").textContent = !this.ai ? "No AI musician in this room."
      : (waiting ? `${waiting} ` : "")
        + (heard ? `Hears ${heard}.${plan}${lead}${arrives}${late}${lead ? "." : ""} Drag its marker on the stage to move it.`
          : "Drag its marker on the stage to move it.");
  }

  renderValues() {
    this.el("temperature-value").textContent = Number(this.el("temperature").value).toFixed(1);
    this.el("volume-value").textContent = `${Math.round(100 * Number(this.el("volume").value))} %`;
  }
}
