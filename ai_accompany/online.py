"""``spatialjam ai eval --online``: the accompanist scored on what players hear, tune by tune.

Each held-out tune (:mod:`ai_accompany.tunes`) is played on the electric piano and goes
through the live path, faster than real time: the room's 16 kHz analysis downmix
(:class:`~dsp.downmix.AnalysisDownmix`), 20 ms block by block, into the sidecar's
:class:`~ai_accompany.brain.Brain`, which knows only what it has heard so far. The room is at
the tune's tempo with the metronome's beat grid and a bar of count-in, as a room whose
metronome is on. A note the brain decides reaches the server :data:`ANSWER_MS` after the
block it heard; one that should already have started by then is late and dropped, as the
server drops it.

What the AI played is then scored against what the melody does *at that moment*, on a 10 ms
grid (:func:`score`):

- ``harmony``: the share of the AI's sounding notes consonant with the melody's sounding note
  (intervals mod 12 in {0, 3, 4, 5, 7, 8, 9}), wherever both sound;
- ``chance``: the same for the AI's notes moved by 5 to 15 beats, never whole bars (random,
  seeded): what harmony would score if the AI did not listen at all. ``harmony − chance`` is what
  listening buys;
- ``lag_ms``: how far the AI's notes would have to move earlier to score best (±2 beats,
  16th steps): how far it trails the melody (negative: ahead);
- ``in_key``: the share of its notes, after the melody's first bar, whose pitch class is in
  the tune's key;
- ``rests_filled``: the share of the melody's rests of a beat or longer during which the AI
  sounds;
- ``notes_per_s``; ``grid_lock``: how tightly its onsets sit on the 16th grid (the length of
  the mean phase vector: 1 on the grid, 0 anywhere);
- ``late``: notes that arrived after their start.

Brains (:data:`~ai_accompany.brain.MODEL_KINDS`) are run on the same tunes in the same run:
the shipped networks, the n-gram baseline and a rule-based harmoniser.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from ai_accompany.brain import MODEL_KINDS, Brain, BrainConfig, load_models
from ai_accompany.ipc import ANALYSIS_RATE
from ai_accompany.texture import STEPS_PER_BAR, STEPS_PER_BEAT, step_offset
from ai_accompany.tunes import SETS, Tune, load_set
from ai_accompany.vocab import SCALES
from dsp.downmix import AnalysisDownmix
from dsp.notes import NoteEvent, cut_lines
from dsp.synth import Synth

RATE = 48_000
BLOCK = 960  # room samples per analysis block (20 ms)
#: From the end of a block heard to the server holding the notes decided from it (ms): the
#: room's next 20 ms tick renders from there.
ANSWER_MS = 20.0
#: The room's metronome downbeat (room samples): the tune starts a bar of count-in later.
BEAT_ZERO = 24_000
GRID = 480  # 10 ms
CONSONANT = np.zeros(12, bool)
CONSONANT[[0, 3, 4, 5, 7, 8, 9]] = True
CHANCE_SHIFTS = 16
#: The chance control moves the AI's notes by this many beats: more than a bar, never a whole
#: number of bars (a tune's strains and progressions repeat by bars, so a move by bars can
#: land on the same music and score as if it listened).
CHANCE_BEATS = (5, 6, 7, 9, 10, 11, 13, 14, 15)
SEED = 19


@dataclass
class Performance:
    """A tune and what the AI played with it (room samples)."""

    tune: Tune
    melody: list[NoteEvent]
    ai: list[NoteEvent]
    late: int
    missed_steps: int
    seconds: float


def step_samples(tune: Tune) -> float:
    return 60.0 * RATE / tune.bpm / STEPS_PER_BEAT


def step_time(tune: Tune, s: int) -> float:
    """Room sample of the tune's step ``s`` (after a bar of count-in; swung for a swing tune)."""
    bar_step = STEPS_PER_BAR + tune.first_step + s
    beat, k = divmod(bar_step, STEPS_PER_BEAT)
    return BEAT_ZERO + (beat + step_offset(k, tune.swing)) * STEPS_PER_BEAT * step_samples(tune)


