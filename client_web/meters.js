// Level meters drawn with plain DOM: a bar from -60 to 0 dBFS with a falling peak marker.

const FLOOR_DB = -60;
const PEAK_HOLD_MS = 1200;
const PEAK_FALL_DB_PER_S = 20;

export class LevelMeter {
  /** @param {HTMLElement} element  a `.meter` with `.fill`, `.peak` and `.value` children */
  constructor(element) {
    this.fill = element.querySelector(".fill");
    this.peak = element.querySelector(".peak");
    this.value = element.querySelector(".value");
    this.peakDb = FLOOR_DB;
    this.peakAt = 0;
    this.shownAt = 0;
  }

  /** Show `db` (dBFS) at time `nowMs`. */
  set(db, nowMs) {
    const dt = Math.max(0, nowMs - this.shownAt) / 1000;
    this.shownAt = nowMs;
    if (db >= this.peakDb) {
      this.peakDb = db;
      this.peakAt = nowMs;
    } else if (nowMs - this.peakAt > PEAK_HOLD_MS) {
      this.peakDb = Math.max(db, this.peakDb - PEAK_FALL_DB_PER_S * dt);
    }
    this.fill.style.width = `${fraction(db) * 100}%`;
    this.fill.classList.toggle("hot", db > -6);
    this.peak.style.left = `${fraction(this.peakDb) * 100}%`;
    this.value.textContent = db <= FLOOR_DB ? "−∞" : `${db.toFixed(0)} dB`;
  }
}

function fraction(db) {
  return Math.min(1, Math.max(0, (db - FLOOR_DB) / -FLOOR_DB));
}
