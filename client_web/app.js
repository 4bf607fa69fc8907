// spatialjam web client: join a room, send the microphone, hear your personal binaural mix,
// and arrange the stage. The wiring lives here; each part is its own module.

import {
  AccessView, copyInvite, pageQuery, pageToken, whyRefused, withToken,
} from "./access.js";
import { AiPanel } from "./ai.js";
import { AudioAnalysis } from "./audio.js";
import { AudioLink } from "./audiolink.js";
import { ChatPanel } from "./chat.js";
import { installHandle } from "./handle.js";
import { HeadControl, wrapDeg } from "./head.js";
import { Inspector, describeFrom } from "./inspector.js";
import { LatencyPanel, LoopTestView } from "./latency.js";
import { MetronomePanel } from "./metronome.js";
import { IoPanel } from "./iopanel.js";
import { LatencyTest } from "./latencytest.js";
import { loadWorklet } from "./looptest.js";
import { Edits } from "./edits.js";
import { DEFAULT_FRAME_MS, lowestLatencyContext } from "./lowlatency.js";
import { MixPanel } from "./mix.js";
import { joinErrorText, notify, setStatus, showConnection } from "./notices.js";
import { Pacer } from "./pacer.js";
import { RecordingPanel } from "./recording.js";
import { FramePanel } from "./roomframe.js";
import { leftSeat, saveSeat, savedSeat } from "./seat.js";
import { SignalingClient } from "./signaling.js";
import { SoundPanel } from "./sound.js";
import { StageView, VIEW_HALF_M } from "./stage.js";

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
  metronome: null, // the room's metronome (room_state), null until an admin sets one
  rejoins: 0, // joins after a drop, with the seat token
  transport: null, // "datachannel" (low latency) or "media", chosen at each join
  transportWhy: "",
  frameMs: DEFAULT_FRAME_MS, // the frame of our audio connection (`joined`, `frame_changed`)
  roomFrameMs: DEFAULT_FRAME_MS, // the room's frame as `room_state` says
  iceServers: [], // `joined`'s, for a new audio connection after `frame_changed`
  seat: null, // the seat token `joined` gave (kept for a reload: seat.js)
  muted: false, // you muted yourself (`mute_self`; as room_state says)
  levels: {}, // each source's level now (dBFS, `levels`), by id
};


let signaling = null;
let pacer = null;
let link = null; // the audio connection (audiolink.js): its peer, its transport's audio
let mic = null; // what the media track sends: your input after its gain (input.js)
let input = null; // InputChain (io.input while in a room)
let audioCtx = null;
let analysis = null;
let timers = [];

// ------------------------------------------------------------------------------------------
// the page

const latency = new LatencyPanel($("latency"));
const aiPanel = new AiPanel($("ai-panel"), (message) => signaling?.send(message));
const metronome = new MetronomePanel($("metronome-panel"),
  (message) => signaling?.send(message) ?? false);
const framePanel = new FramePanel($("frame-panel"), (message) => signaling?.send(message) ?? false);
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
  monitor: (on) => edits.monitorForTest(on),
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
const stage = new StageView($("stage"), {
  onDrag: (id, xy, final) => edits.moveSource(id, xy, null, final),
  onSelect: (id) => edits.select(id),
  onTurnHead: (delta) => head.turn(delta),
  onNudge: (id, [dx, dy]) => { // from the keyboard: kept on the stage drawn
    const source = edits.placement(id);
    if (!source) return;
    const xyz = edits.targetPosition(source);
    const step = (v, d) => Math.round(100 * Math.min(VIEW_HALF_M, Math.max(-VIEW_HALF_M, v + d)))
      / 100;
    edits.moveSource(id, [step(xyz[0], dx), step(xyz[1], dy)], null, true);
  },
  onRaise: (dz) => {
    const source = edits.selectedPlacement();
    if (source) setHeight(Math.round((edits.targetPosition(source)[2] + dz) * 100) / 100);
  },
  onTurn: (delta) => {
    const source = edits.selectedPlacement();
    if (source && (source.source === state.participant || access.can("move"))) {
      setFacing(source.yaw_deg + delta);
    }
  },
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
  onGain: (id, db, final) => edits.setGain(id, db, final),
  onMute: (id, mute) => {
    edits.personalOf(id).mute = mute;
    pacer.offer(`mix-mute:${id}`, { type: "mix_override", source: id, mute }, 0);
    render();
  },
  onReset: (id) => edits.resetSource(id),
  onMonitor: (on) => edits.setMonitor(on),
  onKick: (id) => signaling?.send({ type: "kick", member: id }),
  openServer: !pageToken(),
});
const access = new AccessView({
  personalToggle: $("personal-mode-toggle"),
  personalBox: $("personal-mode"),
  moveHint: $("move-hint"),
  lockToggle: $("lock-room-toggle"),
  lockBox: $("lock-room"),
  lockedBadge: $("room-locked"),
}, (locked) => signaling?.send({ type: "lock_room", locked }));
const edits = new Edits({ state, access, pacer: () => pacer, render: () => render() });

