// This tab's seat in a room, kept across a reload (sessionStorage: per tab, gone with it).
//
// The server keeps a seat (participant id, stage place, personal mix) for its token; the page
// keeps the token, whether it was in the room, and what it shows of its own mix (the server
// holds the mix itself but does not send it back), so that a reload rejoins the same seat by
// itself and shows the same mix.

const KEY = "spatialjam.seat";

/**
 * @typedef {object} SavedSeat
 * @property {string} room
 * @property {string} seat  the seat token `joined` gave
 * @property {boolean} inRoom  the tab was in the room when it was last saved
 * @property {string} name
 * @property {string} instrument
 * @property {[string, object][]} personal  source id -> {gainDb, mute, position}
 * @property {boolean} monitorOn
 * @property {number} monitorGainDb
 * @property {number} headYawDeg
 */

/** This tab's saved seat in `room` (any room when omitted), or null. */
export function savedSeat(room = null) {
  try {
    const saved = JSON.parse(sessionStorage.getItem(KEY) ?? "null");
    if (!saved || typeof saved.seat !== "string") return null;
    return room === null || saved.room === room ? saved : null;
  } catch {
    return null; // storage off, or not ours
  }
}

/** @param {SavedSeat} seat */
export function saveSeat(seat) {
  try {
    sessionStorage.setItem(KEY, JSON.stringify(seat));
  } catch {
    // storage off (a private window's quota): a reload then joins afresh
  }
}

/** The tab left the room (the seat token stays, for the next Join here). */
export function leftSeat() {
  const saved = savedSeat();
  if (saved) saveSeat({ ...saved, inRoom: false });
}
