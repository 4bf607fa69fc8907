// The stage seen from above, on a canvas.
//
// Room coordinates follow SOFA (docs/PROTOCOL.md): x ahead, y to the left, z up, metres; yaw 0°
// faces +x and positive yaw turns left. On screen, +x (ahead) is UP and +y (left) is LEFT:
//   screen_x = centre - y · scale,   screen_y = centre - x · scale.

import { ME_COLOUR, sourceColour } from "./colours.js";

export const VIEW_HALF_M = 6;
const MARGIN_M = 0.6;
const SNAP_M = 0.05;
const MARKER_RADIUS_PX = 15;
const HIT_RADIUS_PX = 20;
const WHEEL_STEP_DEG = 5;
/** Keyboard steps: arrows move the selected source, Shift+arrows raise it and turn it. */
export const KEY_MOVE_M = 0.25;
export const KEY_HEIGHT_M = 0.1;
export const KEY_FACING_DEG = 15;
/** The activity ring shows levels from here (dBFS) up to 0. */
const ACTIVITY_FLOOR_DB = -50;
const MUTED_COLOUR = "#ff6b6b";

const COLOURS = {
  background: "#11151c",
  grid: "#1f2631",
  gridMajor: "#2c3644",
  axis: "#3d4b5e",
  text: "#8fa1b7",
  label: "#e7edf5",
  selected: "#ffffff",
};

/**
 * @typedef {object} StageSource
 * @property {string} id
 * @property {string} label  the stage's label (the instrument, or the name when none)
 * @property {string} name  who plays it (an AI musician's is "AI")
 * @property {string} instrument
 * @property {boolean} muted  they muted themselves: nobody hears them
 * @property {boolean} ai  an AI musician
 * @property {number|null} level  how loud it is now (dBFS, `levels`), null before any
 * @property {number[]} position  stage position [x, y, z] (m)
 * @property {number} yawDeg  the source's facing on the stage
 * @property {number[]|null} personal  this listener's override position, if any
 * @property {boolean} isMe
 */

