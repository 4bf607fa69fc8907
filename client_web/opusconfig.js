// The WebCodecs Opus settings of the low-latency transport, shared by the page (which checks
// them with isConfigSupported before choosing the transport) and the codec Worker.

export const SAMPLE_RATE = 48000;
/** The uplink: mono Opus at this rate (CELT only at 2.5–20 ms frames in `lowdelay`). */
export const UPLINK_BITRATE = 96000;

/**
 * The uplink encoder: mono, the `lowdelay` application (RESTRICTED_LOWDELAY: CELT only, 2.5 ms
 * look-ahead, no speech processing), one packet per room frame. No in-band FEC: Opus's FEC
 * is SILK's (LBRR), which `lowdelay` never uses.
 */
export function encoderConfig(frameMs, bitrate = UPLINK_BITRATE) {
  return {
    codec: "opus", sampleRate: SAMPLE_RATE, numberOfChannels: 1, bitrate,
    opus: { application: "lowdelay", frameDuration: Math.round(frameMs * 1000) },
  };
}

/** The downlink decoder: your mix, stereo Opus (no description needed for one or two channels). */
export function decoderConfig() {
  return { codec: "opus", sampleRate: SAMPLE_RATE, numberOfChannels: 2 };
}
