// spatialjam web client: join a room, send the microphone, hear your personal binaural mix,
// and arrange the stage. The wiring lives here; each part is its own module.

import { AccessView, pageQuery, pageToken, whyRefused, withToken } from "./access.js";
import { AiPanel } from "./ai.js";
import { AudioAnalysis, MIC_CONSTRAINTS } from "./audio.js";
import { AudioLink } from "./audiolink.js";
import { installHandle } from "./handle.js";
import { HeadControl } from "./head.js";
import { Inspector, describeFrom } from "./inspector.js";
import { LatencyPanel, LoopTestView } from "./latency.js";
import { LevelMeter } from "./meters.js";
import { LatencyTest } from "./latencytest.js";
import { loadWorklet } from "./looptest.js";
import { DEFAULT_FRAME_MS, lowestLatencyContext } from "./lowlatency.js";
import { MixPanel, dbToGain } from "./mix.js";
import { notify, setStatus, showConnection } from "./notices.js";
import { Pacer } from "./pacer.js";
import { RecordingPanel } from "./recording.js";
import { SignalingClient } from "./signaling.js";
import { SoundPanel } from "./sound.js";
import { StageView } from "./stage.js";

const MOVE_INTERVAL_MS = 50; // move_source / mix_override positions: at most 1 per 50 ms
const HEAD_INTERVAL_MS = 20; // head_pose: the mix is rendered every 20 ms
const PING_INTERVAL_MS = 1000;

const $ = (id) => document.getElementById(id);

const state = {
  room: "",
  participant: null,
  revision: -1,
  members: [],
  stage: [], // placements as the server sent them, with local edits on top while dragging
  personal: new Map(), // source id -> {gainDb, mute, position}
  monitorOn: false,
  monitorGainDb: 0,
  selected: null,
  personalMode: false,
  connection: "idle",
  peer: "new",
  errors: [], // every `error` the server sent, newest last
  locked: false, // the room's admin keeps newcomers out
  acoustics: null, // the room's acoustics (room_state), null when dry
  recording: null, // the recording under way (room_state), null when none
  rejoins: 0, // joins after a drop, with the seat token
  transport: null, // "datachannel" (low latency) or "media", chosen at each join
  transportWhy: "",
  frameMs: DEFAULT_FRAME_MS, // the room's frame (`joined.frame_ms`)
};

/** Sources being dragged or just released: their local position wins over stale echoes. */
const localPositions = new Map(); // id -> {position, until}

let signaling = null;
let pacer = null;
let link = null; // the audio connection (audiolink.js): its peer, its transport's audio
let mic = null;
let audioCtx = null;
let analysis = null;
let timers = [];

// ------------------------------------------------------------------------------------------
// the page

const latency = new LatencyPanel($("latency"));
const aiPanel = new AiPanel($("ai-panel"), (message) => signaling?.send(message));
const recordingPanel = new RecordingPanel($("recording-panel"), (message) => signaling?.send(message));
const sound = new SoundPanel($("sound-panel"), {
  send: (message) => signaling?.send(message) ?? false,
  sendBinary: (data) => signaling?.sendBinary(data) ?? false,
  bufferedAmount: () => signaling?.bufferedAmount ?? 0,
  newId: () => signaling?.newId() ?? 0,
});
const loopTest = new LoopTestView({
  button: $("latency-test-run"),
  box: $("latency-test"),
  summary: $("latency-test-summary"),
  breakdown: $("latency-test-breakdown"),
  note: $("latency-test-note"),
});
const latencyTest = new LatencyTest({
  view: loopTest,
  live: () => (state.peer === "connected" ? link?.live() ?? null : null),
  monitorOn: () => state.monitorOn,
  monitor: (on) => monitorForTest(on),
  canRestore: () => Boolean(pacer),
  serverStages: () => latency.values.server ?? null,
  outputLatencyMs: () => outputLatencyMs(),
  onDone: () => {
    latency.onLoopTest(latencyTest.last);
    renderStatus();
  },
});
loopTest.button.addEventListener("click", () => {
  latencyTest.run().catch(() => {}); // the panel shows the failure
});
const meters = {
  input: new LevelMeter($("meter-input")),
  left: new LevelMeter($("meter-left")),
  right: new LevelMeter($("meter-right")),
};
const stage = new StageView($("stage"), {
  onDrag: (id, xy, final) => moveSource(id, xy, null, final),
  onSelect: (id) => select(id),
  onTurnHead: (delta) => head.turn(delta),
});
const head = new HeadControl({
  slider: $("yaw"),
  readout: $("yaw-value"),
  faceFront: $("face-front"),
  orientationToggle: $("orientation-toggle"),
  orientation: $("orientation"),
}, (yawDeg) => {
  pacer?.offer("head", { type: "head_pose", yaw_deg: yawDeg }, HEAD_INTERVAL_MS);
  render();
});
const mix = new MixPanel($("mix-list"), {
  onGain: setGain,
  onMute: (id, mute) => {
    personalOf(id).mute = mute;
    pacer.offer(`mix-mute:${id}`, { type: "mix_override", source: id, mute }, 0);
    render();
  },
  onReset: resetSource,
  onMonitor: setMonitor,
  onKick: (id) => signaling?.send({ type: "kick", member: id }),
});
const access = new AccessView({
  personalToggle: $("personal-mode-toggle"),
  personalBox: $("personal-mode"),
  moveHint: $("move-hint"),
  lockToggle: $("lock-room-toggle"),
  lockBox: $("lock-room"),
  lockedBadge: $("room-locked"),
}, (locked) => signaling?.send({ type: "lock_room", locked }));