const io = new IoPanel($, {
  onMute: () => signaling?.send({ type: "mute_self", muted: !state.muted }),
});
const chat = new ChatPanel(
  { lines: $("chat-lines"), form: $("chat-form"), text: $("chat-text") },
  (text) => signaling?.send({ type: "chat", text }) ?? false);

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
$("copy-invite").addEventListener("click", () => {
  copyInvite(state.room).then((text) => notify("invite", text, { info: true }));
});

$("personal-mode").addEventListener("change", (event) => {
  state.personalMode = event.target.checked;
  render();
});
$("reset-all").addEventListener("click", () => edits.resetAll());
const inspector = new Inspector({ onHeight: setHeight, onFacing: setFacing });

/** The selected source's height (m), on the stage or in my mix. */
function setHeight(z) {
  const source = edits.selectedPlacement();
  if (!source) return;
  const xyz = edits.targetPosition(source);
  edits.moveSource(source.source, [xyz[0], xyz[1]], Math.min(4, Math.max(-1, z)), true);
}

/** The selected source's facing (degrees, left positive), on the shared stage. */
function setFacing(yawDeg) {
  const source = edits.selectedPlacement();
  if (!source) return;
  source.yaw_deg = wrapDeg(yawDeg);
  const turn = { type: "turn_source", source: source.source, yaw_deg: source.yaw_deg };
  pacer.offer(`turn:${source.source}`, turn, MOVE_INTERVAL_MS);
  render();
}

// ------------------------------------------------------------------------------------------
// joining, leaving, reconnecting

