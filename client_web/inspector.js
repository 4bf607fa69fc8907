// The selected marker: who it is, where it stands as you hear it, and its height and facing.

import { wrapDeg } from "./head.js";

/**
 * Distance and direction of `xyz` for a listener at `listenerXyz` whose head is turned
 * `headYawDeg` (azimuth relative to the head: positive left, as in SOFA).
 */
export function describeFrom(listenerXyz, headYawDeg, xyz) {
  const dx = xyz[0] - listenerXyz[0];
  const dy = xyz[1] - listenerXyz[1];
  const distance = Math.hypot(dx, dy, xyz[2] - listenerXyz[2]);
  const azimuth = wrapDeg((Math.atan2(dy, dx) * 180) / Math.PI - headYawDeg);
  const side = Math.abs(azimuth) < 1 ? "ahead" : Math.abs(azimuth) > 179 ? "behind"
    : `${Math.abs(azimuth).toFixed(0)}° ${azimuth > 0 ? "left" : "right"}`;
  return `${distance.toFixed(1)} m, ${side}`;
}

export class Inspector {
  /**
   * @param {{onHeight: (z: number) => void, onFacing: (yawDeg: number) => void}} handlers
   */
  constructor(handlers) {
    const $ = (id) => document.getElementById(id);
    this.name = $("selected-name");
    this.where = $("selected-where");
    this.height = $("height");
    this.heightValue = $("height-value");
    this.facing = $("facing");
    this.facingValue = $("facing-value");
    this.height.addEventListener("input", () => handlers.onHeight(Number(this.height.value)));
    this.facing.addEventListener("input", () => handlers.onFacing(Number(this.facing.value)));
  }

  /**
   * @param {null | {title: string, xyz: number[], yawDeg: number, heard: string,
   *                   personal: boolean, turnable: boolean}} selection  `heard`: how the
   *   listener hears it (empty for yourself); `personal`: edits go to my mix only;
   *   `turnable`: this listener may turn it on the shared stage (the access token's `move`)
   */
  show(selection) {
    this.height.disabled = !selection;
    this.facing.disabled = !selection?.turnable;
    this.facing.title = selection && !selection.turnable
      ? "Your access token has no 'move' grant: only your own facing turns" : "";
    if (!selection) {
      this.name.textContent = "Click a marker to select it";
      this.where.textContent = this.heightValue.textContent = this.facingValue.textContent = "";
      return;
    }
    const { title, xyz, yawDeg, heard, personal } = selection;
    this.name.textContent = title;
    this.where.textContent = `x ${xyz[0].toFixed(2)} · y ${xyz[1].toFixed(2)} m`
      + (heard ? ` · ${heard}` : "") + (personal ? " · in my mix" : "");
    // A slider being dragged keeps its own value; the others follow the state.
    if (document.activeElement !== this.height) this.height.value = String(xyz[2]);
    if (document.activeElement !== this.facing) this.facing.value = String(yawDeg);
    this.heightValue.textContent = `${xyz[2].toFixed(2)} m`;
    this.facingValue.textContent = `${Math.round(yawDeg)}°`;
  }
}
