// The room's frame (`set_frame`, `frame_changed` in docs/PROTOCOL.md): the room's admin sets
// it for everyone; every member's audio then reconnects at it (app.js, on `frame_changed`).

export class FramePanel {
  /**
   * @param {HTMLElement} root  the panel
   * @param {(message: object) => boolean} send  sends a signaling message
   */
  constructor(root, send) {
    this.el = (name) => root.querySelector(`[data-frame='${name}']`);
    this.frameMs = null; // the room's, as `room_state` says
    this.el("choice").addEventListener("change", () => {
      const frameMs = Number(this.el("choice").value);
      if (frameMs !== this.frameMs) send({ type: "set_frame", frame_ms: frameMs });
    });
  }

  /** The room's frame (ms), whether joined, whether this player is an admin. */
  update(frameMs, joined, admin) {
    this.frameMs = frameMs;
    this.el("choice").disabled = !joined || !admin;
    this.el("reason").hidden = admin;
    if (document.activeElement !== this.el("choice")) this.el("choice").value = String(frameMs);
    this.el("now").textContent = `${frameMs} ms`;
  }
}
