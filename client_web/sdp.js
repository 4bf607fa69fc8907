// SDP edits the browser must make itself (pure functions, no I/O).
//
// Chrome decodes an Opus stream to MONO unless the description it applies *locally* carries
// `stereo=1` in the Opus `a=fmtp` line (RFC 7587, section 6.1: "stereo" is what the receiver
// prefers to receive). The server's answer cannot fix this for us, so the offer is edited
// before `setLocalDescription`. `maxaveragebitrate` tells the server's encoder what we accept.

/** The parameters put on every Opus fmtp line of our own descriptions. */
export const MUSIC_OPUS_PARAMS = Object.freeze({
  stereo: "1",
  "sprop-stereo": "1",
  maxaveragebitrate: "128000",
  useinbandfec: "1",
});

const RTPMAP_OPUS = /^a=rtpmap:(\d+) opus\/48000(?:\/2)?\s*$/gim;

/** Payload type numbers that are Opus in `sdp`. */
export function opusPayloadTypes(sdp) {
  return [...sdp.matchAll(RTPMAP_OPUS)].map((m) => m[1]);
}

/**
 * `sdp` with every Opus `a=fmtp` line carrying `params` (added or overriding).
 * An Opus payload type without an fmtp line gets one right after its rtpmap line.
 */
export function withStereoOpus(sdp, params = MUSIC_OPUS_PARAMS) {
  const newline = sdp.includes("\r\n") ? "\r\n" : "\n";
  const lines = sdp.split(newline);
  for (const pt of opusPayloadTypes(sdp)) {
    const prefix = `a=fmtp:${pt} `;
    let found = false;
    for (let i = 0; i < lines.length; i++) {
      if (!lines[i].startsWith(prefix)) continue;
      found = true;
      const merged = new Map();
      for (const pair of lines[i].slice(prefix.length).split(";")) {
        const at = pair.indexOf("=");
        if (at > 0) merged.set(pair.slice(0, at).trim(), pair.slice(at + 1).trim());
      }
      for (const [key, value] of Object.entries(params)) merged.set(key, value);
      lines[i] = prefix + [...merged].map(([k, v]) => `${k}=${v}`).join(";");
    }
    if (!found) {
      const at = lines.findIndex((line) => line.startsWith(`a=rtpmap:${pt} `));
      const fmtp = prefix + Object.entries(params).map(([k, v]) => `${k}=${v}`).join(";");
      lines.splice(at + 1, 0, fmtp);
    }
  }
  return lines.join(newline);
}
