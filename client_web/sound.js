// The Sound panel: how you hear your mix and how the room sounds (docs/PROTOCOL.md,
// `set_rendering`, `hrtf_upload`, `set_room_acoustics`).
//
// For you alone: the HRTF set (MIT KEMAR, the spherical head with its radius, or your own SOFA
// file, uploaded over the signaling socket as binary frames), the room's acoustics on or off,
// and the reference rendering (plain stereo panning, no HRTF) for A/B comparison. The server
// answers each choice with `rendering`; the panel shows what it says. Your choice lives with
// the connection on the server: after a rejoin the panel sends it again.
// For everyone (the `admin` grant): the room's preset and its wet/dry balance.

/** Largest file the server takes (signaling/limits.py: MAX_HRTF_UPLOAD_BYTES). */
export const MAX_UPLOAD_BYTES = 32 * 1024 * 1024;
/** Each binary frame of an upload (the server takes up to 256 KiB). */
export const CHUNK_BYTES = 256 * 1024;
/** While more than this waits in the socket's buffer, the upload pauses. */
const HIGH_WATER_BYTES = 1024 * 1024;
const DEFAULT_RADIUS_M = 0.0875;

const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class SoundPanel {
  /**
   * @param {HTMLElement} root  the panel
   * @param {{send: (message: object) => boolean, sendBinary: (data: ArrayBuffer) => boolean,
   *          bufferedAmount: () => number, newId: () => number}} io  the signaling connection
   */
  constructor(root, io) {
    this.io = io;
    this.el = (name) => root.querySelector(`[data-sound='${name}']`);
    this.rendering = null; // the server's last `rendering`
    this.wanted = null; // what this listener chose (set_rendering fields), sent again on rejoin
    this.uploadId = null; // the `hrtf_upload` in progress
    this.requestIds = new Set(); // set_rendering / set_room_acoustics awaiting their answer
    this.uploaded = null; // {digest, name} of this listener's last upload

    this.el("hrtf").addEventListener("change", () => this.onHrtfChoice());
    this.el("radius").addEventListener("input", () => this.renderRadius());
    this.el("radius").addEventListener("change", () => this.choose({
      hrtf: "spherical-head", head_radius_m: Number(this.el("radius").value),
    }));
    this.el("file").addEventListener("change", () => {
      const file = this.el("file").files[0];
      if (file) this.upload(file).catch((error) => this.refuse(error.message));
    });
    this.el("acoustics").addEventListener("change", () => this.choose({
      acoustics: this.el("acoustics").checked,
    }));
    this.el("reference").addEventListener("change", () => this.choose({
      reference: this.el("reference").checked,
    }));
    this.el("preset").addEventListener("change", () => this.setRoom());
    this.el("wet").addEventListener("input", () => this.renderWet());
    this.el("wet").addEventListener("change", () => this.setRoom());
    this.renderRadius();
    this.renderWet();
  }

  // -- this listener ----------------------------------------------------------------------------

  onHrtfChoice() {
    const choice = this.el("hrtf").value;
    this.el("radius-row").hidden = choice !== "spherical-head";
    this.el("file-row").hidden = choice !== "sofa";
    if (choice === "kemar") this.choose({ hrtf: "kemar" });
    else if (choice === "spherical-head") {
      this.choose({ hrtf: "spherical-head", head_radius_m: Number(this.el("radius").value) });
    } else if (this.uploaded) this.choose({ hrtf: `sofa:${this.uploaded.digest}` });
    else this.el("file").click(); // nothing uploaded yet: pick a file
  }

  /** Send `set_rendering` with `fields`; remember them to send again after a rejoin. */
  choose(fields) {
    this.refuse("");
    const hrtf = fields.hrtf ? { hrtf: fields.hrtf, head_radius_m: fields.head_radius_m } : {};
    this.wanted = { ...this.wanted, ...fields, ...hrtf };
    if (this.wanted.head_radius_m === undefined) delete this.wanted.head_radius_m;
    const id = this.io.newId();
    this.requestIds.add(id);
    this.io.send({ type: "set_rendering", id, ...fields });
  }

  /** After every `joined`: a rejoin starts from the server's defaults; ask for ours again. */
  joined() {
    if (this.wanted) {
      const id = this.io.newId();
      this.requestIds.add(id);
      this.io.send({ type: "set_rendering", id, ...this.wanted });
    }
  }

  /** Send `file` as this listener's HRTF set; the answer arrives as a message. */
  async upload(file) {
    this.refuse("");
    if (file.size > MAX_UPLOAD_BYTES) {
      this.refuse(`"${file.name}" is ${mib(file.size)}: the server takes SOFA files of at most `
        + `${mib(MAX_UPLOAD_BYTES)}. Choose a smaller file (one set of responses, not a `
        + "collection).");
      return;
    }
    if (file.size === 0) {
      this.refuse(`"${file.name}" is empty: choose a SOFA file (.sofa).`);
      return;
    }
    const id = this.io.newId();
    this.uploadId = id;
    const name = file.name.slice(0, 120).trim() || "upload.sofa";
    if (!this.io.send({ type: "hrtf_upload", id, name, size: file.size })) {
      this.refuse("Not connected: the file could not be sent.");
      this.uploadId = null;
      return;
    }
    this.showUpload(`Sending "${name}"…`, 0);
    for (let offset = 0; offset < file.size; offset += CHUNK_BYTES) {
      const chunk = await file.slice(offset, offset + CHUNK_BYTES).arrayBuffer();
      while (this.uploadId === id && this.io.bufferedAmount() > HIGH_WATER_BYTES) await sleep(20);
      if (this.uploadId !== id) return; // refused or ended meanwhile: the rest is not wanted
      if (!this.io.sendBinary(chunk)) {
        this.endUpload();
        this.refuse("The connection dropped during the upload: try again once it is back.");
        return;
      }
      this.showUpload(`Sending "${name}"…`, (offset + chunk.byteLength) / file.size);
    }
    if (this.uploadId === id) this.showUpload(`Checking "${name}"…`, 1);
  }

  showUpload(text, fraction) {
    const progress = this.el("progress");
    progress.hidden = false;
    progress.value = fraction;
    this.el("upload-state").textContent = text;
  }

  endUpload(text = "") {
    this.uploadId = null;
    this.el("progress").hidden = true;
    this.el("upload-state").textContent = text;
    this.el("file").value = "";
  }

  /** Show why the server (or this page) refused, in its words; "" clears it. */
  refuse(text) {
    this.el("refusal").textContent = text;
  }

  /**
   * A server message; returns true when it was this panel's (an `error` answering one of its
   * messages is shown here, not as a notice).
   */
  onMessage(message) {
    if (message.type === "rendering") {
      this.requestIds.delete(message.id);
      this.rendering = message;
      this.render();
      return true;
    }
    if (message.type === "hrtf_uploaded" && message.id === this.uploadId) {
      this.uploaded = { digest: message.digest, name: message.name };
      this.wanted = { ...this.wanted, hrtf: `sofa:${message.digest}` };
      delete this.wanted.head_radius_m;
      this.endUpload(`"${message.name}" taken: ${message.directions} directions, `
        + `${message.taps} taps at 48 kHz.`);
      return true;
    }
    if (message.type !== "error") return false;
    if (message.id !== undefined && message.id === this.uploadId) {
      this.endUpload();
      this.refuse(`Your file was refused: ${message.message}`);
      this.render(); // back to the set the server still uses
      return true;
    }
    if (this.requestIds.delete(message.id)) {
      if (message.code === "unknown_hrtf") this.uploaded = null;
      this.refuse(message.message);
      this.render();
      return true;
    }
    return false;
  }

  // -- the room (admins) --------------------------------------------------------------------------

  setRoom() {
    const preset = this.el("preset").value;
    const message = preset === "off" ? { type: "set_room_acoustics", preset }
      : { type: "set_room_acoustics", preset, wet: Number(this.el("wet").value) };
    const id = this.io.newId();
    this.requestIds.add(id);
    this.io.send({ ...message, id });
  }

  /**
   * The room's state: its `acoustics` (or null), whether we are in it and may set them.
   * @param {{name: string, wet: number}|null} acoustics
   */
  update(acoustics, joined, allowed) {
    const preset = this.el("preset");
    const wet = this.el("wet");
    if (document.activeElement !== preset) preset.value = acoustics ? acoustics.name : "off";
    if (document.activeElement !== wet && acoustics) wet.value = String(acoustics.wet);
    preset.disabled = !joined || !allowed;
    wet.disabled = !joined || !allowed || !acoustics;
    this.el("room-reason").hidden = allowed;
    this.el("room-now").textContent = acoustics
      ? `${acoustics.name}: ${acoustics.dims_m.join(" × ")} m, reverberation ${acoustics.rt60_s} s`
      : "dry (no room acoustics)";
    this.renderWet();
  }

  // -- drawing -------------------------------------------------------------------------------------

  render() {
    const r = this.rendering;
    if (!r) return;
    const choice = r.hrtf.startsWith("sofa:") ? "sofa" : r.hrtf;
    const select = this.el("hrtf");
    if (this.uploadId === null) select.value = choice;
    this.el("radius-row").hidden = select.value !== "spherical-head";
    this.el("file-row").hidden = select.value !== "sofa";
    if (r.head_radius_m !== null && document.activeElement !== this.el("radius")) {
      this.el("radius").value = String(r.head_radius_m);
    }
    this.el("acoustics").checked = r.acoustics;
    this.el("reference").checked = r.reference;
    this.el("now").textContent = r.reference ? "Reference: stereo panning, no HRTF"
      : `Hearing through ${r.hrtf_name}`;
    this.renderRadius();
  }

  renderRadius() {
    const radius = Number(this.el("radius").value) || DEFAULT_RADIUS_M;
    this.el("radius-value").textContent = `${(100 * radius).toFixed(2)} cm`;
  }

  renderWet() {
    this.el("wet-value").textContent = `${Math.round(100 * Number(this.el("wet").value))} % wet`;
  }
}
