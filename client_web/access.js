// Room access tokens on the page (docs/PROTOCOL.md, "Access"): the token travels from the
// page's URL (`/?room=band&token=…`) to the WebSocket's (`/ws?token=…`) and stays in the page's
// URL; a handshake the server refused is explained; the grants of `joined` decide which
// controls the page offers (move others on the shared stage, lock the room).

/** Every grant: what `joined` lists in open rooms (and what a server without grants means). */
export const GRANTS = ["admin", "join", "move", "publish"];

/** The access token in the page's URL, or null. */
export function pageToken(search = location.search) {
  return new URLSearchParams(search).get("token") || null;
}

/** `url` with the token in its query string (URL-encoded), or `url` itself without one. */
export function withToken(url, token) {
  return token ? `${url}?token=${encodeURIComponent(token)}` : url;
}

/** The page's query string for `room`, keeping the token: a reload must not lose access. */
export function pageQuery(room, token) {
  const query = new URLSearchParams({ room });
  if (token) query.set("token", token);
  return `?${query}`;
}

/**
 * The room's address on the clipboard, for the others: never this page's token (it is its
 * holder's alone). What to tell the player, in words.
 */
export async function copyInvite(room) {
  const link = `${location.origin}${location.pathname}?${new URLSearchParams({ room })}`;
  try {
    await navigator.clipboard.writeText(link);
    return `Copied: ${link}`;
  } catch {
    return `Send this to the others: ${link}`;
  }
}

/**
 * Why the server refuses this token, as `{code, message}`, or null when it does not (or
 * cannot be asked). A browser's WebSocket cannot read a handshake's HTTP 401 (it sees close
 * 1006, as for a server that is not there); `GET /access?token=…` gives the same refusal.
 */
export async function whyRefused(token) {
  try {
    const reply = await fetch(withToken("/access", token), { cache: "no-store" });
    if (reply.status !== 401) return null;
    const body = await reply.json();
    return typeof body.code === "string" && typeof body.message === "string"
      ? { code: body.code, message: body.message } : null;
  } catch {
    return null; // the server is not there: a network problem, not a refusal
  }
}

/**
 * The controls that depend on what the token allows: "Move in my mix only" (forced on without
 * the `move` grant, with the reason), the room lock (an admin's toggle) and its badge.
 */
export class AccessView {
  /**
   * @param {{personalToggle: HTMLElement, personalBox: HTMLInputElement, moveHint: HTMLElement,
   *          lockToggle: HTMLElement, lockBox: HTMLInputElement, lockedBadge: HTMLElement}} els
   * @param {(locked: boolean) => void} onLock  an admin asked to lock (true) or open the room
   */
  constructor(els, onLock) {
    this.els = els;
    this.grants = new Set(GRANTS);
    this.personalTitle = els.personalToggle.title;
    els.lockBox.addEventListener("change", () => onLock(els.lockBox.checked));
  }

  /** The grants of `joined` (an older server that lists none gives every one). */
  setGrants(grants) {
    this.grants = new Set(grants ?? GRANTS);
  }

  can(grant) {
    return this.grants.has(grant);
  }

  /** Whether a drag of another member's marker goes to this listener's mix only. */
  movesPersonal(personalMode) {
    return personalMode || !this.can("move");
  }

  /** Show the state: the room's `locked` flag and the "Move in my mix only" choice. */
  render({ locked, personalMode }) {
    const { personalToggle, personalBox, moveHint, lockToggle, lockBox, lockedBadge } = this.els;
    const mayMove = this.can("move");
    personalBox.checked = this.movesPersonal(personalMode);
    personalBox.disabled = !mayMove;
    personalToggle.title = mayMove ? this.personalTitle
      : "Your access token has no 'move' grant: you move your own marker on the shared stage; "
        + "moving anyone else changes only your mix";
    moveHint.hidden = mayMove;
    lockToggle.hidden = !this.can("admin");
    lockBox.checked = locked;
    lockedBadge.hidden = !locked;
  }
}
