// Paces outgoing stage and mix edits so a drag or a held key never trips the server's rate
// limit (docs/PROTOCOL.md: 50 messages/s on average, bursts of 100; every refusal is a strike).
//
// Edits are *coalesced by key*: only the latest message per key waits, so the final position
// of a drag is always the one that goes out. Each key has its own minimum interval
// (`move_source` ≤ 1 per 50 ms, `head_pose` ≤ 1 per 20 ms) and all keys share one token
// bucket, kept below the server's rate so pings and offers always have room.

export class Pacer {
  /**
   * @param {(message: object) => void} send  writes one message
   * @param {{ratePerS?: number, burst?: number, now?: () => number}} options
   */
  constructor(send, { ratePerS = 35, burst = 20, now = () => performance.now() } = {}) {
    this.send = send;
    this.ratePerS = ratePerS;
    this.burst = burst;
    this.now = now;
    this.tokens = burst;
    this.refilledAt = now();
    this.pending = new Map(); // key -> {message, intervalMs}
    this.lastSentAt = new Map(); // key -> ms
    this.timer = null;
  }

  /** Queue `message` under `key`, replacing what waits there; sent when allowed. */
  offer(key, message, intervalMs) {
    this.pending.set(key, { message, intervalMs });
    this.pump();
  }

  /** Send at once (signaling, pings): takes a token, never waits. */
  sendNow(message) {
    this.refill();
    this.tokens = Math.max(this.tokens - 1, -this.burst);
    this.send(message);
  }

  /** Drop what waits under the keys `predicate` accepts (e.g. before a reset). */
  cancel(predicate) {
    for (const key of [...this.pending.keys()]) if (predicate(key)) this.pending.delete(key);
  }

  /** Forget everything that waits (the connection went away). */
  clear() {
    this.pending.clear();
    clearTimeout(this.timer);
    this.timer = null;
  }

  refill() {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.refilledAt) * this.ratePerS) / 1000);
    this.refilledAt = now;
  }

  pump() {
    clearTimeout(this.timer);
    this.timer = null;
    this.refill();
    const now = this.now();
    let waitMs = Infinity;
    for (const [key, { message, intervalMs }] of this.pending) {
      const dueAt = (this.lastSentAt.get(key) ?? -Infinity) + intervalMs;
      if (now < dueAt) {
        waitMs = Math.min(waitMs, dueAt - now);
      } else if (this.tokens >= 1) {
        this.tokens -= 1;
        this.lastSentAt.set(key, now);
        this.pending.delete(key);
        this.send(message);
      } else {
        waitMs = Math.min(waitMs, ((1 - this.tokens) * 1000) / this.ratePerS);
      }
    }
    if (this.pending.size && waitMs < Infinity) {
      this.timer = setTimeout(() => this.pump(), Math.max(1, waitMs));
    }
  }
}