function prefill() {
  const query = new URLSearchParams(location.search);
  $("room").value = query.get("room") ?? localStorage.getItem("spatialjam.room") ?? "";
  $("name").value = query.get("name") ?? localStorage.getItem("spatialjam.name") ?? "";
  $("instrument").value = query.get("instrument") ?? localStorage.getItem("spatialjam.instrument") ?? "";
}

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  join().catch((error) => showJoinError(error));
});
$("leave").addEventListener("click", () => leave());
$("personal-mode").addEventListener("change", (event) => {
  state.personalMode = event.target.checked;
  render();
});
$("reset-all").addEventListener("click", resetAll);
const inspector = new Inspector({
  onHeight: (z) => {
    const source = selectedPlacement();
    if (!source) return;
    const xyz = targetPosition(source);
    moveSource(source.source, [xyz[0], xyz[1]], z, true);
  },
  onFacing: (yawDeg) => {
    const source = selectedPlacement();
    if (!source) return;
    source.yaw_deg = yawDeg;
    const turn = { type: "turn_source", source: source.source, yaw_deg: yawDeg };
    pacer.offer(`turn:${source.source}`, turn, MOVE_INTERVAL_MS);
    render();
  },
});

// ------------------------------------------------------------------------------------------
// joining, leaving, reconnecting

async function join() {
  const room = $("room").value.trim();
  const name = $("name").value.trim();
  const instrument = $("instrument").value.trim();
  $("join").disabled = true;
  $("join-error").textContent = "";
  setStatus("connecting", "Starting the microphone…");

  audioCtx = await lowestLatencyContext();
  loadWorklet(audioCtx).catch(() => {}); // for "Test my latency"; see loadWorklet()
  mic = await navigator.mediaDevices.getUserMedia(MIC_CONSTRAINTS);
  analysis = new AudioAnalysis(audioCtx);
  analysis.setInput(mic);

  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const token = pageToken();
  signaling = new SignalingClient(withToken(`${scheme}://${location.host}/ws`, token),
    { whyRefused: () => whyRefused(token) });
  pacer = new Pacer((message) => signaling.send(message));
  signaling.addEventListener("status", (e) => onStatus(e.detail));
  signaling.addEventListener("joined", (e) => onJoined(e.detail.message, e.detail.rejoin));
  signaling.addEventListener("message", (e) => onMessage(e.detail.message));
  signaling.addEventListener("failed", (e) => onFailed(e.detail));
  await signaling.join({ room, name, instrument, token });

  localStorage.setItem("spatialjam.room", room);
  localStorage.setItem("spatialjam.name", name);
  localStorage.setItem("spatialjam.instrument", instrument);
  history.replaceState(null, "", pageQuery(room, token));
  $("join-screen").hidden = true;
  $("jam").hidden = false;
  $("leave").hidden = false;
  $("room-name").textContent = room;
  $("room-info").hidden = false;
  head.enabled = true;
  timers = [
    setInterval(ping, PING_INTERVAL_MS),
    setInterval(pollStats, PING_INTERVAL_MS),
  ];
  requestAnimationFrame(drawMeters);
}