export class StageView {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{onDrag: (id: string, xy: number[], final: boolean) => void,
   *          onSelect: (id: string|null) => void, onTurnHead: (deltaDeg: number) => void,
   *          onNudge: (id: string, dxy: number[]) => void, onRaise: (dz: number) => void,
   *          onTurn: (deltaDeg: number) => void}} handlers  from the keyboard (the stage has
   *   focus): `onNudge` moves a source by [dx, dy] m, `onRaise` and `onTurn` change the
   *   selected one's height and facing
   */
  constructor(canvas, handlers) {
    this.canvas = canvas;
    this.handlers = handlers;
    this.sources = [];
    this.selected = null;
    this.personalMode = false;
    this.headYawDeg = 0;
    this.drag = null; // {id, offsetPx: {x, y}, last: [x, y]}
    /** What the last draw wrote under each marker: [{id, name, detail}] (for tests). */
    this.drawnLabels = [];
    this.sizePx = 0;
    new ResizeObserver(() => this.resize()).observe(canvas);
    canvas.addEventListener("pointerdown", (e) => this.pointerDown(e));
    canvas.addEventListener("pointermove", (e) => this.pointerMove(e));
    canvas.addEventListener("pointerup", (e) => this.pointerUp(e));
    canvas.addEventListener("pointercancel", (e) => this.pointerUp(e));
    canvas.addEventListener("keydown", (e) => this.key(e));
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.handlers.onTurnHead(e.deltaY > 0 ? -WHEEL_STEP_DEG : WHEEL_STEP_DEG);
    }, { passive: false });
    this.resize();
  }

  /** Each source's level now (dBFS, by id: `levels`); redraws the activity rings. */
  setLevels(levels) {
    for (const source of this.sources) source.level = levels[source.id] ?? null;
    this.draw();
  }

  /** New data to show; redraws. */
  update({ sources, selected, personalMode, headYawDeg }) {
    this.sources = sources;
    this.selected = selected;
    this.personalMode = personalMode;
    this.headYawDeg = headYawDeg;
    this.draw();
  }

  // coordinates ------------------------------------------------------------------------

  get scale() {
    return this.sizePx / 2 / (VIEW_HALF_M + MARGIN_M);
  }

  /** Room [x, y] → canvas CSS pixels. */
  toCanvas([x, y]) {
    const c = this.sizePx / 2;
    return { x: c - y * this.scale, y: c - x * this.scale };
  }

  /** Canvas CSS pixels → room [x, y], snapped to the grid step and kept in view. */
  toRoom(px, py) {
    const c = this.sizePx / 2;
    const snap = (v) => Math.round(Math.min(VIEW_HALF_M, Math.max(-VIEW_HALF_M, v)) / SNAP_M) * SNAP_M;
    return [snap((c - py) / this.scale) + 0, snap((c - px) / this.scale) + 0];
  }

  /** Room [x, y] → viewport pixels (what mouse events use). */
  toViewport(xy) {
    const rect = this.canvas.getBoundingClientRect();
    const p = this.toCanvas(xy);
    return { x: rect.left + p.x, y: rect.top + p.y };
  }

  /** Where a source's marker is drawn (the one a drag would pick up now), in room [x, y]. */
  markerPosition(source) {
    return this.dragsPersonal(source) && source.personal ? source.personal : source.position;
  }

  dragsPersonal(source) {
    return this.personalMode && !source.isMe;
  }

  // input ------------------------------------------------------------------------------

  /**
   * The stage from the keyboard, while it has focus: N selects the next source (Shift+N the
   * one before), Escape none; arrows move the selected one a quarter metre (up is ahead, left
   * is left, as drawn); Shift+up/down raise and lower it, Shift+left/right turn it.
   */
  key(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const arrows = { ArrowUp: [1, 0], ArrowDown: [-1, 0], ArrowLeft: [0, 1], ArrowRight: [0, -1] };
    const arrow = arrows[event.key];
    if (event.key === "n" || event.key === "N") {
      this.selectNext(event.shiftKey ? -1 : 1);
    } else if (event.key === "Escape") {
      this.handlers.onSelect(null);
    } else if (arrow && this.selected) {
      if (!event.shiftKey) {
        this.handlers.onNudge(this.selected, [arrow[0] * KEY_MOVE_M, arrow[1] * KEY_MOVE_M]);
      } else if (arrow[0]) {
        this.handlers.onRaise(arrow[0] * KEY_HEIGHT_M);
      } else {
        this.handlers.onTurn(arrow[1] * KEY_FACING_DEG);
      }
    } else if (arrow) {
      this.selectNext(1); // nothing selected yet: the first arrow selects
    } else {
      return;
    }
    event.preventDefault(); // (and the head does not turn: head.js leaves handled keys alone)
  }

  /** Select the source `step` places after the selected one, in the stage's order. */
  selectNext(step) {
    const ids = this.sources.map((s) => s.id);
    if (!ids.length) return;
    const at = ids.indexOf(this.selected);
    const next = at < 0 ? (step > 0 ? 0 : ids.length - 1) : (at + step + ids.length) % ids.length;
    this.handlers.onSelect(ids[next]);
  }

  pointerDown(event) {
    const p = this.eventPoint(event);
    const hit = this.hitTest(p);
    this.handlers.onSelect(hit ? hit.id : null);
    if (!hit) return;
    const at = this.toCanvas(this.markerPosition(hit));
    this.drag = { id: hit.id, offset: { x: p.x - at.x, y: p.y - at.y }, last: null };
    this.canvas.setPointerCapture(event.pointerId);
    this.canvas.classList.add("dragging");
  }

  pointerMove(event) {
    const p = this.eventPoint(event);
    if (!this.drag) {
      this.canvas.classList.toggle("over-marker", Boolean(this.hitTest(p)));
      return;
    }
    const xy = this.toRoom(p.x - this.drag.offset.x, p.y - this.drag.offset.y);
    if (this.drag.last && xy[0] === this.drag.last[0] && xy[1] === this.drag.last[1]) return;
    this.drag.last = xy;
    this.handlers.onDrag(this.drag.id, xy, false);
  }

  pointerUp(event) {
    if (!this.drag) return;
    const { id, last } = this.drag;
    this.drag = null;
    this.canvas.classList.remove("dragging");
    if (this.canvas.hasPointerCapture(event.pointerId)) {
      this.canvas.releasePointerCapture(event.pointerId);
    }
    if (last) this.handlers.onDrag(id, last, true);
  }

  eventPoint(event) {
    const rect = this.canvas.getBoundingClientRect();
    return { x: event.clientX - rect.left, y: event.clientY - rect.top };
  }

  hitTest(p) {
    let best = null;
    let bestDistance = HIT_RADIUS_PX;
    for (const source of this.sources) {
      const at = this.toCanvas(this.markerPosition(source));
      const distance = Math.hypot(p.x - at.x, p.y - at.y);
      if (distance <= bestDistance) {
        best = source;
        bestDistance = distance;
      }
    }
    return best;
  }

  // drawing ----------------------------------------------------------------------------

  resize() {
    const rect = this.canvas.getBoundingClientRect();
    this.sizePx = Math.max(1, Math.min(rect.width, rect.height));
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(rect.width * dpr);
    this.canvas.height = Math.round(rect.height * dpr);
    this.draw();
  }

  draw() {
    const g = this.canvas.getContext("2d");
    const dpr = window.devicePixelRatio || 1;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.fillStyle = COLOURS.background;
    g.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.drawGrid(g);
    const ordered = [...this.sources].sort((a, b) => Number(a.isMe) - Number(b.isMe));
    this.drawnLabels = [];
    for (const source of ordered) this.drawSource(g, source);
  }

  drawGrid(g) {
    const size = this.sizePx;
    g.lineWidth = 1;
    for (let m = -VIEW_HALF_M; m <= VIEW_HALF_M; m++) {
      g.strokeStyle = m === 0 ? COLOURS.axis : m % 2 === 0 ? COLOURS.gridMajor : COLOURS.grid;
      const a = this.toCanvas([m, -VIEW_HALF_M]);
      const b = this.toCanvas([m, VIEW_HALF_M]);
      const c = this.toCanvas([-VIEW_HALF_M, m]);
      const d = this.toCanvas([VIEW_HALF_M, m]);
      line(g, a, b);
      line(g, c, d);
    }
    g.fillStyle = COLOURS.text;
    g.font = "11px system-ui, sans-serif";
    g.textAlign = "center";
    g.textBaseline = "middle";
    for (const m of [-4, -2, 2, 4]) {
      const ahead = this.toCanvas([m, 0]);
      g.fillText(`${m} m`, ahead.x + 18, ahead.y);
      const side = this.toCanvas([0, m]);
      g.fillText(`${Math.abs(m)} m`, side.x, side.y + 10);
    }
    g.font = "600 12px system-ui, sans-serif";
    g.fillText("FRONT (+x)", size / 2, 12);
    g.fillText("BACK", size / 2, size - 10);
    g.save();
    g.translate(12, size / 2);
    g.rotate(-Math.PI / 2);
    g.fillText("LEFT (+y)", 0, 0);
    g.restore();
    g.save();
    g.translate(size - 12, size / 2);
    g.rotate(Math.PI / 2);
    g.fillText("RIGHT", 0, 0);
    g.restore();
  }

  drawSource(g, source) {
    const personalFirst = this.dragsPersonal(source);
    if (source.personal) {
      // Two places: the shared stage and this listener's own mix. The one a drag moves now
      // is solid; the other is a ghost, joined by a dashed line.
      const ghost = personalFirst ? source.position : source.personal;
      const solid = personalFirst ? source.personal : source.position;
      g.setLineDash([4, 4]);
      g.strokeStyle = sourceColour(source.id, 0.6);
      line(g, this.toCanvas(ghost), this.toCanvas(solid));
      this.drawMarker(g, source, ghost, true);
      g.setLineDash([]);
      this.drawMarker(g, source, solid, false);
    } else {
      this.drawMarker(g, source, source.position, false);
    }
  }

  drawMarker(g, source, xyz, ghost) {
    const at = this.toCanvas(xyz);
    const r = MARKER_RADIUS_PX;
    const colour = source.isMe ? ME_COLOUR : sourceColour(source.id, 1);
    g.save();
    g.globalAlpha = ghost ? 0.35 : 1;
    if (source.id === this.selected && !ghost) {
      g.strokeStyle = COLOURS.selected;
      g.lineWidth = 2;
      g.beginPath();
      g.arc(at.x, at.y, r + 5, 0, 2 * Math.PI);
      g.stroke();
    }
    if (!ghost) activityRing(g, at, r, source, colour);
    if (source.isMe) {
      this.drawHead(g, at, r, colour);
    } else {
      arrow(g, at, source.yawDeg, r + 10, colour);
      g.fillStyle = colour;
      g.beginPath();
      g.arc(at.x, at.y, r, 0, 2 * Math.PI);
      g.fill();
      g.fillStyle = "#0b0e13";
      g.font = "700 12px system-ui, sans-serif";
      g.textAlign = "center";
      g.textBaseline = "middle";
      g.fillText(initials(source.name || source.label), at.x, at.y + 0.5);
    }
    if (source.muted && !ghost) mutedSlash(g, at, r);
    if (!ghost) {
      g.textAlign = "center";
      g.textBaseline = "top";
      g.font = "600 12px system-ui, sans-serif";
      const name = markerName(source);
      haloText(g, name, at.x, at.y + r + 6, COLOURS.label);
      g.font = "11px system-ui, sans-serif";
      const detail = markerDetail(source, xyz);
      haloText(g, detail, at.x, at.y + r + 21, source.muted ? MUTED_COLOUR : COLOURS.text);
      this.drawnLabels.push({ id: source.id, name, detail });
    }
    g.restore();
  }

  /** Your own marker: a head seen from above, nose pointing where you look. */
  drawHead(g, at, r, colour) {
    const yaw = (this.headYawDeg * Math.PI) / 180;
    // Direction (cos yaw, sin yaw) in the room is (-sin yaw, -cos yaw) on screen.
    const fx = -Math.sin(yaw);
    const fy = -Math.cos(yaw);
    g.fillStyle = colour;
    for (const side of [-1, 1]) {
      // ears: perpendicular to the facing direction
      g.beginPath();
      g.ellipse(at.x + side * -fy * r, at.y + side * fx * r, 4, 4, 0, 0, 2 * Math.PI);
      g.fill();
    }
    g.beginPath();
    g.moveTo(at.x + fx * (r + 9), at.y + fy * (r + 9));
    g.lineTo(at.x - fy * 7 + fx * (r - 3), at.y + fx * 7 + fy * (r - 3));
    g.lineTo(at.x + fy * 7 + fx * (r - 3), at.y - fx * 7 + fy * (r - 3));
    g.closePath();
    g.fill();
    g.beginPath();
    g.arc(at.x, at.y, r, 0, 2 * Math.PI);
    g.fill();
    g.strokeStyle = "#0b0e13";
    g.lineWidth = 2;
    g.beginPath();
    g.arc(at.x, at.y, r - 5, 0, 2 * Math.PI);
    g.stroke();
  }
}

