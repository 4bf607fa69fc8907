// The latency panel: what the browser measures (signaling RTT, WebRTC getStats) beside what
// the server reports once a second (`stats`, docs/PROTOCOL.md).

const FRAME_MS = 20; // one Opus/room frame, as everywhere in spatialjam

const ROWS = [
  ["rtt", "Round trip (signaling)"],
  ["ice_rtt", "Round trip (media)"],
  ["jitter", "Arrival jitter"],
  ["jitter_buffer", "Your jitter buffer"],
  ["loss", "Packets lost / concealed"],
  ["tick", "Server tick p50 / p95"],
  ["ticks_late", "Late / skipped ticks"],
  ["uplink", "Server buffer for you"],
  ["uplink_wait", "Your audio's wait at the server p50 / p95"],
  ["server_concealed", "Your frames concealed"],
  ["downlink", "Server send queue"],
  ["output", "Audio output (device)"],
  ["self_loop", "Self loop via server ≥"],
];

export class LatencyPanel {
  /** @param {HTMLElement} list  a <dl> */
  constructor(list) {
    this.cells = new Map();
    for (const [key, label] of ROWS) {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = "—";
      dd.dataset.stat = key;
      list.append(dt, dd);
      this.cells.set(key, dd);
    }
    this.cells.get("self_loop").title =
      "Your own sound, out to the server and back into your ears: one 20 ms frame of capture, " +
      "the media round trip, the server's receive buffer, tick and send queue, your jitter " +
      "buffer and the audio device's output latency. A lower bound: microphone and driver " +
      "buffers and codec look-ahead are not measurable from the page.";
    this.values = {};
    this.previous = null; // the last inbound-rtp stats, for per-second deltas
  }

  /** A `pong` came back: `nowMs` is performance.now(). */
  onPong(message, nowMs) {
    this.values.rtt_ms = nowMs - message.t_ms;
    this.render();
  }

  /** The server's `stats` message. */
  onServerStats(message) {
    this.values.server = message;
    this.render();
  }

  /** Read the peer's getStats() report (RTCStatsReport). */
  onPeerStats(report, outputLatencyMs) {
    let pair = null;
    let selectedPairId = null;
    let inbound = null;
    report.forEach((s) => {
      if (s.type === "transport" && s.selectedCandidatePairId) {
        selectedPairId = s.selectedCandidatePairId;
      }
      if (s.type === "inbound-rtp" && s.kind === "audio") inbound = s;
    });
    report.forEach((s) => {
      if (s.type !== "candidate-pair") return;
      const inUse = selectedPairId ? s.id === selectedPairId : s.nominated && s.state === "succeeded";
      if (inUse) pair = s;
    });
    const v = this.values;
    v.ice_rtt_ms = pair?.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : null;
    v.output_ms = outputLatencyMs;
    if (inbound) {
      v.jitter_ms = inbound.jitter != null ? inbound.jitter * 1000 : null;
      const prev = this.previous;
      if (prev && inbound.jitterBufferEmittedCount > prev.jitterBufferEmittedCount) {
        const emitted = inbound.jitterBufferEmittedCount - prev.jitterBufferEmittedCount;
        v.jitter_buffer_ms = (1000 * (inbound.jitterBufferDelay - prev.jitterBufferDelay)) / emitted;
        if (inbound.jitterBufferTargetDelay != null) {
          const target = inbound.jitterBufferTargetDelay - prev.jitterBufferTargetDelay;
          v.jitter_target_ms = (1000 * target) / emitted;
        }
      }
      v.packets_lost = inbound.packetsLost ?? 0;
      v.concealed_pct = inbound.totalSamplesReceived
        ? (100 * (inbound.concealedSamples ?? 0)) / inbound.totalSamplesReceived : 0;
      this.previous = inbound;
    }
    this.render();
  }

  /** A lower bound of your own sound's way out to the server and back, or null. */
  selfLoopMs() {
    const v = this.values;
    const s = v.server;
    const rtt = v.ice_rtt_ms ?? v.rtt_ms;
    if (!s || rtt == null || v.jitter_buffer_ms == null) return null;
    // The measured wait from arrival to the tick (buffer and tick phase) when the server
    // reports it; the buffer's depth alone otherwise.
    const wait = s.uplink_wait_ms_p50 || s.uplink_buffer_ms;
    return FRAME_MS + rtt + wait + s.tick_ms_p50 + (s.downlink_wait_ms_p95 ?? s.downlink_queue_ms)
      + v.jitter_buffer_ms + (v.output_ms ?? 0);
  }

  /** Everything shown, as numbers (for the test hook). */
  snapshot() {
    return { ...this.values, self_loop_ms: this.selfLoopMs() };
  }

  render() {
    const v = this.values;
    const s = v.server;
    const set = (key, text) => {
      this.cells.get(key).textContent = text;
    };
    set("rtt", ms(v.rtt_ms));
    set("ice_rtt", ms(v.ice_rtt_ms));
    set("jitter", ms(v.jitter_ms));
    set("jitter_buffer", v.jitter_target_ms != null
      ? `${ms(v.jitter_buffer_ms)} (target ${ms(v.jitter_target_ms)})` : ms(v.jitter_buffer_ms));
    set("loss", v.packets_lost != null ? `${v.packets_lost} / ${v.concealed_pct.toFixed(1)} %` : "—");
    set("output", ms(v.output_ms));
    if (s) {
      set("tick", `${ms(s.tick_ms_p50, 2)} / ${ms(s.tick_ms_p95, 2)}`);
      set("ticks_late", `${s.late_ticks} / ${s.skipped_ticks}`);
      set("uplink", `${ms(s.uplink_buffer_ms)} (target ${ms(s.uplink_target_ms)})`);
      set("server_concealed", String(s.concealed));
      set("uplink_wait", s.uplink_wait_ms_p95 != null
        ? `${ms(s.uplink_wait_ms_p50)} / ${ms(s.uplink_wait_ms_p95)}` : "—");
      set("downlink", s.downlink_wait_ms_p95 != null
        ? `${ms(s.downlink_queue_ms)} (p95 wait ${ms(s.downlink_wait_ms_p95, 2)})`
        : ms(s.downlink_queue_ms));
      const late = s.late_ticks > 0 || s.skipped_ticks > 0;
      this.cells.get("ticks_late").classList.toggle("warn", late);
      this.cells.get("tick").classList.toggle("warn", s.tick_ms_p95 > FRAME_MS * 0.75);
    }
    set("self_loop", ms(this.selfLoopMs()));
  }
}

function ms(value, digits = 1) {
  return value == null || !Number.isFinite(value) ? "—" : `${value.toFixed(digits)} ms`;
}