function onJoined(message, rejoin) {
  state.participant = message.participant;
  state.revision = -1;
  access.setGrants(message.grants);
  applyRoomState(message.state);
  sound.joined(); // the server starts each join from its defaults: ask for our choice again
  recordingPanel.refresh();
  if (!rejoin) {
    state.personal.clear(); // a new seat has no personal mix on the server
    state.monitorOn = false;
    // A new seat starts with the head turned as the server placed it (facing the centre).
    const me = state.stage.find((s) => s.source === state.participant);
    head.set(me ? me.yaw_deg : 0, { quiet: true });
    state.selected = state.participant;
  } else {
    state.rejoins += 1;
    // The seat kept our mix on the server; our head may have turned while we were away.
    pacer.offer("head", { type: "head_pose", yaw_deg: head.yawDeg }, HEAD_INTERVAL_MS);
  }
  state.frameMs = message.frame_ms ?? DEFAULT_FRAME_MS;
  startPeer(message.ice_servers, state.frameMs).catch((error) => {
    notify("webrtc", `could not start the audio connection: ${error.message}`);
  });
  render();
}

/** A new audio connection, on the transport this browser supports at the room's frame. */
async function startPeer(iceServers, frameMs) {
  closePeer();
  const current = new AudioLink({ ctx: audioCtx, mic, analysis, mixAudio: $("mix-audio"),
    send: (message) => signaling.send(message) });
  link = current;
  current.addEventListener("transport", (e) => {
    state.transport = e.detail.transport;
    state.transportWhy = e.detail.why;
    latency.setTransport(e.detail, frameMs);
  });
  current.addEventListener("state", (e) => {
    if (link !== current) return;
    state.peer = e.detail.state;
    // A failed media path is cured like a network drop: a fresh join renegotiates everything.
    if (state.peer === "failed") signaling.drop();
    renderStatus();
  });
  await current.start(iceServers, frameMs, signaling.newId());
}

function closePeer() {
  link?.close();
  link = null;
}

function onStatus({ state: connection, attempt, retryInMs, restart }) {
  state.connection = connection;
  if (connection === "reconnecting") {
    pacer?.clear();
    closePeer();
    state.peer = "closed";
    const seconds = (retryInMs / 1000).toFixed(1);
    const why = restart ? "Server restarting" : "Connection lost";
    setStatus("reconnecting", `${why} — rejoining in ${seconds} s (attempt ${attempt})`);
    return;
  }
  renderStatus();
}

function onFailed({ code, message }) {
  if ($("jam").hidden) return; // the join screen shows it (join() rejects)
  notify(code, message);
  showJoinError(Object.assign(new Error(message), { code }));
}

function leave() {
  signaling?.leave();
  teardown();
  setStatus("idle", "Not connected");
}

function teardown() {
  for (const t of timers) clearInterval(t);
  timers = [];
  pacer?.clear();
  closePeer();
  mic?.getTracks().forEach((t) => t.stop());
  audioCtx?.close();
  audioCtx = null;
  head.enabled = false;
  Object.assign(state, { participant: null, revision: -1, members: [], stage: [], selected: null,
    monitorOn: false, connection: "idle", peer: "new", locked: false, acoustics: null,
    recording: null });
  state.personal.clear();
  localPositions.clear();
  $("jam").hidden = true;
  $("join-screen").hidden = false;
  $("leave").hidden = true;
  $("room-info").hidden = true;
  $("join").disabled = false;
}

function showJoinError(error) {
  teardown();
  const reason = error.name === "NotAllowedError" ? "microphone access was refused"
    : error.name === "NotFoundError" ? "no microphone was found"
    : error.message;
  $("join-error").textContent = error.code ? `${error.code}: ${reason}` : reason;
  setStatus("error", "Not connected");
}

// ------------------------------------------------------------------------------------------
// server messages

