"""``spatialjam ai demo --out demo.wav``: a melody accompanied by the AI, through the whole path.

A player's melody (a short tune in C major on the electric piano, at ``--bpm``) goes frame by
frame through what a room does with it: the humans' 16 kHz downmix
(:class:`~dsp.downmix.AnalysisDownmix`), the sidecar's frames (:mod:`ai_accompany.ipc`) to the
sidecar's own message handler (:class:`~ai_accompany.sidecar.Sidecar`: listening, the models,
each note decided just before it sounds), its note events back to the AI's voice
(:class:`~server.ai.bridge.AiVoice`: the synthesiser on the room clock). The melody sounds 30°
to the listener's left, the AI 30° to the right, through the binaural engine (KEMAR by default).
Only the process boundary and the network are left out: the sidecar answers at once here, where
in a room it answers a few milliseconds later.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import scipy.io.wavfile

from ai_accompany.ipc import ANALYSIS_RATE, FrameReader, encode_audio
from ai_accompany.sidecar import Sidecar
from dsp.downmix import AnalysisDownmix
from dsp.notes import NoteEvent
from dsp.offline import render_mono
from dsp.synth import Synth
from hrtf.constants import FRAME, SAMPLE_RATE
from server.ai.bridge import AiVoice
from server.errors import CliError

log = logging.getLogger(__name__)

#: (beat, MIDI pitch, beats): "Ode to Joy", twice, then a held tonic.
TUNE = [(b, p, d) for b, (p, d) in enumerate(
    [(64, 1), (64, 1), (65, 1), (67, 1), (67, 1), (65, 1), (64, 1), (62, 1),
     (60, 1), (60, 1), (62, 1), (64, 1), (64, 1.5), (62, 0.5), (62, 2)])]


def melody_events(bpm: float, repeats: int = 2, lead_in_beats: int = 4) -> list[NoteEvent]:
    beat = 60.0 * SAMPLE_RATE / bpm
    events, offset = [], lead_in_beats
    for _ in range(repeats):
        t = offset
        for _, pitch, beats in TUNE:
            events.append(NoteEvent(round(t * beat), round(beats * beat * 0.9), pitch, 0.8,
                                    "melody"))
            t += beats
        offset = t + 1
    return events


def run_demo_path(bpm: float, role: str, instrument: str, seconds: float,
                  follow: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """The melody and the AI's part (mono, 48 kHz), and what the AI path reported."""
    player = Synth("epiano")
    player.schedule(melody_events(bpm))
    downmix = AnalysisDownmix(ANALYSIS_RATE)
    sidecar, reader, replies = Sidecar(), FrameReader(), FrameReader()
    voice = AiVoice(instrument)
    room = "demo"
    config = {"role": role, "instrument": instrument, "temperature": 0.8,
              "bpm": 0.0 if follow else bpm}
    sidecar.handle({"type": "config", "room": room, "ai": config}, b"")
    frames = int(seconds * SAMPLE_RATE / FRAME)
    melody = np.zeros(frames * FRAME, np.float32)
    ai = np.zeros(frames * FRAME, np.float32)
    statuses = []
    for k in range(frames):
        start = k * FRAME
        human = player.render(start, FRAME)
        melody[start:start + FRAME] = human
        # The room's tick: the downmix goes out (as a frame on the wire), whatever comes back
        # is scheduled.
        for header, body in reader.feed(encode_audio(room, start, downmix.process(human))):
            for out in [*sidecar.handle(header, body), *sidecar.statuses()]:
                for reply, _ in replies.feed(out):
                    if reply["type"] == "events":
                        voice.deliver(reply["events"], start)
                    elif reply["type"] == "status":
                        statuses.append(reply)
        ai[start:start + FRAME] = voice.render(start)
    report = {"events": voice.events, "late": voice.late,
              "lead_ms_p50": round(voice.lead_ms.percentile(50), 1),
              "status": statuses[-1] if statuses else None}
    sidecar.handle({"type": "remove", "room": room}, b"")
    return melody, ai, report


def duet(player: np.ndarray, ai: np.ndarray, hrirs) -> np.ndarray:
    """The player 30° to the listener's left and the AI 30° to the right, 1.5 m away,
    binaurally (``(n, 2)``), scaled to peak at 0.9 at most."""
    stereo = (render_mono(player, hrirs, azimuth_deg=30.0, distance_m=1.5, limit=False)
              + render_mono(ai, hrirs, azimuth_deg=-30.0, distance_m=1.5, limit=False))
    return stereo * (0.9 / max(float(np.max(np.abs(stereo))), 0.9))


def run_ai_demo(args: argparse.Namespace) -> int:
    from hrtf.library import load_hrtf
    from server.cli.args import hrtf_spec

    melody, ai, report = run_demo_path(args.bpm, args.role, args.instrument, args.seconds,
                                       args.follow)
    if report["events"] == 0:
        raise CliError("the AI played nothing: it plays once it has found the beat and heard "
                       "the key (a few seconds of the tune); give it more --seconds")
    stereo = duet(melody, ai, load_hrtf(hrtf_spec(args)))
    try:
        scipy.io.wavfile.write(args.out, SAMPLE_RATE, (stereo * 32767).astype(np.int16))
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    status = report["status"] or {}
    print(f"wrote {args.out}: {args.seconds:g} s, the melody 30° left, the AI "
          f"({args.role}, {args.instrument}) 30° right; {report['events']} AI notes, "
          f"{report['late']} late, decided {report['lead_ms_p50']} ms ahead (median); heard "
          f"{status.get('bpm')} BPM, key {status.get('key')}, models: {status.get('models')}")
    return 0
