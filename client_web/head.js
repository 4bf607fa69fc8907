// Turning your head: a yaw slider, keys (← → or A D), the mouse wheel over the stage (see
// stage.js) and, where the device has one, its orientation sensor. Positive yaw turns LEFT
// (SOFA), so ← and A increase it.

const KEY_STEP_DEG = 5;

/** `deg` wrapped into (-180, 180]. */
export function wrapDeg(deg) {
  const wrapped = ((((deg + 180) % 360) + 360) % 360) - 180;
  return wrapped === -180 ? 180 : wrapped;
}

export class HeadControl {
  /**
   * @param {{slider: HTMLInputElement, readout: HTMLElement, faceFront: HTMLButtonElement,
   *          orientationToggle: HTMLElement, orientation: HTMLInputElement}} elements
   * @param {(yawDeg: number) => void} onYaw
   */
  constructor(elements, onYaw) {
    this.el = elements;
    this.onYaw = onYaw;
    this.yawDeg = 0;
    this.orientationZero = null; // {alpha, yaw} when device orientation was switched on
    this.enabled = false;
    elements.slider.addEventListener("input", () => this.set(Number(elements.slider.value)));
    elements.faceFront.addEventListener("click", () => this.set(0));
    document.addEventListener("keydown", (event) => this.key(event));
    if ("DeviceOrientationEvent" in window) {
      // Offered where a sensor answers (or, on iOS, where permission must be asked first);
      // desktop browsers define the event but never deliver an angle.
      elements.orientationToggle.hidden =
        typeof window.DeviceOrientationEvent.requestPermission !== "function";
      elements.orientation.addEventListener("change", () => this.toggleOrientation());
      window.addEventListener("deviceorientation", (event) => {
        if (event.alpha != null) elements.orientationToggle.hidden = false;
        this.oriented(event);
      });
    }
  }

  /** Turn to `yawDeg` (reported through onYaw unless `quiet`). */
  set(yawDeg, { quiet = false } = {}) {
    this.yawDeg = wrapDeg(Math.round(yawDeg * 10) / 10);
    this.el.slider.value = String(this.yawDeg);
    this.el.readout.textContent = describeYaw(this.yawDeg);
    if (!quiet) this.onYaw(this.yawDeg);
  }

  turn(deltaDeg) {
    this.set(this.yawDeg + deltaDeg);
  }

  key(event) {
    if (!this.enabled || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.defaultPrevented) return; // handled already (the focused stage's own keys)
    const target = event.target;
    // Keys typed into fields, or arrows on a focused slider, belong to them.
    if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement
        || target instanceof HTMLSelectElement) return;
    const step = { ArrowLeft: KEY_STEP_DEG, a: KEY_STEP_DEG, A: KEY_STEP_DEG,
      ArrowRight: -KEY_STEP_DEG, d: -KEY_STEP_DEG, D: -KEY_STEP_DEG }[event.key];
    if (step === undefined) return;
    event.preventDefault();
    this.turn(event.shiftKey ? step * 3 : step);
  }

  async toggleOrientation() {
    if (!this.el.orientation.checked) {
      this.orientationZero = null;
      return;
    }
    // iOS asks for permission; other browsers have no such call.
    const ask = window.DeviceOrientationEvent?.requestPermission;
    if (typeof ask === "function" && (await ask.call(window.DeviceOrientationEvent)) !== "granted") {
      this.el.orientation.checked = false;
      return;
    }
    this.orientationZero = { alpha: null, yaw: this.yawDeg };
  }

  oriented(event) {
    if (!this.orientationZero || event.alpha == null) return;
    // alpha grows when the device turns counter-clockwise seen from above: to the left, as yaw.
    if (this.orientationZero.alpha === null) this.orientationZero.alpha = event.alpha;
    this.set(this.orientationZero.yaw + event.alpha - this.orientationZero.alpha);
  }
}

function describeYaw(yawDeg) {
  if (yawDeg === 0) return "0° (front)";
  return `${Math.abs(yawDeg).toFixed(0)}° ${yawDeg > 0 ? "left" : "right"}`;
}