function onMessage(message) {
  switch (message.type) {
    case "room_state":
      applyRoomState(message);
      render();
      break;
    case "answer":
    case "offer":
    case "ice":
      link?.peer?.handle(message).catch((error) => notify("webrtc", error.message));
      break;
    case "stats":
      latency.onServerStats(message);
      break;
    case "pong":
      latency.onPong(message, performance.now());
      break;
    case "recording":
    case "recordings":
      recordingPanel.onMessage(message);
      break;
    case "rendering":
    case "hrtf_uploaded":
      sound.onMessage(message);
      break;
    case "error":
      if (!sound.onMessage(message)) onServerError(message);
      break;
    case "server_closing":
      notify("server_closing", `${message.reason}: your seat and mix are kept; rejoining in `
        + `about ${message.retry_after_s} s`);
      break;
    default:
      break; // newer servers may say more; nothing to do with it here
  }
}

function onServerError(message) {
  state.errors.push(message);
  if (state.errors.length > 50) state.errors.shift();
  const about = link?.peer && message.id === link.peer.offerId
    ? "the audio connection was refused — " : "";
  notify(message.code, about + message.message);
}

function applyRoomState(roomState) {
  if (roomState.revision < state.revision) return; // an older state overtaken by a newer one
  state.revision = roomState.revision;
  state.room = roomState.room;
  state.members = roomState.members;
  state.locked = Boolean(roomState.locked);
  state.acoustics = roomState.acoustics ?? null;
  state.recording = roomState.recording ?? null;
  const now = performance.now();
  for (const placement of roomState.stage) {
    const local = localPositions.get(placement.source);
    if (!local) continue;
    const same = placement.position_m.every((v, i) => Math.abs(v - local.position[i]) < 1e-3);
    if (same || now > local.until) localPositions.delete(placement.source);
    else placement.position_m = local.position; // an echo of an earlier step of our drag
  }
  state.stage = roomState.stage;
  if (state.selected && !state.stage.some((s) => s.source === state.selected)) state.selected = null;
}

// ------------------------------------------------------------------------------------------
// stage edits and the personal mix

function placement(id) {
  return state.stage.find((s) => s.source === id);
}

function selectedPlacement() {
  return state.selected ? placement(state.selected) : null;
}

function personalOf(id) {
  let settings = state.personal.get(id);
  if (!settings) {
    settings = { gainDb: 0, mute: false, position: null };
    state.personal.set(id, settings);
  }
  return settings;
}

/** Whether an edit of `source` changes only this listener's mix. */
function editsPersonal(id) {
  return access.movesPersonal(state.personalMode) && id !== state.participant;
}

/** The position an edit of this source starts from: personal or stage. */
function targetPosition(source) {
  const personal = editsPersonal(source.source) ? state.personal.get(source.source)?.position : null;
  return personal ?? source.position_m;
}

/** Move a source to [x, y] (and height `z`, or keep it): on the stage or in my mix only. */
function moveSource(id, [x, y], z, final) {
  const source = placement(id);
  if (!source) return;
  const current = targetPosition(source);
  const position = [x, y, z ?? current[2]];
  if (editsPersonal(id)) {
    personalOf(id).position = position;
    pacer.offer(`mix-pos:${id}`, { type: "mix_override", source: id, position_m: position },
      MOVE_INTERVAL_MS);
  } else {
    source.position_m = position;
    localPositions.set(id, { position, until: performance.now() + (final ? 2000 : 60000) });
    pacer.offer(`move:${id}`, { type: "move_source", source: id, position_m: position },
      MOVE_INTERVAL_MS);
  }
  render();
}

function select(id) {
  state.selected = id;
  render();
}

function setGain(id, db, final) {
  if (id === state.participant) {
    state.monitorGainDb = db;
    if (!state.monitorOn) return render();
  } else {
    personalOf(id).gainDb = db;
  }
  pacer.offer(`mix-gain:${id}`, { type: "mix_override", source: id, gain: dbToGain(db) },
    final ? 0 : MOVE_INTERVAL_MS);
  render();
}

function setMonitor(on) {
  state.monitorOn = on;
  const id = state.participant;
  // A mix_override of your own source turns self-monitoring on; `mute: true` turns it off.
  const message = on
    ? { type: "mix_override", source: id, gain: dbToGain(state.monitorGainDb), mute: false }
    : { type: "mix_override", source: id, mute: true };
  pacer.cancel((key) => key === `mix-gain:${id}`);
  pacer.offer(`mix-monitor:${id}`, message, 0);
  render();
}

