// The data-channel audio packet (issue 17; docs/PROTOCOL.md, "Data-channel audio"):
// one binary message per Opus packet, both directions, a 12-byte big-endian header first.
//
//   offset 0  u8   version (1)
//   offset 1  u8   flags (0; receivers ignore unknown bits)
//   offset 2  u16  sequence number, +1 per packet, wraps
//   offset 4  u32  timestamp: the frame's first sample on the sender's 48 kHz clock, wraps
//   offset 8  u32  capture time: the sender's clock in microseconds, mod 2^32 (informational)
//   offset 12 ..   one Opus packet (RFC 6716), 1 to 1275 bytes
//
// The server's side is `struct.Struct("!BBHII")`. Pure functions: no I/O, usable in a page, a
// Worker or an AudioWorklet alike.

export const VERSION = 1;
export const HEADER_BYTES = 12;
/** The largest Opus packet (RFC 6716, section 3.2.1). */
export const MAX_OPUS_BYTES = 1275;
export const MAX_PACKET_BYTES = HEADER_BYTES + MAX_OPUS_BYTES;

/**
 * One packet: the header fields and the Opus payload, as one ArrayBuffer.
 *
 * @param {{sequence: number, timestamp: number, captureUs: number}} header
 *   taken modulo 2^16, 2^32 and 2^32 (so counters may simply keep counting)
 * @param {Uint8Array} opus  one Opus packet, 1..1275 bytes
 * @returns {ArrayBuffer}
 */
export function packPacket({ sequence, timestamp, captureUs }, opus) {
  if (!(opus instanceof Uint8Array) || opus.length < 1 || opus.length > MAX_OPUS_BYTES) {
    throw new RangeError(`an Opus packet is 1 to ${MAX_OPUS_BYTES} bytes, `
      + `not ${opus?.length ?? typeof opus}`);
  }
  const buffer = new ArrayBuffer(HEADER_BYTES + opus.length);
  const view = new DataView(buffer);
  view.setUint8(0, VERSION);
  view.setUint8(1, 0);
  view.setUint16(2, mod(sequence, 2 ** 16));
  view.setUint32(4, mod(timestamp, 2 ** 32));
  view.setUint32(8, mod(captureUs, 2 ** 32));
  new Uint8Array(buffer, HEADER_BYTES).set(opus);
  return buffer;
}

/**
 * The fields of a received message, or `{error}` saying why it is no packet of ours (the
 * same reasons the server counts: dc_short, dc_oversized, dc_version).
 *
 * @param {ArrayBuffer} buffer
 * @returns {{version: number, flags: number, sequence: number, timestamp: number,
 *            captureUs: number, opus: Uint8Array} | {error: string}}
 *   `opus` is a view into `buffer`, not a copy
 */
export function parsePacket(buffer) {
  if (!(buffer instanceof ArrayBuffer)) return { error: "dc_text" };
  if (buffer.byteLength <= HEADER_BYTES) return { error: "dc_short" };
  if (buffer.byteLength > MAX_PACKET_BYTES) return { error: "dc_oversized" };
  const view = new DataView(buffer);
  const version = view.getUint8(0);
  if (version !== VERSION) return { error: "dc_version" };
  return {
    version,
    flags: view.getUint8(1),
    sequence: view.getUint16(2),
    timestamp: view.getUint32(4),
    captureUs: view.getUint32(8),
    opus: new Uint8Array(buffer, HEADER_BYTES),
  };
}

/** `a - b` of two u16 sequence numbers, in −32768..32767 (RFC 3550's wrap-around). */
export function sequenceDelta(a, b) {
  return ((((a - b) & 0xffff) + 0x8000) & 0xffff) - 0x8000;
}

function mod(value, m) {
  return ((Math.floor(value) % m) + m) % m;
}
