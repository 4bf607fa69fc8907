// The latency panel: what the browser measures (signaling RTT, WebRTC getStats) beside what
// the server reports once a second (`stats`, docs/PROTOCOL.md), and the media's path
// (icepath.js).

import { describePath } from "./icepath.js";

const DEFAULT_FRAME_MS = 20; // the room's frame until `joined` says otherwise

/**
 * What a round trip (your sound to the server and back, ms) means for playing together.
 * Ensemble playing tolerates about 20–30 ms one way (Schuett 2002; Chafe et al. 2004: tempo
 * holds up to about 25 ms, drags beyond, and rhythm falls apart past about 50–70 ms); a round
 * trip of 50 ms is about 25 ms each way.
 */
export const VERDICTS = [
  { upToMs: 50, level: "good", text: "good for rhythm" },
  { upToMs: 100, level: "ok", text: "OK for slow music" },
  { upToMs: Infinity, level: "slow", text: "too slow to play in time" },
];

/** The verdict for a round trip of `roundTripMs`, or null when there is none. */
export function verdict(roundTripMs) {
  if (roundTripMs == null || !Number.isFinite(roundTripMs)) return null;
  return VERDICTS.find((v) => roundTripMs <= v.upToMs);
}

export const VERDICT_HELP = "Round trip = your sound to the server and back to your ears. "
  + "Ensemble playing tolerates about 20–30 ms one way (Schuett 2002; Chafe et al. 2004): "
  + "“good for rhythm” up to 50 ms round trip, “OK for slow music” up to 100 ms, beyond that "
  + "“too slow to play in time”. Measured by “Test my latency” when you ran it, else the "
  + "estimate below (a lower bound).";

