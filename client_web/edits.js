// Edits of the shared stage and of your own mix, paced to the server's limits (pacer.js):
// moving and turning sources (on the stage, or in your mix only), personal gains, mutes and
// resets, self-monitoring. Your drag wins over the server's echoes of its earlier steps.

import { dbToGain } from "./mix.js";

const MOVE_INTERVAL_MS = 50; // move_source / mix_override positions: at most 1 per 50 ms

export class Edits {
  /**
   * @param {{state: object, access: import("./access.js").AccessView,
   *          pacer: () => import("./pacer.js").Pacer, render: () => void}} parts  `state`:
   *   the page's state (app.js); `pacer`: the current connection's pacer
   */
  constructor({ state, access, pacer, render }) {
    this.state = state;
    this.access = access;
    this.pacer = pacer;
    this.render = render;
    /** Sources being dragged or just released: their local position wins over stale echoes. */
    this.localPositions = new Map(); // id -> {position, until}
  }

  /** Keep our drag's positions over the server's echoes of its earlier steps in `stage`. */
  overEchoes(stage) {
    const now = performance.now();
    for (const placement of stage) {
      const local = this.localPositions.get(placement.source);
      if (!local) continue;
      const same = placement.position_m.every((v, i) => Math.abs(v - local.position[i]) < 1e-3);
      if (same || now > local.until) this.localPositions.delete(placement.source);
      else placement.position_m = local.position; // an echo of an earlier step of our drag
    }
  }


  placement(id) {
    return this.state.stage.find((s) => s.source === id);
  }

  selectedPlacement() {
    return this.state.selected ? this.placement(this.state.selected) : null;
  }

  personalOf(id) {
    let settings = this.state.personal.get(id);
    if (!settings) {
      settings = { gainDb: 0, mute: false, position: null };
      this.state.personal.set(id, settings);
    }
    return settings;
  }

  /** Whether an edit of `source` changes only this listener's mix. */
  editsPersonal(id) {
    return this.access.movesPersonal(this.state.personalMode) && id !== this.state.participant;
  }

  /** The position an edit of this source starts from: personal or stage. */
  targetPosition(source) {
    const personal = this.editsPersonal(source.source)
      ? this.state.personal.get(source.source)?.position : null;
    return personal ?? source.position_m;
  }

  /** Move a source to [x, y] (and height `z`, or keep it): on the stage or in my mix only. */
  moveSource(id, [x, y], z, final) {
    const source = this.placement(id);
    if (!source) return;
    const current = this.targetPosition(source);
    const position = [x, y, z ?? current[2]];
    if (this.editsPersonal(id)) {
      this.personalOf(id).position = position;
      this.pacer().offer(`mix-pos:${id}`,
        { type: "mix_override", source: id, position_m: position }, MOVE_INTERVAL_MS);
    } else {
      source.position_m = position;
      const until = performance.now() + (final ? 2000 : 60000);
      this.localPositions.set(id, { position, until });
      this.pacer().offer(`move:${id}`, { type: "move_source", source: id, position_m: position },
        MOVE_INTERVAL_MS);
    }
    this.render();
  }

  select(id) {
    this.state.selected = id;
    this.render();
  }

  setGain(id, db, final) {
    if (id === this.state.participant) {
      this.state.monitorGainDb = db;
      if (!this.state.monitorOn) return this.render();
    } else {
      this.personalOf(id).gainDb = db;
    }
    this.pacer().offer(`mix-gain:${id}`,
      { type: "mix_override", source: id, gain: dbToGain(db) }, final ? 0 : MOVE_INTERVAL_MS);
    this.render();
  }

  setMonitor(on) {
    this.state.monitorOn = on;
    const id = this.state.participant;
    // A mix_override of your own source turns self-monitoring on; `mute: true` turns it off.
    const message = on
      ? { type: "mix_override", source: id, gain: dbToGain(this.state.monitorGainDb),
        mute: false }
      : { type: "mix_override", source: id, mute: true };
    this.pacer().cancel((key) => key === `mix-gain:${id}`);
    this.pacer().offer(`mix-monitor:${id}`, message, 0);
    this.render();
  }

  resetSource(id) {
    this.state.personal.delete(id);
    // Nothing older of this source's personal mix may land after the reset.
    this.pacer().cancel((key) => key.startsWith("mix-") && key.endsWith(`:${id}`));
    this.pacer().offer(`mix-reset:${id}`, { type: "mix_reset", source: id }, 0);
    this.render();
  }

  resetAll() {
    this.state.personal.clear();
    this.state.monitorOn = false;
    this.pacer().cancel((key) => key.startsWith("mix-"));
    this.pacer().offer("mix-reset-all", { type: "mix_reset", all: true }, 0);
    this.render();
  }

  /** Self-monitoring on at gain 1 (`mix_override`), or off (`mix_reset` of your own source). */
  monitorForTest(on) {
    const id = this.state.participant;
    this.state.monitorOn = on;
    this.pacer().cancel((key) => key.startsWith("mix-") && key.endsWith(`:${id}`));
    if (on) {
      this.pacer().offer(`mix-monitor:${id}`,
        { type: "mix_override", source: id, gain: 1, mute: false }, 0);
    } else {
      this.pacer().offer(`mix-reset:${id}`, { type: "mix_reset", source: id }, 0);
    }
    this.render();
  }
}
