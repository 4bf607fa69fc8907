// "Test my latency": clicks through the server into your own mix, one run at a time
// (the recording and the analysis are looptest.js's; the view is latency.js's LoopTestView).

import { verdict } from "./latency.js";
import { explain, findClicks, recordLoop } from "./looptest.js";

export class LatencyTest {
  /**
   * @param {object} deps
   * @param {LoopTestView} deps.view - shows the run's progress and result
   * @param {() => {ctx: AudioContext, pc: RTCPeerConnection, received: MediaStream | AudioNode,
   *   sendInstead?: function, transport: string, frameMs: number,
   *   playoutFromNow?: () => () => number | null} | null} deps.live - the live audio
   *   connection (on the low-latency transport: our playout node, the uplink swap and our
   *   buffer's mean depth over the test), or null when there is none
   * @param {() => boolean} deps.monitorOn - whether self-monitoring is on now
   * @param {(on: boolean) => void} deps.monitor - turn self-monitoring on (unity gain) or off
   * @param {() => boolean} deps.canRestore - whether monitoring may still be switched back
   * @param {() => object | null} deps.serverStages - the server's stages from its last `stats`
   * @param {() => number | null} deps.outputLatencyMs - the audio device's output latency
   * @param {() => void} deps.onDone - after every run, passed or failed
   */
  constructor(deps) {
    this.deps = deps;
    this.running = null; // the promise of the run in progress
    this.last = null; // the last run's result (or {error})
  }

  /** Run the test, or join the run in progress: a promise of its result. */
  run() {
    this.running ??= this.#run().finally(() => {
      this.running = null;
      this.deps.onDone();
    });
    return this.running;
  }

  async #run() {
    const { view, live, monitorOn, monitor, canRestore, serverStages, outputLatencyMs } = this.deps;
    view.started();
    try {
      const connection = live();
      if (!connection) throw new Error("the audio connection is not live");
      // The clicks come back only if you hear yourself: turn self-monitoring on (at unity gain)
      // unless it is on already, and off again afterwards, as it was.
      const monitorWasOn = monitorOn();
      if (!monitorWasOn) monitor(true);
      let recording;
      const playoutMs = connection.playoutFromNow?.() ?? (() => null);
      try {
        recording = await recordLoop({ ...connection, onPlaying: (seconds) => view.playing(seconds) });
      } finally {
        // (Unless you switched it off yourself meanwhile, or left.)
        if (!monitorWasOn && monitorOn() && canRestore()) monitor(false);
      }
      const { left, right, click, onsets, sampleRate } = recording;
      const { found } = findClicks(left, right, click, onsets, sampleRate);
      // The server's stages as its latest `stats` (once a second) gives them.
      const result = explain(recording, found, serverStages(), outputLatencyMs(), playoutMs());
      result.transport = connection.transport;
      result.frame_ms = connection.frameMs;
      result.verdict = verdict(result.round_trip_ms)?.text ?? null;
      this.last = result;
      view.finished(result);
      return result;
    } catch (error) {
      this.last = { error: error.message };
      view.failed(error);
      throw error;
    }
  }
}
