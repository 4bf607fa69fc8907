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

/** A notice in the corner: `code` (a server error code, or a short word) and a sentence. */
export function notify(code, message) {
  const item = document.createElement("div");
  item.className = "toast";
  item.setAttribute("role", "alert");
  const strong = document.createElement("strong");
  strong.textContent = code;
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "×";
  close.title = "Dismiss";
  close.addEventListener("click", () => item.remove());
  item.append(strong, ` ${message}`, close);
  document.getElementById("toasts").append(item);
  setTimeout(() => item.remove(), NOTICE_MS);
}