def melody_events(tune: Tune, velocity: float = 0.8) -> list[NoteEvent]:
    out = []
    for s, n, pitch in tune.notes():
        start, end = round(step_time(tune, s)), round(step_time(tune, s + n))
        out.append(NoteEvent(start, max(1, round(0.92 * (end - start))), pitch, velocity,
                             "melody"))
    return out


class Delayed:
    """A brain that hears everything ``blocks`` blocks late (as if it were stamped now): to
    show what the evaluation says of an accompanist that trails the melody."""

    def __init__(self, brain: Brain, blocks: int) -> None:
        self.brain, self._queue = brain, deque(maxlen=blocks + 1)

    def __getattr__(self, name):
        return getattr(self.brain, name)

    def hear(self, sample: int, block: np.ndarray, plan: bool = True):
        self._queue.append(np.asarray(block))
        old = self._queue[0] if len(self._queue) == self._queue.maxlen else block * 0
        return self.brain.hear(sample, old, plan)


def perform(tune: Tune, models: str = "onnx", *, role: str = "accompany",
            style: str | None = None, lead_ms: float | None = None,
            delay_blocks: int = 0, tail_bars: int = 2) -> Performance:
    """Play ``tune`` into a brain (``models``: one of :data:`MODEL_KINDS`) through the live
    listening path; what it decided, as the server would take it."""
    started = time.perf_counter()
    config = BrainConfig(role=role, style=style or tune.style, bpm=tune.bpm,
                         beat_zero=BEAT_ZERO, count_in_beats=STEPS_PER_BAR // STEPS_PER_BEAT,
                         instrument="epiano", seed=SEED)
    if lead_ms is not None:
        config = replace(config, lead_ms=lead_ms)
    melody = melody_events(tune)
    player = Synth("epiano")
    player.schedule(melody)
    end = step_time(tune, tune.steps) + tail_bars * STEPS_PER_BAR * step_samples(tune)
    blocks = int(end // BLOCK) + 1
    ai, late, brain = listen_along((player.render(k * BLOCK, BLOCK) for k in range(blocks)),
                                   config, models, delay_blocks)
    return Performance(tune, melody, ai, late, brain.missed_steps,
                       time.perf_counter() - started)


def listen_along(blocks, config: BrainConfig, models: str = "onnx", delay_blocks: int = 0
                 ) -> tuple[list[NoteEvent], int, Brain]:
    """The room's path for a player's audio (``blocks``: 20 ms of mono 48 kHz each, from room
    sample 0): the notes the AI plays with it, as they sound (:func:`~dsp.notes.cut_lines`,
    without metronome clicks), how many came too late for the server, and the brain."""
    brain = Brain(config, load_models(models))
    hearer = Delayed(brain, delay_blocks) if delay_blocks else brain
    downmix = AnalysisDownmix(ANALYSIS_RATE)
    answer = round(ANSWER_MS * 1e-3 * RATE)
    ai, late = [], 0
    for k, audio in enumerate(blocks):
        start = k * BLOCK
        events, _ = hearer.hear(start, downmix.process(audio))
        for e in events:
            if e.voice == "metronome":
                continue
            if e.start < start + BLOCK + answer:
                late += 1
            else:
                ai.append(e)
    return cut_lines(ai), late, brain


# scoring ----------------------------------------------------------------------------------


def _pitch_classes(events: list[NoteEvent], n: int, shift: int = 0) -> np.ndarray:
    """(n, 12) counts of the pitch classes sounding at each 10 ms grid point, the notes moved
    ``shift`` samples later."""
    out = np.zeros((n, 12), np.int32)
    for e in events:
        a = max(0, -(-(e.start + shift) // GRID))
        b = min(n, -(-(e.end + shift) // GRID))
        if a < b:
            out[a:b, e.pitch % 12] += 1
    return out


def _melody_pc(events: list[NoteEvent], n: int) -> np.ndarray:
    out = np.full(n, -1, np.int64)
    for e in events:
        a, b = -(-e.start // GRID), min(n, -(-e.end // GRID))
        out[a:b] = e.pitch % 12
    return out


def _consonance(mel: np.ndarray, pcs: np.ndarray) -> tuple[float, int]:
    """(sum over grid points of the consonant share, grid points where both sound)."""
    both = (mel >= 0) & (pcs.sum(axis=1) > 0)
    if not both.any():
        return 0.0, 0
    m, p = mel[both], pcs[both]
    intervals = (np.arange(12)[None, :] - m[:, None]) % 12
    good = (p * CONSONANT[intervals]).sum(axis=1)
    return float((good / p.sum(axis=1)).sum()), int(both.sum())


def score(perf: Performance, rng: np.random.Generator | None = None) -> dict:
    """The numbers of one performance, as sums and counts (:func:`pool` turns them into
    shares), so a set pools them note by note."""
    tune, ai = perf.tune, perf.ai
    rng = rng or np.random.default_rng(SEED)
    n = int(max([e.end for e in perf.melody + ai]) // GRID) + 1
    mel = _melody_pc(perf.melody, n)
    step = step_samples(tune)
    harmony = _consonance(mel, _pitch_classes(ai, n))
    bar = STEPS_PER_BAR * step
    beat = STEPS_PER_BEAT * step
    chance = [_consonance(mel, _pitch_classes(ai, n, round(int(rng.choice(CHANCE_BEATS))
                                                           * beat)))
              for _ in range(CHANCE_SHIFTS)]
    lags = list(range(-2 * STEPS_PER_BEAT, 2 * STEPS_PER_BEAT + 1))
    by_lag = [_consonance(mel, _pitch_classes(ai, n, -round(lag * step))) for lag in lags]
    first_bar_end = perf.melody[0].start + bar
    scale = {(tune.key_tonic + d) % 12 for d in SCALES[tune.key_mode]}
    after = [e for e in ai if e.start >= first_bar_end]
    sounding = _pitch_classes(ai, n).sum(axis=1) > 0
    rest, filled = _rests(perf.melody, n, step)
    grid = np.array([step_time(tune, s) for s in range(-STEPS_PER_BAR,
                                                       tune.steps + 3 * STEPS_PER_BAR)])
    onsets = np.array([e.start for e in ai], float)
    nearest = np.abs(onsets[:, None] - grid[None, :]).argmin(axis=1) if len(ai) else []
    phases = 2 * np.pi * (onsets - grid[nearest]) / step if len(ai) else np.zeros(0)
    seconds = (perf.melody[-1].end - perf.melody[0].start) / RATE
    return {
        "harmony": harmony, "chance": (sum(c[0] for c in chance), sum(c[1] for c in chance)),
        "by_lag": {lag: v for lag, v in zip(lags, by_lag, strict=True)},
        "step_ms": 1e3 * step / RATE,
        "in_key": (sum(e.pitch % 12 in scale for e in after), len(after)),
        "rests_filled": (int((rest & sounding).sum()), int(rest.sum())) if filled else (0, 0),
        "notes": len(ai), "seconds": seconds,
        "phase": (float(np.cos(phases).sum()), float(np.sin(phases).sum()), len(phases)),
        "late": perf.late, "missed_steps": perf.missed_steps, "wall_s": perf.seconds,
    }


def _rests(melody: list[NoteEvent], n: int, step: float) -> tuple[np.ndarray, bool]:
    """Grid points inside the melody's rests of a beat or more (between its first note's
    start and its last note's end)."""
    rest = np.zeros(n, bool)
    beat = STEPS_PER_BEAT * step
    for before, after in itertools.pairwise(melody):
        if after.start - before.end >= beat:
            rest[-(-before.end // GRID):-(-after.start // GRID)] = True
    return rest, bool(rest.any())


def pool(scores: list[dict]) -> dict:
    """One set's numbers from its tunes' scores."""

    def share(key: str) -> float | None:
        num = sum(s[key][0] for s in scores)
        den = sum(s[key][1] for s in scores)
        return round(num / den, 3) if den else None

    lags = scores[0]["by_lag"].keys() if scores else []
    curve = {lag: sum(s["by_lag"][lag][0] for s in scores)
             / max(1, sum(s["by_lag"][lag][1] for s in scores)) for lag in lags}
    best = max(curve, key=lambda lag: (curve[lag], -abs(lag))) if curve else 0
    step_ms = float(np.mean([s["step_ms"] for s in scores])) if scores else 0.0
    c = sum(s["phase"][0] for s in scores)
    si = sum(s["phase"][1] for s in scores)
    count = sum(s["phase"][2] for s in scores)
    seconds = sum(s["seconds"] for s in scores)
    harmony, chance = share("harmony"), share("chance")
    return {
        "tunes": len(scores),
        "harmony": harmony, "chance": chance,
        "over_chance": (round(harmony - chance, 3)
                        if harmony is not None and chance is not None else None),
        "lag_ms": round(best * step_ms, 1), "lag_steps": best,
        "in_key": share("in_key"), "rests_filled": share("rests_filled"),
        "notes_per_s": round(sum(s["notes"] for s in scores) / seconds, 2) if seconds else 0.0,
        "grid_lock": round(float(np.hypot(c, si) / count), 3) if count else None,
        "late": sum(s["late"] for s in scores),
        "missed_steps": sum(s["missed_steps"] for s in scores),
        "wall_s": round(sum(s["wall_s"] for s in scores), 1),
        "music_s": round(seconds, 1),
    }


def evaluate_online(sets=SETS, models=MODEL_KINDS, limit: int | None = None,
                    role: str = "accompany", lead_ms: float | None = None) -> dict:
    """Every brain on every set, pooled per set: ``{"sets": {set: {brain: numbers}}}``."""
    report: dict = {"role": role, "answer_ms": ANSWER_MS, "sets": {}}
    for name in sets:
        tunes = load_set(name, limit)
        if not tunes:
            report["sets"][name] = {"missing": f"no {name} tunes (see ai_accompany/tunes.py)"}
            continue
        report["sets"][name] = {
            kind: pool([score(perform(t, kind, role=role, lead_ms=lead_ms)) for t in tunes])
            for kind in models}
    return report


def format_online(report: dict) -> str:
    lines = [f"online, {report['role']}: harmony with the melody sounding then, against the "
             "same notes 5 to 15 beats off (chance)",
             f"{'set':8} {'brain':9} {'tunes':>5} {'harmony':>7} {'chance':>6} {'+':>6} "
             f"{'lag ms':>7} {'in key':>6} {'rests':>6} {'notes/s':>7} {'grid':>5} {'late':>4}"]
    for name, brains in report["sets"].items():
        if "missing" in brains:
            lines.append(f"{name:8} {brains['missing']}")
            continue
        for kind, r in brains.items():
            lines.append(
                f"{name:8} {kind:9} {r['tunes']:5d} {_f(r['harmony']):>7} {_f(r['chance']):>6} "
                f"{_f(r['over_chance']):>6} {r['lag_ms']:7.0f} {_f(r['in_key']):>6} "
                f"{_f(r['rests_filled']):>6} {r['notes_per_s']:7.2f} {_f(r['grid_lock']):>5} "
                f"{r['late']:4d}")
    lines.append("lag: how far its notes trail the melody (best fit); rests: share of the "
                 "melody's rests (a beat or more) it fills; grid: onsets on the 16th grid")
    return "\n".join(lines)


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def run_online(args) -> int:
    report = evaluate_online(sets=args.sets or SETS, models=args.models_online or MODEL_KINDS,
                             limit=args.tunes, role=args.role, lead_ms=args.lead_ms)
    print(json.dumps(report, indent=1) if args.json else format_online(report))
    return 0
