"""``spatialjam ai accompany --in MELODY.wav --out WITH_AI.wav``: practise with the AI offline.

A player's own recording goes through what a room does with it, as ``ai eval --online`` does
with the held-out tunes: the room's 16 kHz analysis downmix, block by block, into the AI
(:func:`ai_accompany.online.listen_along`), which hears only what has been played so far and
decides each note just before it sounds. Its notes are played by the room's synthesiser (the
bass line on the bass outside the chorale style) and the two are rendered binaurally: the
player 30° to the listener's left, the AI 30° to the right (KEMAR by default).
"""

from __future__ import annotations

import argparse
from math import gcd

import numpy as np
import scipy.signal
import soundfile

from ai_accompany.brain import BrainConfig
from ai_accompany.online import BLOCK, listen_along
from hrtf.constants import SAMPLE_RATE
from server.ai.bridge import AiVoice
from server.cli.ai_demo import duet
from server.errors import CliError

#: Longest recording taken (s): the whole file is held in memory.
MAX_SECONDS = 600.0


def read_player(path: str) -> np.ndarray:
    """The recording as mono float32 at 48 kHz, or a :class:`CliError` that says why not."""
    try:
        info = soundfile.info(path)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    if info.duration > MAX_SECONDS:
        raise CliError(f"{path} is {info.duration:.0f} s long; at most {MAX_SECONDS:.0f} s")
    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        g = gcd(rate, SAMPLE_RATE)
        mono = scipy.signal.resample_poly(mono, SAMPLE_RATE // g, rate // g).astype(np.float32)
    if not np.isfinite(mono).all() or not len(mono):
        raise CliError(f"{path} holds no playable audio")
    return mono


def run_ai_accompany(args: argparse.Namespace) -> int:
    from hrtf.library import load_hrtf
    from server.cli.args import hrtf_spec

    player = read_player(args.input)
    tail = 2 * SAMPLE_RATE  # two seconds after the recording: its last notes ring out
    padded = np.concatenate([player, np.zeros(tail + (-(len(player) + tail)) % BLOCK,
                                              np.float32)])
    config = BrainConfig(role=args.role, style=args.style, instrument=args.instrument,
                         bpm=args.bpm, count_in_beats=0)
    notes, late, brain = listen_along(
        (padded[k:k + BLOCK] for k in range(0, len(padded), BLOCK)), config)
    status = brain.status()
    if not notes:
        raise CliError("the AI played nothing: it plays once it has found the beat and heard "
                       f"the key (still waiting for the {status['waiting'] or 'beat'}); a "
                       "longer recording, or --bpm, helps")
    voice = AiVoice(args.instrument, args.ai_gain)  # the room's AI voice, as it plays there
    voice.set_style(args.style)
    voice.deliver([e.to_tuple() for e in notes], -BLOCK)
    ai = np.concatenate([voice.render(k) for k in range(0, len(padded), BLOCK)])
    stereo = duet(padded, ai, load_hrtf(hrtf_spec(args)))
    try:
        soundfile.write(args.out, stereo, SAMPLE_RATE, subtype="PCM_16")
    except (OSError, RuntimeError, soundfile.LibsndfileError) as exc:
        raise CliError(f"cannot write {args.out}: {exc}") from None
    print(f"wrote {args.out}: {len(padded) / SAMPLE_RATE:.1f} s, you 30° left, the AI "
          f"({args.role}, {args.style}, {args.instrument}) 30° right; {len(notes)} AI notes "
          f"({late} too late for a room), each decided {config.lead_ms:g} ms before it "
          f"sounds; heard {status['bpm']} BPM, key {status['key']}, models {status['models']}")
    return 0