/** Text with a thin outline of the background, readable over grid lines and arrows. */
function haloText(g, text, x, y, colour) {
  g.strokeStyle = COLOURS.background;
  g.lineWidth = 4;
  g.lineJoin = "round";
  g.strokeText(text, x, y);
  g.fillStyle = colour;
  g.fillText(text, x, y);
}

function line(g, a, b) {
  g.beginPath();
  g.moveTo(a.x, a.y);
  g.lineTo(b.x, b.y);
  g.stroke();
}

/** The facing arrow of a source, `length` pixels from its centre. */
function arrow(g, at, yawDeg, length, colour) {
  const yaw = (yawDeg * Math.PI) / 180;
  const fx = -Math.sin(yaw);
  const fy = -Math.cos(yaw);
  const tip = { x: at.x + fx * length, y: at.y + fy * length };
  g.strokeStyle = colour;
  g.fillStyle = colour;
  g.lineWidth = 3;
  line(g, at, tip);
  g.beginPath();
  g.moveTo(tip.x + fx * 4, tip.y + fy * 4);
  g.lineTo(tip.x - fx * 5 - fy * 5, tip.y - fy * 5 + fx * 5);
  g.lineTo(tip.x - fx * 5 + fy * 5, tip.y - fy * 5 - fx * 5);
  g.closePath();
  g.fill();
}

