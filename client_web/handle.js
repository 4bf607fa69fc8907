// window.spatialjam: a small handle on the page for the tests (Playwright) and the console.
// It reads the page's live parts through `page`, whose getters return what is current (the
// peer, the microphone and the signaling connection change as the player joins and leaves).

export function installHandle(page) {
  const { state, head, latency, latencyTest, sound, stage } = page;
  window.spatialjam = {
    state,
    get participant() {
      return state.participant;
    },
    get headYawDeg() {
      return head.yawDeg;
    },
    /** Received L/R and microphone RMS (dBFS) over the last ~0.68 s; optional band in Hz. */
    levels: (band) => page.analysis()?.levels(band) ?? null,
    /** The last ~0.68 s of the received left ear, and the audio clock's sample rate. */
    received: () => ({ samples: page.analysis()?.receivedLeft() ?? [],
      rate: page.analysis()?.ctx.sampleRate ?? 0 }),
    latency: () => latency.snapshot(),
    /** Run "Test my latency": a promise of {round_trip_ms, clicks, breakdown, …}. */
    latencyTest: () => latencyTest.run(),
    /** The last latency test's result, {error} if it failed, or null. */
    get lastLatencyTest() {
      return latencyTest.last;
    },
    /** Whether the microphone's track is the one the connection sends. */
    micOnSender: () => {
      const ll = page.lowLatency();
      if (ll) return ll.sendingMicrophone && page.mic()?.getAudioTracks()[0]?.readyState === "live";
      const track = page.mic()?.getAudioTracks()[0];
      return Boolean(track && page.peer()?.pc.getSenders().some((s) => s.track === track));
    },
    peerState: () => state.peer,
    /** "datachannel" (the low-latency transport) or "media", and the room's frame (ms). */
    get transport() {
      return state.transport;
    },
    get frameMs() {
      return state.frameMs;
    },
    /** The low-latency transport's stats (playout buffer, channel, counts), or null. */
    lowLatency: () => page.lowLatency()?.stats() ?? null,
    /** The server's last `rendering` for this listener (HRTF set, acoustics, reference). */
    get rendering() {
      return sound.rendering;
    },
    /** The session description this browser applied to itself (after our SDP edits). */
    localDescription: () => page.peer()?.pc.localDescription?.sdp ?? null,
    /** Where a source's marker is drawn now, in viewport pixels (for mouse events). */
    markerViewport: (id) => {
      const source = stage.sources.find((s) => s.id === id);
      return source ? stage.toViewport(stage.markerPosition(source)) : null;
    },
    /** Room [x, y] in viewport pixels. */
    roomViewport: (xy) => stage.toViewport(xy),
    /** What the stage wrote under each marker: [{id, name, detail}]. */
    stageLabels: () => stage.drawnLabels,
    /** Your input: its gain (dB) and device (deviceId, "" for the default). */
    input: () => {
      const input = page.input();
      return input ? { gainDb: input.gainDb, deviceId: input.deviceId } : null;
    },
    send: (message) => page.signaling()?.send(message),
    drop: () => page.signaling()?.drop(),
  };
}
