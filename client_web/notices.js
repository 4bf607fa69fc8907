// What the page tells the musician: the connection status line and dismissable notices
// (server `error` messages, WebRTC and audio trouble).

const NOTICE_MS = 8000;

/** Show the status dot and text; `kind` is idle, connecting, live, reconnecting or error. */
export function setStatus(kind, text) {
  const status = document.getElementById("status");
  status.dataset.state = kind;
  status.textContent = text;
}

/** The status line for a signaling `connection` state and a peer connection state (`peer`), while
 * joining or in a room; other states (idle, reconnecting) keep the line their handler wrote. */
export function showConnection(connection, peer) {
  if (connection === "joined") {
    const media = {
      connected: "live", connecting: "connecting audio…", new: "connecting audio…",
      disconnected: "audio interrupted", failed: "audio failed", closed: "audio closed",
    }[peer] ?? peer;
    setStatus(peer === "connected" ? "live" : "connecting", `In room — ${media}`);
  } else if (connection === "connecting") {
    setStatus("connecting", "Connecting…");
  }
}

/** What a notice's title says for a server error code or the page's own short word. */
const TITLES = {
  webrtc: "Audio connection", media: "Audio connection", audio: "Audio", sound: "Sound",
  microphone: "Microphone", output: "Output", server_closing: "Server restarting",
  kicked: "Removed", room_locked: "Room locked", room_full: "Room full",
  rate_limited: "Slow down", forbidden: "Not allowed", unauthorized: "No access",
  token_expired: "Access expired", internal_error: "Server problem",
  upload_failed: "Upload", bad_sofa: "HRTF file", unknown_hrtf: "HRTF set",
  recording_unavailable: "Recording", ai_exists: "AI musician", unknown_source: "Not here",
  media_ports_exhausted: "Server full", too_many_errors: "Disconnected",
  invite: "Invite link", frame_changed: "Room frame changed",
};

/** Words for `code` (a server error code or a short word): never the code itself. */
export function titleFor(code) {
  if (typeof code !== "string" || !code) return "Notice";
  const words = code.replace(/_/g, " ");
  return TITLES[code] ?? words[0].toUpperCase() + words.slice(1);
}

/** A notice in the corner: a title for `code` (a server error code, or a short word) and a
 * sentence; `info`: news, not trouble. The code stays on the element (`data-code`). */
export function notify(code, message, { info = false } = {}) {
  const item = document.createElement("div");
  item.className = info ? "toast info" : "toast";
  item.dataset.code = String(code);
  item.setAttribute("role", "alert");
  const strong = document.createElement("strong");
  strong.textContent = titleFor(code);
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "×";
  close.title = "Dismiss";
  close.addEventListener("click", () => item.remove());
  item.append(strong, ` ${message}`, close);
  document.getElementById("toasts").append(item);
  setTimeout(() => item.remove(), NOTICE_MS);
}

/** Why joining failed, in words, with what to do: a refused or missing microphone (a browser
 * error), or the server's refusal (its `code` as a title, never the code itself). */
export function joinErrorText(error) {
  if (!window.isSecureContext || !navigator.mediaDevices) {
    return "This page is not secure (plain http:// from another machine), and browsers open "
      + "the microphone only on secure pages: use the server's https:// address.";
  }
  if (error.name === "NotAllowedError") {
    return "Your browser refused the microphone. To allow it again: click the icon at the left "
      + "of the address bar (a lock or sliders), set Microphone to Allow, then press Join.";
  }
  if (error.name === "NotFoundError" || error.name === "OverconstrainedError") {
    return "No microphone was found: plug one in (or choose it in your system's sound "
      + "settings), then press Join.";
  }
  if (error.name === "NotReadableError") {
    return "The microphone is busy or blocked by your system: close other programs using it, "
      + "then press Join.";
  }
  return typeof error.code === "string" ? `${titleFor(error.code)}: ${error.message}`
    : error.message;
}