function resetSource(id) {
  state.personal.delete(id);
  // Nothing older of this source's personal mix may land after the reset.
  pacer.cancel((key) => key.startsWith("mix-") && key.endsWith(`:${id}`));
  pacer.offer(`mix-reset:${id}`, { type: "mix_reset", source: id }, 0);
  render();
}

function resetAll() {
  state.personal.clear();
  state.monitorOn = false;
  pacer.cancel((key) => key.startsWith("mix-"));
  pacer.offer("mix-reset-all", { type: "mix_reset", all: true }, 0);
  render();
}

// ------------------------------------------------------------------------------------------
// measuring

function ping() {
  if (signaling?.joined) pacer.sendNow({ type: "ping", id: signaling.newId(), t_ms: performance.now() });
}

async function pollStats() {
  const current = link;
  if (!current?.peer || !audioCtx) return;
  const report = await current.peer.getStats();
  latency.onPeerStats(report, outputLatencyMs());
  if (current.lowLatency) latency.onLowLatencyStats(current.lowLatency.stats());
}

/** The audio device's output latency as the AudioContext reports it (ms), or null. */
function outputLatencyMs() {
  if (!audioCtx) return null;
  const seconds = (audioCtx.outputLatency ?? 0) + (audioCtx.baseLatency ?? 0);
  return seconds > 0 ? seconds * 1000 : null;
}

/** Self-monitoring on at gain 1 (`mix_override`), or off (`mix_reset` of your own source). */
function monitorForTest(on) {
  const id = state.participant;
  state.monitorOn = on;
  pacer.cancel((key) => key.startsWith("mix-") && key.endsWith(`:${id}`));
  if (on) {
    pacer.offer(`mix-monitor:${id}`, { type: "mix_override", source: id, gain: 1, mute: false }, 0);
  } else {
    pacer.offer(`mix-reset:${id}`, { type: "mix_reset", source: id }, 0);
  }
  render();
}

function drawMeters(now) {
  if (!analysis || !audioCtx) return;
  const level = analysis.meterLevels();
  meters.input.set(level.input, now);
  meters.left.set(level.left, now);
  meters.right.set(level.right, now);
  requestAnimationFrame(drawMeters);
}

// ------------------------------------------------------------------------------------------
// drawing the state

function render() {
  const me = state.participant;
  const names = new Map(state.members.map((m) => [m.id, m.name]));
  const sources = state.stage.map((s) => ({
    id: s.source,
    label: s.label,
    name: names.get(s.source) ?? s.label,
    position: s.position_m,
    yawDeg: s.yaw_deg,
    personal: state.personal.get(s.source)?.position ?? null,
    isMe: s.source === me,
  }));
  const { selected, locked } = state;
  const personalMode = access.movesPersonal(state.personalMode);
  stage.update({ sources, selected, personalMode, headYawDeg: head.yawDeg });
  mix.update(sources, state.personal, state.monitorOn, access.can("admin"));
  aiPanel.update(state.room, state.members, state.connection === "joined", access.can("admin"));
  sound.update(state.acoustics, state.connection === "joined", access.can("admin"));
  recordingPanel.update(state.recording, state.connection === "joined", access.can("admin"));
  access.render({ locked, personalMode: state.personalMode });
  renderSelection();
  renderStatus();
}

function renderSelection() {
  const source = selectedPlacement();
  if (!source) return inspector.show(null);
  const isMe = source.source === state.participant;
  const xyz = targetPosition(source);
  const member = state.members.find((m) => m.id === source.source);
  const me = placement(state.participant);
  inspector.show({
    title: isMe ? `${source.label} (you)`
      : member && member.name !== source.label ? `${member.name} · ${source.label}` : source.label,
    xyz,
    yawDeg: source.yaw_deg,
    heard: isMe || !me ? "" : describeFrom(me.position_m, head.yawDeg, xyz),
    personal: editsPersonal(source.source),
    turnable: isMe || access.can("move"),
  });
}

function renderStatus() {
  loopTest.setAvailable(state.connection === "joined" && state.peer === "connected");
  showConnection(state.connection, state.peer); // (reconnecting: onStatus wrote the line)
}

// a small handle for tests and the console (handle.js)
installHandle({
  state, head, latency, latencyTest, sound, stage,
  analysis: () => analysis,
  mic: () => mic,
  peer: () => link?.peer ?? null,
  lowLatency: () => link?.lowLatency ?? null,
  signaling: () => signaling,
});

prefill();
