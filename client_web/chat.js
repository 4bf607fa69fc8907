// The room's chat (`chat`, `chat_history` in docs/PROTOCOL.md): plain text, shown as text and
// never as markup, the room's last 50 lines kept by the server for joiners.

const MAX_LINES = 200;

export class ChatPanel {
  /**
   * @param {{lines: HTMLOListElement, form: HTMLFormElement, text: HTMLInputElement}} parts
   * @param {(text: string) => boolean} send  sends a line; false when not connected
   */
  constructor({ lines, form, text }, send) {
    this.lines = lines;
    this.text = text;
    this.me = null;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const line = text.value.trim();
      if (line && send(line)) text.value = "";
    });
  }

  /** The room's chat so far (`chat_history`), replacing what was shown. */
  history(lines, me) {
    this.me = me;
    this.lines.replaceChildren();
    for (const line of lines) this.add(line);
  }

  /** One line (`chat`). */
  add({ member, name, text, at_s: atS }) {
    const item = document.createElement("li");
    item.className = member === this.me ? "chat-line mine" : "chat-line";
    const when = document.createElement("time");
    const date = new Date(atS * 1000);
    when.dateTime = date.toISOString();
    when.textContent = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const who = document.createElement("strong");
    who.textContent = name;
    const said = document.createElement("span");
    said.textContent = text; // text, never HTML
    item.append(when, " ", who, " ", said);
    const atBottom = this.lines.scrollTop + this.lines.clientHeight >= this.lines.scrollHeight - 4;
    this.lines.append(item);
    while (this.lines.children.length > MAX_LINES) this.lines.firstElementChild.remove();
    if (atBottom) this.lines.scrollTop = this.lines.scrollHeight;
  }
}