/** The first line under a marker: who plays (yours says so; an AI musician is marked). */
export function markerName(source) {
  const name = source.ai ? "AI musician" : source.name || source.label;
  return source.isMe ? `${name} (you)` : name;
}

/** The second line: what they play, whether they muted themselves, and the height. */
export function markerDetail(source, xyz) {
  const instrument = source.ai ? source.label.replace(/^AI /, "") : source.instrument;
  const parts = [instrument, source.muted ? "muted" : "", `↑ ${xyz[2].toFixed(1)} m`];
  return parts.filter(Boolean).join(" · ");
}

/** A ring around a marker that swells with its level: who is playing now. */
function activityRing(g, at, r, source, colour) {
  if (source.level === null || source.level === undefined || source.muted) return;
  const amount = Math.min(1, Math.max(0, (source.level - ACTIVITY_FLOOR_DB) / -ACTIVITY_FLOOR_DB));
  if (amount <= 0) return;
  g.save();
  g.strokeStyle = colour;
  g.globalAlpha = 0.25 + 0.6 * amount;
  g.lineWidth = 1 + 4 * amount;
  g.beginPath();
  g.arc(at.x, at.y, r + 3 + 4 * amount, 0, 2 * Math.PI);
  g.stroke();
  g.restore();
}

/** A muted source: a red slash across its marker. */
function mutedSlash(g, at, r) {
  g.save();
  g.strokeStyle = MUTED_COLOUR;
  g.lineWidth = 3;
  line(g, { x: at.x - r, y: at.y + r }, { x: at.x + r, y: at.y - r });
  g.restore();
}

function initials(label) {
  return label.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("");
}