const ROWS = [
  ["verdict", "Verdict"],
  ["transport", "Transport"],
  ["frame", "Frame"],
  ["playout", "Our playout buffer"],
  ["codec", "Opus encode / decode"],
  ["path", "Media path"],
  ["rtt", "Round trip (signaling)"],
  ["ice_rtt", "Round trip (media)"],
  ["jitter", "Arrival jitter"],
  ["jitter_buffer", "Chrome's jitter buffer"],
  ["loss", "Packets lost / concealed"],
  ["tick", "Server tick p50 / p95"],
  ["ticks_late", "Late / skipped ticks"],
  ["load", "Server load"],
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
    this.cells.get("path").title =
      "How your audio reaches the server (the selected ICE candidate pair): direct, through " +
      "NAT (a server- or peer-reflexive address), or relayed by a TURN server; over UDP, TCP " +
      "or TLS.";
    this.cells.get("self_loop").title =
      "Your own sound, out to the server and back into your ears: one frame of capture, " +
      "the media round trip, the server's receive buffer, tick and send queue, your jitter " +
      "buffer (ours on the low-latency transport, Chrome's on the media track) and the audio " +
      "device's output latency. A lower bound: microphone and driver buffers and codec " +
      "look-ahead are not measurable from the page.";
    this.cells.get("verdict").title = VERDICT_HELP;
    this.cells.get("codec").title =
      "WebCodecs, in the low-latency transport's Worker: a frame's wait for its Opus packet, " +
      "a packet's wait for its samples (means over the last second).";
    this.cells.get("playout").title =
      "The low-latency transport's own buffer (playout.js): its mean depth, its target " +
      "(starts at one frame, grows after an underrun, shrinks after calm) and its underruns; " +
      "frames concealed are under “Packets lost / concealed”.";
    this.values = { frame_ms: DEFAULT_FRAME_MS, transport: null };
    this.previous = null; // the last inbound-rtp stats, for per-second deltas
    this.loopTest = null; // the last "Test my latency" result
  }

  /** The transport this connection uses (lowlatency.js chooseTransport) and the room's frame. */
  setTransport({ transport, why }, frameMs) {
    Object.assign(this.values, { transport, transport_why: why, frame_ms: frameMs,
      playout: null, link: null, jitter_buffer_ms: null, jitter_target_ms: null });
    this.previous = null;
    this.render();
  }

  /** The low-latency transport's stats (LowLatencyAudio.stats()). */
  onLowLatencyStats(stats) {
    this.values.playout = stats.playout;
    this.values.link = stats.link;
    this.values.channel = stats.channel;
    this.render();
  }

  /** A "Test my latency" result: the verdict follows it from now on. */
  onLoopTest(result) {
    if (result?.round_trip_ms != null) this.loopTest = result;
    this.render();
  }

  /** A `pong` came back: `nowMs` is performance.now(). */
  onPong(message, nowMs) {
    this.values.rtt_ms = nowMs - message.t_ms;
    this.render();
  }

  /** The server's `stats` message. */
  onServerStats(message) {
    this.values.server = message;
    this.values.server_reports = (this.values.server_reports ?? 0) + 1; // how many so far
    this.render();
  }

  /** Read the peer's getStats() report (RTCStatsReport). */
  onPeerStats(report, outputLatencyMs) {
    const { pair, inbound } = readPeerStats(report);
    const v = this.values;
    v.path = describePath(report);
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
    const buffer = v.transport === "datachannel" ? v.playout?.depth_mean_ms : v.jitter_buffer_ms;
    if (!s || rtt == null || buffer == null) return null;
    // The measured wait from arrival to the tick (buffer and tick phase) when the server
    // reports it; the buffer's depth alone otherwise.
    const wait = s.uplink_wait_ms_p50 || s.uplink_buffer_ms;
    return v.frame_ms + rtt + wait + s.tick_ms_p50 + (s.downlink_wait_ms_p95 ?? s.downlink_queue_ms)
      + buffer + (v.output_ms ?? 0);
  }

  /** The verdict shown: from the last latency test, else from the estimate. */
  verdictNow() {
    const measured = this.loopTest?.round_trip_ms;
    const roundTrip = measured ?? this.selfLoopMs();
    const found = verdict(roundTrip);
    return found ? { ...found, round_trip_ms: roundTrip, measured: measured != null } : null;
  }

  /** Everything shown, as numbers (for the test hook). */
  snapshot() {
    return { ...this.values, self_loop_ms: this.selfLoopMs(), verdict: this.verdictNow() };
  }

  render() {
    const v = this.values;
    const s = v.server;
    const set = (key, text) => {
      this.cells.get(key).textContent = text;
    };
    const lowLatency = v.transport === "datachannel";
    const judged = this.verdictNow();
    set("verdict", judged ? `${judged.text} (${judged.measured ? "" : "≥ "}`
      + `${judged.round_trip_ms.toFixed(0)} ms${judged.measured ? ", tested" : ""})` : "—");
    this.cells.get("verdict").dataset.level = judged?.level ?? "";
    set("transport", v.transport == null ? "—" : lowLatency
      ? `low latency (data channel${v.channel && v.channel !== "open" ? `, ${v.channel}` : ""})`
      : "WebRTC media track");
    this.cells.get("transport").title = v.transport_why ?? "";
    set("frame", `${v.frame_ms} ms`);
    const p = v.playout;
    set("playout", !lowLatency ? "not used (media track)" : p == null ? "—"
      : `${ms(p.depth_mean_ms, 0)} (target ${ms(p.target_ms, 0)}), ${p.underruns} underruns`);
    set("codec", !lowLatency ? "in WebRTC" : v.link?.encode_ms == null ? "—"
      : `${ms(v.link.encode_ms, 2)} / ${ms(v.link.decode_ms, 2)}`);
    set("path", v.path?.label ?? "—");
    set("rtt", ms(v.rtt_ms));
    set("ice_rtt", ms(v.ice_rtt_ms));
    set("jitter", ms(v.jitter_ms));
    set("jitter_buffer", lowLatency ? "not used (low-latency transport)"
      : v.jitter_target_ms != null
        ? `${ms(v.jitter_buffer_ms)} (target ${ms(v.jitter_target_ms)})` : ms(v.jitter_buffer_ms));
    set("loss", lowLatency ? (p ? `${p.late} late / ${p.concealed} concealed` : "—")
      : v.packets_lost != null ? `${v.packets_lost} / ${v.concealed_pct.toFixed(1)} %` : "—");
    set("output", ms(v.output_ms));
    if (s) {
      set("tick", `${ms(s.tick_ms_p50, 2)} / ${ms(s.tick_ms_p95, 2)}`);
      set("ticks_late", `${s.late_ticks} / ${s.skipped_ticks}`);
      set("uplink", `${ms(s.uplink_buffer_ms)} (target ${ms(s.uplink_target_ms)})`);
      // How the server filled them in: the next packet's FEC, Opus PLC, or silence.
      set("server_concealed", s.concealed > 0 && s.concealed_fec != null
        ? `${s.concealed} (FEC ${s.concealed_fec}, PLC ${s.concealed_plc})` : String(s.concealed));
      set("uplink_wait", s.uplink_wait_ms_p95 != null
        ? `${ms(s.uplink_wait_ms_p50)} / ${ms(s.uplink_wait_ms_p95)}` : "—");
      set("downlink", s.downlink_wait_ms_p95 != null
        ? `${ms(s.downlink_queue_ms)} (p95 wait ${ms(s.downlink_wait_ms_p95, 2)})`
        : ms(s.downlink_queue_ms));
      // sources_cap > 0: the server is overloaded and each mix keeps only its loudest sources.
      set("load", s.sources_cap > 0 ? `overloaded: loudest ${s.sources_cap} sources per mix`
        : "normal");
      this.cells.get("load").classList.toggle("warn", s.sources_cap > 0);
      const late = s.late_ticks > 0 || s.skipped_ticks > 0;
      this.cells.get("ticks_late").classList.toggle("warn", late);
      this.cells.get("tick").classList.toggle("warn", s.tick_ms_p95 > v.frame_ms * 0.75);
    }
    set("self_loop", ms(this.selfLoopMs()));
  }
}

/**
 * "Test my latency" (looptest.js): the button, and the result with its breakdown. What is
 * measured and what is derived is said in each label.
 */
