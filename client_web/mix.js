// The personal mix: per source gain, mute and reset, for this listener only
// (`mix_override` / `mix_reset` in docs/PROTOCOL.md). Your own row is the self-monitor.
// A room admin also gets a "Remove" button on every other player's row (`kick`).

import { ME_COLOUR, sourceColour } from "./colours.js";

export const MIN_GAIN_DB = -30;
export const MAX_GAIN_DB = 12; // the server caps personal gain at 4 (+12.04 dB)

export function dbToGain(db) {
  return 10 ** (db / 20);
}

/**
 * @typedef {object} PersonalSettings
 * @property {number} gainDb
 * @property {boolean} mute
 * @property {number[]|null} position  override position, or null for the stage's
 */

export class MixPanel {
  /**
   * @param {HTMLElement} list  where the rows go
   * @param {{onGain: (id: string, db: number, final: boolean) => void,
   *          onMute: (id: string, mute: boolean) => void,
   *          onReset: (id: string) => void,
   *          onMonitor: (on: boolean) => void,
   *          onKick: (id: string) => void, openServer: boolean}} handlers  `onKick`: remove
   *   a player (confirmed); `openServer`: no access tokens here (what a removal can keep out)
   */
  constructor(list, handlers) {
    this.list = list;
    this.handlers = handlers;
    this.rows = new Map(); // id -> {row, slider, value, mute, reset, kick}
    this.signature = "";
  }

  /**
   * @param {{id: string, label: string, name: string, isMe: boolean}[]} sources
   * @param {Map<string, PersonalSettings>} personal
   * @param {boolean} monitorOn
   * @param {boolean} canKick  this listener is the room's admin: offer "Remove"
   */
  update(sources, personal, monitorOn, canKick = false) {
    const signature = sources.map((s) => `${s.id}:${s.label}:${s.name}:${s.instrument}:${s.isMe}`)
      .join("|");
    if (signature !== this.signature) this.rebuild(sources);
    this.signature = signature;
    this.list.classList.toggle("can-kick", canKick);
    for (const source of sources) {
      const row = this.rows.get(source.id);
      if (row.kick) row.kick.hidden = !canKick;
      row.row.classList.toggle("self-muted", Boolean(source.muted) && !source.isMe);
      row.who.textContent = source.muted && !source.isMe ? `${row.whoText} · muted` : row.whoText;
      const settings = personal.get(source.id);
      const gainDb = settings?.gainDb ?? 0;
      if (document.activeElement !== row.slider) row.slider.value = String(gainDb);
      row.value.textContent = formatDb(gainDb);
      if (source.isMe) {
        row.mute.textContent = monitorOn ? "On" : "Off";
        row.mute.setAttribute("aria-pressed", String(monitorOn));
        row.mute.classList.toggle("active", monitorOn);
        row.slider.disabled = !monitorOn;
      } else {
        const muted = settings?.mute ?? false;
        row.mute.setAttribute("aria-pressed", String(muted));
        row.mute.classList.toggle("active", muted);
        row.row.classList.toggle("muted", muted);
        row.reset.disabled = !settings;
        row.row.classList.toggle("overridden", Boolean(settings?.position));
      }
    }
  }

  /** Each source's level now (dBFS, by id: `levels`): the bar under its name. */
  setLevels(levels) {
    for (const [id, row] of this.rows) {
      const db = levels[id];
      const amount = db === undefined ? 0 : Math.min(1, Math.max(0, (db + 50) / 50));
      row.activity.style.width = `${(amount * 100).toFixed(0)}%`;
    }
  }

  rebuild(sources) {
    this.list.replaceChildren();
    this.rows.clear();
    for (const source of sources) {
      const row = document.createElement("li");
      row.className = "mix-row";
      row.dataset.source = source.id;
      // Who (their name; "AI musician" for one), what they play beneath, and how loud now.
      const name = document.createElement("span");
      name.className = "mix-name";
      name.style.setProperty("--dot", source.isMe ? ME_COLOUR : sourceColour(source.id));
      const who = document.createElement("span");
      who.className = "mix-who";
      const whoText = source.isMe ? "Myself" : source.ai ? "AI musician" : source.name;
      who.textContent = whoText;
      const what = document.createElement("span");
      what.className = "mix-what";
      what.textContent = source.ai ? source.label.replace(/^AI /, "") : source.instrument;
      const level = document.createElement("span");
      level.className = "mix-level";
      const activity = document.createElement("span");
      level.append(activity);
      name.append(who, what, level);
      name.title = source.instrument ? `${source.name} · ${source.instrument}` : source.name;
      const slider = document.createElement("input");
      slider.type = "range";
      slider.min = String(MIN_GAIN_DB);
      slider.max = String(MAX_GAIN_DB);
      slider.step = "0.5";
      slider.value = "0";
      slider.className = "mix-gain";
      slider.setAttribute("aria-label", `${whoText} gain`);
      const value = document.createElement("output");
      value.className = "mix-value";
      const mute = document.createElement("button");
      mute.type = "button";
      mute.className = "mix-mute";
      mute.textContent = source.isMe ? "Off" : "Mute";
      mute.title = source.isMe ? "Hear yourself through the server" : "Mute in my mix";
      const reset = document.createElement("button");
      reset.type = "button";
      reset.className = "mix-reset";
      reset.textContent = "↺";
      reset.title = "Back to the stage layout (gain, mute, position)";
      const gain = (final) => this.handlers.onGain(source.id, Number(slider.value), final);
      slider.addEventListener("input", () => gain(false));
      slider.addEventListener("change", () => gain(true));
      slider.addEventListener("dblclick", () => {
        slider.value = "0";
        this.handlers.onGain(source.id, 0, true);
      });
      mute.addEventListener("click", () => {
        const pressed = mute.getAttribute("aria-pressed") === "true";
        if (source.isMe) this.handlers.onMonitor(!pressed);
        else this.handlers.onMute(source.id, !pressed);
      });
      reset.addEventListener("click", () => this.handlers.onReset(source.id));
      if (source.isMe) reset.hidden = true;
      row.append(name, slider, value, mute, reset);
      const kick = source.isMe || isAi(source.id) ? null : this.kickButton(source);
      if (kick) row.append(kick);
      this.list.append(row);
      this.rows.set(source.id, { row, slider, value, mute, reset, kick, who, whoText, activity });
    }
  }

  /** "Remove": takes a player out of the room (after a confirm), for the room's admin. */
  kickButton(source) {
    const who = source.name || source.label;
    const kick = document.createElement("button");
    kick.type = "button";
    kick.className = "mix-kick";
    kick.textContent = "Remove";
    // Without access tokens nobody has an identity: a removed player keeps out of their seat,
    // and out of the room only while it is locked (they could come back as a newcomer).
    const after = this.handlers.openServer
      ? "They cannot take their seat back; lock the room to keep them from joining again as a "
        + "newcomer."
      : "They may not come back while the room is open.";
    kick.title = `Remove ${who} from the room. ${after}`;
    kick.hidden = true;
    kick.addEventListener("click", () => {
      if (confirm(`Remove ${who} from the room? ${after}`)) {
        this.handlers.onKick(source.id);
      }
    });
    return kick;
  }
}

/** AI musicians and the metronome are sources, not players: `kick` does not take them out. */
function isAi(id) {
  return id.startsWith("ai-") || id === "metronome";
}

function formatDb(db) {
  if (db === 0) return "0 dB";
  return `${db > 0 ? "+" : "−"}${Math.abs(db).toFixed(1)} dB`;
}
