// The recording panel: the room's admin starts and stops a session recording (each member's
// own microphone to its own FLAC file, the AI's notes as MIDI, the stage over time); every
// member sees whether the room is being recorded and downloads finished recordings.
// Messages: `start_recording`, `stop_recording`, `list_recordings` (docs/PROTOCOL.md).

import { pageToken, withToken } from "./access.js";

export class RecordingPanel {
  /**
   * @param {HTMLElement} root  the panel
   * @param {(message: object) => void} send  sends a signaling message
   */
  constructor(root, send) {
    this.send = send;
    this.el = (name) => root.querySelector(`[data-rec='${name}']`);
    this.active = null; // room_state's `recording` while the room is recorded
    this.el("toggle").addEventListener("click", () => {
      const mixdown = this.el("mixdown").value;
      this.send(this.active ? { type: "stop_recording" }
        : mixdown ? { type: "start_recording", binaural_of: mixdown }
          : { type: "start_recording" });
    });
  }

  /** The players whose binaural mix may be recorded too (a mixdown): the room's humans. */
  setMembers(members) {
    const select = this.el("mixdown");
    const chosen = select.value;
    const options = [["", "nobody (each player's own track only)"],
      ...members.filter((m) => !m.ai).map((m) => [m.id, `${m.name}'s mix`])];
    if (options.map(([id]) => id).join() === [...select.options].map((o) => o.value).join()) return;
    select.replaceChildren(...options.map(([id, label]) => {
      const option = document.createElement("option");
      option.value = id;
      option.textContent = label;
      return option;
    }));
    select.value = options.some(([id]) => id === chosen) ? chosen : "";
  }

  /** Ask for the room's finished recordings (after joining, and when one stops). */
  refresh() {
    this.send({ type: "list_recordings" });
  }

  /** The room changed: `recording` from room_state; `allowed`: the `admin` grant. */
  update(recording, joined, allowed) {
    const stopped = this.active && !recording;
    this.active = recording ?? null;
    const toggle = this.el("toggle");
    toggle.textContent = this.active ? "Stop" : "Record";
    toggle.disabled = !joined || !allowed;
    this.el("mixdown").disabled = Boolean(this.active) || !allowed;
    this.el("reason").hidden = allowed;
    this.el("state").textContent = this.active
      ? `Recording since ${new Date(this.active.started_at * 1000).toLocaleTimeString()}.`
      : "Not recording.";
    if (stopped) this.refresh();
  }

  /** `recordings` (the list); `recording` (a start's or a stop's answer) needs nothing: the
   * `room_state` that follows it shows the change. */
  onMessage(message) {
    if (message.type !== "recordings") return;
    const list = this.el("list");
    list.replaceChildren(...message.recordings.map((rec) => {
      const item = document.createElement("li");
      const when = new Date(rec.started_at * 1000).toLocaleString();
      const dropped = rec.dropped_frames ? `, ${rec.dropped_frames} frames lost` : "";
      item.append(`${when} · ${rec.duration_s.toFixed(1)} s · ${rec.status}${dropped}`);
      for (const file of rec.files) {
        const link = document.createElement("a");
        link.href = withToken(file.url, pageToken());
        link.download = file.name;
        link.textContent = file.name;
        item.append(" ", link);
      }
      return item;
    }));
    this.el("none").hidden = message.recordings.length > 0;
  }
}
