// The WebSocket half of docs/PROTOCOL.md: join, re-join after a drop, and message dispatch.
//
// After the first `joined`, a closed socket is not the end: the client reconnects with
// exponential backoff and sends `join` again with the saved `seat` token, which gives back the
// same seat (stage position, personal mix). The caller renegotiates WebRTC on every `joined`.
// A server that shuts down or restarts says so first (`server_closing`): the first retry then
// waits the `retry_after_s` it asks for (spread a little, so a room does not come back at once).
// Some ends are final, with no retry: a join refused for good (FATAL_JOIN_CODES), a removal by
// the room's admin (`kicked`, close 4003), and a handshake the server refused (HTTP 401, which
// a browser sees only as close 1006 before the socket opened: `whyRefused` asks why).

const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];

/** Join refusals that retrying cannot fix. */
const FATAL_JOIN_CODES = new Set([
  "unauthorized", "token_expired", "forbidden", "room_locked", "kicked", "room_full",
  "bad_value", "bad_type", "missing_field", "unknown_field", "out_of_range",
]);

/** The close code of a connection whose member the room's admin removed. */
const CLOSE_KICKED = 4003;

/**
 * Events (CustomEvent, data in `detail`):
 * - `status`  {state: "connecting" | "joined" | "reconnecting" | "left", attempt, retryInMs,
 *   restart}: `restart` is true when the server said it was closing
 * - `joined`  {message, rejoin}: every `joined`, the first and after each reconnect
 * - `message` {message}: every other server message (room_state, answer, offer, ice, stats,
 *   pong, error, server_closing)
 * - `failed`  {code, message}: the room cannot be (re)joined; no more retries
 */
export class SignalingClient extends EventTarget {
  /**
   * @param {string} url  the WebSocket's URL (with the access token, if any)
   * @param {{whyRefused?: () => Promise<{code: string, message: string}|null>}} options
   *   `whyRefused`: after a socket closed before it opened, the server's refusal, or null
   */
  constructor(url, { whyRefused = async () => null } = {}) {
    super();
    this.url = url;
    this.whyRefused = whyRefused;
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
    this.retryAfterMs = null; // the wait a closing server asked for, until the next retry
  }

  /** Join a room; resolves with the first `joined`, rejects with an Error carrying `.code`. */
  join({ room, name, instrument = "", token = null, seat = null }) {
    this.joinRequest = { room, name, instrument, token };
    this.seat = seat; // a seat token from before (a reload): that seat back, if still kept
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

  /** Send one binary frame now (an HRTF upload's chunk); false when not connected. */
  sendBinary(data) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(data);
    return true;
  }

  /** Bytes queued in the socket, not yet sent (0 when not connected). */
  get bufferedAmount() {
    return this.ws ? this.ws.bufferedAmount : 0;
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
    let opened = false;
    this.emit("status", { state: "connecting", attempt: this.attempt });
    ws.onopen = () => {
      opened = true;
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
      if (event.code === CLOSE_KICKED) this.fail("kicked", "an admin removed you from the room");
      else if (opened) this.lost(event);
      else this.refused(event);
    };
  }

  /** The connection is gone: the first join fails, a joined client tries again. */
  lost(event) {
    if (this.firstJoin) {
      this.fail("unreachable", `cannot reach the server (${event.code || "no answer"})`);
    } else if (this.wanted) {
      this.scheduleRetry();
    }
  }

  /** The socket never opened: a refused access token ends joining; anything else is lost. */
  async refused(event) {
    const refusal = await this.whyRefused();
    if (!this.wanted || this.ws !== null) return; // left (or connecting again) meanwhile
    if (refusal) this.fail(refusal.code, refusal.message);
    else this.lost(event);
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
    if (message.type === "error" && message.code === "kicked") {
      this.fail(message.code, message.message); // the server closes with 4003 next
      return;
    }
    if (message.type === "server_closing") {
      const seconds = Number(message.retry_after_s);
      this.retryAfterMs = Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : null;
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
    const restart = this.retryAfterMs !== null;
    const retryInMs = restart
      ? Math.round(this.retryAfterMs * (1 + 0.3 * Math.random()))
      : Math.round(BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)]
        * (0.8 + 0.4 * Math.random()));
    this.retryAfterMs = null;
    this.attempt += 1;
    this.emit("status", { state: "reconnecting", attempt: this.attempt, retryInMs, restart });
    this.retryTimer = setTimeout(() => this.open(), retryInMs);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
