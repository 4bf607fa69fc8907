// The WebSocket half of docs/PROTOCOL.md: join, re-join after a drop, and message dispatch.
//
// After the first `joined`, a closed socket is not the end: the client reconnects with
// exponential backoff and sends `join` again with the saved `seat` token, which gives back the
// same seat (stage position, personal mix). The caller renegotiates WebRTC on every `joined`.

const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];

/** Join refusals that retrying cannot fix. */
const FATAL_JOIN_CODES = new Set([
  "unauthorized", "room_full", "bad_value", "bad_type", "missing_field", "unknown_field",
  "out_of_range",
]);

/**
 * Events (CustomEvent, data in `detail`):
 * - `status`  {state: "connecting" | "joined" | "reconnecting" | "left", attempt, retryInMs}
 * - `joined`  {message, rejoin}: every `joined`, the first and after each reconnect
 * - `message` {message}: every other server message (room_state, answer, offer, ice, stats,
 *   pong, error)
 * - `failed`  {code, message}: the room cannot be (re)joined; no more retries
 */
export class SignalingClient extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.ws = null;
    this.joinRequest = null; // {room, name, instrument, token}
    this.seat = null;
    this.participant = null;
    this.joined = false;
    this.wanted = false; // keep (re)connecting until leave()
    this.attempt = 0;
    this.retryTimer = null;
    this.nextId = 1;
    this.joinId = null;
    this.firstJoin = null; // {resolve, reject} until the first joined
  }

  /** Join a room; resolves with the first `joined`, rejects with an Error carrying `.code`. */
  join({ room, name, instrument = "", token = null }) {
    this.joinRequest = { room, name, instrument, token };
    this.wanted = true;
    this.attempt = 0;
    return new Promise((resolve, reject) => {
      this.firstJoin = { resolve, reject };
      this.open();
    });
  }

  /** Send one message now; false when not connected. */
  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  /** A fresh message id (for replies and errors that refer to a message). */
  newId() {
    return this.nextId++;
  }

  leave() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    if (this.ws) {
      this.send({ type: "leave" });
      this.ws.close(1000, "left");
    }
    this.ws = null;
    this.joined = false;
    this.emit("status", { state: "left" });
  }

  /** Close the socket as a network drop would (for tests and the "reconnect" button). */
  drop() {
    if (this.ws) this.ws.close(4000, "dropped by the client");
  }

  open() {
    clearTimeout(this.retryTimer);
    const ws = new WebSocket(this.url);
    this.ws = ws;
    this.emit("status", { state: "connecting", attempt: this.attempt });
    ws.onopen = () => {
      const { room, name, instrument, token } = this.joinRequest;
      this.joinId = this.newId();
      const join = { type: "join", id: this.joinId, room, name, instrument };
      if (this.seat) join.seat = this.seat;
      if (token) join.token = token;
      this.send(join);
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return; // the server only sends JSON; ignore anything else
      }
      this.dispatch(message);
    };
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.joined = false;
      if (this.firstJoin) {
        this.fail("unreachable", `cannot reach the server (${event.code || "no answer"})`);
      } else if (this.wanted) {
        this.scheduleRetry();
      }
    };
  }

  dispatch(message) {
    if (message.type === "joined") {
      // Our old seat back (same token): the server kept our place and mix. A new token means
      // the seat was gone (the room closed meanwhile): start afresh.
      const rejoin = this.seat !== null && message.seat === this.seat;
      this.seat = message.seat;
      this.participant = message.participant;
      this.joined = true;
      this.attempt = 0;
      this.emit("status", { state: "joined" });
      this.emit("joined", { message, rejoin });
      if (this.firstJoin) {
        this.firstJoin.resolve(message);
        this.firstJoin = null;
      }
      return;
    }
    if (message.type === "error" && !this.joined && message.id === this.joinId) {
      if (FATAL_JOIN_CODES.has(message.code) || this.firstJoin) {
        this.fail(message.code, message.message);
      } else {
        this.emit("message", { message });
        this.ws?.close(1000, "join failed; retrying"); // onclose schedules the retry
      }
      return;
    }
    this.emit("message", { message });
  }

  fail(code, text) {
    this.wanted = false;
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, "join refused");
    if (this.firstJoin) {
      const error = new Error(text);
      error.code = code;
      this.firstJoin.reject(error);
      this.firstJoin = null;
    }
    this.emit("failed", { code, message: text });
  }

  scheduleRetry() {
    const base = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    const retryInMs = Math.round(base * (0.8 + 0.4 * Math.random()));
    this.attempt += 1;
    this.emit("status", { state: "reconnecting", attempt: this.attempt, retryInMs });
    this.retryTimer = setTimeout(() => this.open(), retryInMs);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
