// The room's metronome (`set_metronome`, `hear_metronome` in docs/PROTOCOL.md): the room's
// admin sets it for everyone (on, tempo, metre, accent); each player chooses how to hear it
// (centred, from its place on the stage, or not at all), remembered on this browser and sent
// again after every join (the server starts each join centred). The admin also declares the
// room's key here: an AI musician plays in it without listening for it first.

const HEAR_KEY = "spatialjam.hearMetronome";
/** The keys a room may declare, in the server's spelling (`set_metronome`'s `key`). */
const TONICS = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"];
const KEYS = ["major", "minor"].flatMap((mode) => TONICS.map((tonic) => `${tonic} ${mode}`));

export class MetronomePanel {
  /**
   * @param {HTMLElement} root  the panel
   * @param {(message: object) => boolean} send  sends a signaling message
   */
  constructor(root, send) {
    this.send = send;
    this.el = (name) => root.querySelector(`[data-metro='${name}']`);
    this.state = null; // room_state's `metronome`
    this.el("on").addEventListener("change", () => this.set({ on: this.el("on").checked }));
    this.el("bpm").addEventListener("change", () => {
      const bpm = Number(this.el("bpm").value);
      if (bpm >= 30 && bpm <= 300) this.set({ bpm });
    });
    this.el("metre").addEventListener("change", () => {
      this.set({ beats_per_bar: Number(this.el("metre").value) });
    });
    this.el("accent").addEventListener("change", () => {
      this.set({ accent: this.el("accent").checked });
    });
    for (const key of KEYS) this.el("key").add(new Option(key, key));
    this.el("key").addEventListener("change", () => this.set({ key: this.el("key").value }));
    this.el("hear").value = localStorage.getItem(HEAR_KEY) ?? "centre";
    this.el("hear").addEventListener("change", () => {
      localStorage.setItem(HEAR_KEY, this.el("hear").value);
      this.joined();
    });
  }

  /** An admin's change: the others keep their value (the metronome stays on or off). */
  set(changes) {
    this.send({ type: "set_metronome", on: this.state?.on ?? false, ...changes });
  }

  /** After each `joined`: how this player hears it. */
  joined() {
    this.send({ type: "hear_metronome", mode: this.el("hear").value });
  }

  /** The room's metronome (`room_state`), whether joined, whether this player is an admin. */
  update(metronome, joined, admin) {
    this.state = metronome ?? null;
    const m = this.state ?? { on: false, bpm: 100, beats_per_bar: 4, accent: true };
    for (const name of ["on", "bpm", "metre", "accent", "key"]) {
      this.el(name).disabled = !joined || !admin;
    }
    this.el("reason").hidden = admin;
    this.el("on").checked = m.on;
    if (document.activeElement !== this.el("bpm")) this.el("bpm").value = String(m.bpm);
    this.el("metre").value = String(m.beats_per_bar);
    this.el("accent").checked = m.accent;
    this.el("key").value = m.key ?? "";
    const key = m.key ? `in ${m.key}` : "";
    this.el("now").textContent = [m.on ? `♩ = ${m.bpm} · ${m.beats_per_bar} beats a bar` : "off", key]
      .filter(Boolean).join(" · ");
  }
}