async function join() {
  const room = $("room").value.trim();
  const name = $("name").value.trim();
  const instrument = $("instrument").value.trim();
  $("join").disabled = true;
  $("join-error").textContent = "";
  setStatus("connecting", "Starting the microphone…");

  // This tab's seat here from before (a reload, or Leave and Join again): the same seat back,
  // and what the page showed of its mix (the server kept the mix itself).
  const before = savedSeat(room);
  if (before) {
    state.personal = new Map(before.personal);
    state.monitorOn = before.monitorOn;
    state.monitorGainDb = before.monitorGainDb;
    head.set(before.headYawDeg, { quiet: true });
  }

  audioCtx = await lowestLatencyContext();
  loadWorklet(audioCtx).catch(() => {}); // for "Test my latency"; see loadWorklet()
  input = await io.start(audioCtx);
  mic = input.stream;
  analysis = new AudioAnalysis(audioCtx);
  analysis.setInputNode(input.output);

  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const token = pageToken();
  signaling = new SignalingClient(withToken(`${scheme}://${location.host}/ws`, token),
    { whyRefused: () => whyRefused(token) });
  pacer = new Pacer((message) => signaling.send(message));
  signaling.addEventListener("status", (e) => onStatus(e.detail));
  signaling.addEventListener("joined", (e) => onJoined(e.detail.message, e.detail.rejoin));
  signaling.addEventListener("message", (e) => onMessage(e.detail.message));
  signaling.addEventListener("failed", (e) => onFailed(e.detail));
  await signaling.join({ room, name, instrument, token, seat: before?.seat ?? null });

  localStorage.setItem("spatialjam.room", room);
  localStorage.setItem("spatialjam.name", name);
  localStorage.setItem("spatialjam.instrument", instrument);
  history.replaceState(null, "", pageQuery(room, token));
  $("join-screen").hidden = true;
  $("jam").hidden = false;
  $("leave").hidden = false;
  $("mute-self").hidden = false;
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
  state.seat = message.seat;
  state.revision = -1;
  access.setGrants(message.grants);
  applyRoomState(message.state);
  sound.joined(); // the server starts each join from its defaults: ask for our choice again
  metronome.joined();
  recordingPanel.refresh();
  if (!rejoin) {
    state.personal.clear(); // a new seat has no personal mix on the server
    state.monitorOn = false;
    state.monitorGainDb = 0;
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
  state.iceServers = message.ice_servers;
  startAudio();
  render();
}

/** The room's admin changed its frame: the server closed our connection; a new one at it. */
function onFrameChanged({ frame_ms: frameMs, by }) {
  const who = state.members.find((m) => m.id === by)?.name ?? "The room's admin";
  notify("frame_changed", `${who} set the room's frame to ${frameMs} ms: your audio `
    + "reconnects at it", { info: true });
  state.frameMs = frameMs;
  startAudio();
}

function startAudio() {
  startPeer(state.iceServers, state.frameMs).catch((error) => {
    notify("webrtc", `could not start the audio connection: ${error.message}`);
  });
}

/** A new audio connection, on the transport this browser supports at the room's frame. */
async function startPeer(iceServers, frameMs) {
  closePeer();
  const current = new AudioLink({ ctx: audioCtx, mic, micNode: input.output, analysis,
    mixAudio: $("mix-audio"),
    send: (message) => signaling.send(message) });
  link = current;
  current.addEventListener("transport", (e) => {
    state.transport = e.detail.transport;
    state.transportWhy = e.detail.why;
    latency.setTransport(e.detail, frameMs);
    io.setTransport(current.lowLatency, frameMs);
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
  leftSeat();
  teardown();
  setStatus("idle", "Not connected");
}

function teardown() {
  for (const t of timers) clearInterval(t);
  timers = [];
  pacer?.clear();
  closePeer();
  io.close();
  input = null;
  mic = null;
  audioCtx?.close();
  audioCtx = null;
  head.enabled = false;
  Object.assign(state, { participant: null, revision: -1, members: [], stage: [], selected: null,
    monitorOn: false, connection: "idle", peer: "new", locked: false, acoustics: null,
    recording: null, muted: false, levels: {}, seat: null });
  state.personal.clear();
  edits.localPositions.clear();
  $("jam").hidden = true;
  $("join-screen").hidden = false;
  $("leave").hidden = true;
  $("mute-self").hidden = true;
  $("room-info").hidden = true;
  $("join").disabled = false;
}

function showJoinError(error) {
  teardown();
  $("join-error").textContent = joinErrorText(error);
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
    case "levels":
      state.levels = message.levels;
      stage.setLevels(state.levels);
      mix.setLevels(state.levels);
      break;
    case "chat":
      chat.add(message);
      break;
    case "ai_hears":
      aiPanel.onHears(message);
      break;
    case "chat_history":
      chat.history(message.lines, state.participant);
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
    case "frame_changed":
      onFrameChanged(message);
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
  state.metronome = roomState.metronome ?? null;
  state.roomFrameMs = roomState.frame_ms ?? DEFAULT_FRAME_MS;
  edits.overEchoes(roomState.stage);
  state.stage = roomState.stage;
  state.muted = Boolean(roomState.members.find((m) => m.id === state.participant)?.muted);
  if (state.selected && !state.stage.some((s) => s.source === state.selected)) state.selected = null;
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

function drawMeters(now) {
  if (!analysis || !audioCtx) return;
  io.drawMeters(analysis.meterLevels(), now);
  requestAnimationFrame(drawMeters);
}

// ------------------------------------------------------------------------------------------
// drawing the state

function render() {
  const me = state.participant;
  const members = new Map(state.members.map((m) => [m.id, m]));
  const sources = state.stage.map((s) => ({
    id: s.source,
    label: s.label,
    name: members.get(s.source)?.name ?? s.label,
    instrument: members.get(s.source)?.instrument ?? "",
    muted: Boolean(members.get(s.source)?.muted),
    ai: Boolean(members.get(s.source)?.ai),
    level: state.levels[s.source] ?? null,
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
  metronome.update(state.metronome, state.connection === "joined", access.can("admin"));
  framePanel.update(state.roomFrameMs, state.connection === "joined", access.can("admin"));
  recordingPanel.setMembers(state.members);
  recordingPanel.update(state.recording, state.connection === "joined", access.can("admin"));
  access.render({ locked, personalMode: state.personalMode });
  renderSelection();
  io.setMuted(state.muted);
  renderStatus();
  keepSeat();
}

/** This tab's seat and what it shows of its mix, for a reload (seat.js). */
function keepSeat() {
  if (!state.seat || !state.participant) return;
  saveSeat({ room: state.room, seat: state.seat, inRoom: true, name: $("name").value.trim(),
    instrument: $("instrument").value.trim(), personal: [...state.personal],
    monitorOn: state.monitorOn, monitorGainDb: state.monitorGainDb, headYawDeg: head.yawDeg });
}

function renderSelection() {
  const source = edits.selectedPlacement();
  if (!source) return inspector.show(null);
  const isMe = source.source === state.participant;
  const xyz = edits.targetPosition(source);
  const member = state.members.find((m) => m.id === source.source);
  const me = edits.placement(state.participant);
  inspector.show({
    title: isMe ? `${member?.name ?? source.label} (you)`
      : member && member.name !== source.label ? `${member.name} · ${source.label}` : source.label,
    xyz,
    yawDeg: source.yaw_deg,
    heard: isMe || !me ? "" : describeFrom(me.position_m, head.yawDeg, xyz),
    personal: edits.editsPersonal(source.source),
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
  input: () => input,
  peer: () => link?.peer ?? null,
  lowLatency: () => link?.lowLatency ?? null,
  signaling: () => signaling,
});

prefill();
resumeAfterReload();

/** A reload of a tab that was in the room rejoins its seat by itself (seat.js). */
function resumeAfterReload() {
  const saved = savedSeat($("room").value.trim());
  if (!saved?.inRoom) return;
  if (!$("name").value.trim()) $("name").value = saved.name;
  if (!$("instrument").value.trim()) $("instrument").value = saved.instrument;
  join().catch((error) => showJoinError(error));
}