export class LoopTestView {
  /** @param {{button: HTMLButtonElement, box: HTMLElement, summary: HTMLElement,
   *           breakdown: HTMLElement, note: HTMLElement}} elements */
  constructor(elements) {
    Object.assign(this, elements);
    this.running = false;
  }

  /** Whether the button may be pressed: a live connection and no test running. */
  setAvailable(live) {
    this.button.disabled = !live || this.running;
  }

  started() {
    this.running = true;
    this.button.disabled = true;
    this.box.hidden = false;
    this.box.dataset.state = "running";
    this.summary.textContent = "Sending clicks through the server…";
    this.breakdown.replaceChildren();
    this.note.textContent = "Your microphone is paused while the clicks play.";
  }

  /** The clicks are playing; the whole test takes `seconds`. */
  playing(seconds) {
    this.note.textContent = `Your microphone is paused for about ${seconds.toFixed(0)} s ` +
      "while the clicks play.";
  }

  /** A result of looptest.explain(). */
  finished(result) {
    this.running = false;
    this.box.dataset.state = result.round_trip_ms == null ? "failed" : "done";
    const b = result.breakdown;
    if (result.round_trip_ms == null) {
      this.summary.textContent = `Round trip through the server: — (${result.clicks} of ` +
        `${result.clicks_sent} clicks came back; too few to tell)`;
      this.breakdown.replaceChildren();
      this.note.textContent = "Is the audio connection live? Loud sound in your mix can " +
        "hide the clicks: mute the others in your mix and try again.";
      return;
    }
    this.summary.textContent = `Round trip through the server: ${result.round_trip_ms.toFixed(0)} ms ` +
      `(${result.clicks} clicks)`;
    const num = (v, digits = 1) => (v == null ? "—" : v.toFixed(digits));
    const server = b.server_ms == null ? "—"
      : `${num(b.server_uplink_wait_ms)} + ${num(b.server_tick_ms)} + ` +
        `${num(b.server_downlink_wait_ms)} = ${ms(b.server_ms)}`;
    const lowLatency = result.transport === "datachannel";
    const frame = result.frame_ms ?? 20;
    const buffer = lowLatency
      ? ["playout_buffer", "Our playout buffer (measured)", ms(b.playout_buffer_ms),
        "The low-latency transport's own buffer: its mean depth over the test"]
      : ["jitter_buffer", "Chrome's jitter buffer (measured)", ms(b.jitter_buffer_ms),
        "getStats: jitterBufferDelay / jitterBufferEmittedCount over the test"];
    // [key, label, value, what it is (tooltip)]
    const rows = [
      ["verdict", "Verdict", result.verdict ?? "—", VERDICT_HELP],
      ["transport", "Transport", lowLatency ? "low latency (data channel)" : "WebRTC media track",
        lowLatency ? "WebCodecs Opus in an AudioWorklet, over an unreliable data channel"
          : "The browser's WebRTC audio: its Opus, its jitter buffer (NetEq)"],
      ["frame", "Frame", ms(frame, 1), "The room's frame: audio is cut, sent and mixed in it"],
      ["media_rtt", "Network round trip (measured)", ms(b.media_rtt_ms),
        "The ICE candidate pair's current round-trip time (getStats)"],
      ["server", "Server: wait + tick + send (reported)", server,
        "From the server's stats: your audio's wait from arrival to its tick (p50), the " +
        "tick's render and encode (p50) and your mix's wait to be sent (p95)"],
      buffer,
      ["rest", "Rest (derived)", ms(b.rest_ms),
        `The round trip minus the above, not measured: Opus framing (${frame} ms) and ` +
        "look-ahead both ways, and the browser's capture and playout buffers" +
        (lowLatency ? " (render quanta, the codec Worker)" : " between WebRTC and Web Audio")],
    ];
    this.breakdown.replaceChildren(...rows.flatMap(([key, label, value, about]) => {
      const dt = document.createElement("dt");
      dt.textContent = label;
      dt.title = about;
      const dd = document.createElement("dd");
      dd.textContent = value;
      dd.dataset.part = key;
      return [dt, dd];
    }));
    const lo = Math.min(...result.per_click_ms);
    const hi = Math.max(...result.per_click_ms);
    const device = result.device_output_ms != null
      ? ` (output about ${result.device_output_ms.toFixed(0)} ms)` : "";
    this.note.textContent = `Median of ${result.clicks} of ${result.clicks_sent} clicks ` +
      `(${lo.toFixed(1)}–${hi.toFixed(1)} ms), timed from this page's audio engine and back ` +
      `to it. Rest = round trip − the parts above: codecs, ${frame} ms framing, capture and ` +
      `playout buffers. Your sound card's own buffers come on top${device}.`;
  }

  failed(error) {
    this.running = false;
    this.box.dataset.state = "failed";
    this.summary.textContent = `The latency test failed: ${error.message}`;
    this.breakdown.replaceChildren();
    this.note.textContent = "";
  }
}

/** The candidate pair in use and the inbound audio of a getStats() report (either may be null). */
export function readPeerStats(report) {
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
  return { pair, inbound };
}

function ms(value, digits = 1) {
  return value == null || !Number.isFinite(value) ? "—" : `${value.toFixed(digits)} ms`;
}
