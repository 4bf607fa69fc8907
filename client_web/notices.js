// What the page tells the musician: the connection status line and dismissable notices
// (server `error` messages, WebRTC and audio trouble).

const NOTICE_MS = 8000;

/** Show the status dot and text; `kind` is idle, connecting, live, reconnecting or error. */
export function setStatus(kind, text) {
  const status = document.getElementById("status");
  status.dataset.state = kind;
  status.textContent = text;
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
