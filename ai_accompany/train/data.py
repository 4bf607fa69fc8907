"""The Bach chorales of music21's corpus on a 16th-note grid, cached, split and transposed.

A chorale becomes a :class:`Chorales` record: for every 16th-note step the soprano, alto, tenor
and bass tokens (``REST`` / ``HOLD`` / onset pitch, see :mod:`ai_accompany.vocab`), the step's
position in its bar, the chord of its beat (template matching over the four voices' pitch
classes, duration-weighted over the quarter-note beat, see :func:`beat_chords`) and the key of the
chorale (music21's Krumhansl–Schmuckler estimate over the whole piece).

music21 is imported only by :func:`parse_corpus`; everything else is NumPy, so eval and the tests
can read the committed held-out file (:func:`load_npz`) without it.
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ai_accompany.vocab import (
    CHORD_QUALITIES,
    FIRST_PITCH_TOKEN,
    HOLD,
    MODES,
    NO_CHORD_ROOT,
    PITCH_HI,
    PITCH_LO,
    REST,
    STEPS_PER_BEAT,
    match_chord,
    pitch_token,
    sounding,
)

log = logging.getLogger(__name__)

CACHE_VERSION = 1
PART_NAMES = ("Soprano", "Alto", "Tenor", "Bass")
HELDOUT_MODULUS = 10  # one chorale (melody group) in ten is held out


def cache_dir() -> Path:
    """``$SPATIALJAM_CACHE/chorales`` or ``~/.cache/spatialjam/chorales`` (never committed)."""
    root = os.environ.get("SPATIALJAM_CACHE") or Path.home() / ".cache" / "spatialjam"
    return Path(root) / "chorales"


@dataclass
class Chorales:
    """Chorales concatenated along the step axis; chorale ``i`` is ``offsets[i]:offsets[i+1]``.

    Attributes
    ----------
    ids : list[str]          music21 corpus paths, e.g. ``"bach/bwv269"``
    tokens : (N, 4) int16    soprano, alto, tenor, bass tokens
    beat_pos : (N,) int16    16ths since the bar's downbeat
    chord_root : (N,) int16  0..11, 12 = no chord
    chord_quality : (N,) int16  index into CHORD_QUALITIES
    key_tonic : (C,) int16, key_mode : (C,) int16  per chorale (index into MODES)
    offsets : (C + 1,) int64
    """

    ids: list[str]
    tokens: np.ndarray
    beat_pos: np.ndarray
    chord_root: np.ndarray
    chord_quality: np.ndarray
    key_tonic: np.ndarray
    key_mode: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def steps(self) -> int:
        return int(self.offsets[-1])

    def chorale(self, i: int) -> dict:
        """Chorale ``i`` as a dict of per-step arrays plus its key."""
        a, b = self.offsets[i], self.offsets[i + 1]
        return {"id": self.ids[i], "tokens": self.tokens[a:b], "beat_pos": self.beat_pos[a:b],
                "chord_root": self.chord_root[a:b], "chord_quality": self.chord_quality[a:b],
                "key_tonic": int(self.key_tonic[i]), "key_mode": int(self.key_mode[i])}

    def select(self, ids: list[str]) -> Chorales:
        """The chorales named in ``ids``, in that order (``KeyError`` for an unknown id)."""
        index = {cid: i for i, cid in enumerate(self.ids)}
        return concat([self.chorale(index[cid]) for cid in ids])

    def save(self, path: Path) -> None:
        np.savez_compressed(path, version=CACHE_VERSION, ids=np.array(self.ids),
                            tokens=self.tokens, beat_pos=self.beat_pos,
                            chord_root=self.chord_root, chord_quality=self.chord_quality,
                            key_tonic=self.key_tonic, key_mode=self.key_mode,
                            offsets=self.offsets)


def concat(pieces: list[dict]) -> Chorales:
    """Build a :class:`Chorales` from per-chorale dicts as :meth:`Chorales.chorale` returns."""
    lengths = [len(p["tokens"]) for p in pieces]

    def cat(key: str) -> np.ndarray:
        if not pieces:
            return np.zeros((0,), np.int16)
        return np.concatenate([np.asarray(p[key], dtype=np.int16) for p in pieces])

    return Chorales(
        ids=[p["id"] for p in pieces],
        tokens=cat("tokens").reshape(-1, 4),
        beat_pos=cat("beat_pos"), chord_root=cat("chord_root"),
        chord_quality=cat("chord_quality"),
        key_tonic=np.array([p["key_tonic"] for p in pieces], dtype=np.int16),
        key_mode=np.array([p["key_mode"] for p in pieces], dtype=np.int16),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def load_npz(path: Path) -> Chorales:
    """Read a file written by :meth:`Chorales.save`; ``ValueError`` for another version."""
    with np.load(path) as z:
        if int(z["version"]) != CACHE_VERSION:
            raise ValueError(f"{path}: chorale data version {int(z['version'])}, "
                             f"expected {CACHE_VERSION}; rebuild it with python -m "
                             "ai_accompany.train")
        return Chorales(ids=[str(s) for s in z["ids"]], tokens=z["tokens"],
                        beat_pos=z["beat_pos"], chord_root=z["chord_root"],
                        chord_quality=z["chord_quality"], key_tonic=z["key_tonic"],
                        key_mode=z["key_mode"], offsets=z["offsets"])


def beat_chords(tokens: np.ndarray, beat_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chord root and quality index per step, one chord per quarter-note beat.

    Each voice adds its sounding pitch class to the beat's weight vector once per step it sounds
    (the bass counts 1.5 times, the onset step of the beat twice); :func:`match_chord` names it.
    """
    snd = sounding(tokens.astype(np.int64))
    roots = np.full(len(tokens), NO_CHORD_ROOT, dtype=np.int16)
    quals = np.full(len(tokens), CHORD_QUALITIES.index("none"), dtype=np.int16)
    t = 0
    while t < len(tokens):
        end = t + 1
        while end < len(tokens) and beat_pos[end] % STEPS_PER_BEAT != 0:
            end += 1
        weights = np.zeros(12)
        for s in range(t, end):
            step_w = 2.0 if s == t else 1.0
            for v in range(4):
                if snd[s, v] >= FIRST_PITCH_TOKEN:
                    pc = (snd[s, v] - FIRST_PITCH_TOKEN + PITCH_LO) % 12
                    weights[pc] += step_w * (1.5 if v == 3 else 1.0)
        bass = snd[t, 3]
        bass_pc = (bass - FIRST_PITCH_TOKEN + PITCH_LO) % 12 if bass >= FIRST_PITCH_TOKEN else None
        root, quality = match_chord(weights, bass_pc)
        roots[t:end] = root
        quals[t:end] = CHORD_QUALITIES.index(quality)
        t = end
    return roots, quals


def _voice_parts(score) -> list | None:
    by_name = {(p.partName or "").strip(): p for p in score.parts}
    if all(n in by_name for n in PART_NAMES):
        return [by_name[n] for n in PART_NAMES]
    if len(score.parts) == 4 and not any(p.partName for p in score.parts):
        return list(score.parts)
    return None


def parse_chorale(score, cid: str) -> dict | None:
    """One music21 score on the 16th grid, or ``None`` if it is not a four-voice chorale."""
    parts = _voice_parts(score)
    if parts is None:
        return None
    total = round(float(score.highestTime) * STEPS_PER_BEAT)
    tokens = np.full((total, 4), REST, dtype=np.int16)
    for v, part in enumerate(parts):
        for n in part.flatten().notes:
            if not n.isNote:
                return None  # a chord inside a voice: not a plain four-voice texture
            start = round(float(n.offset) * STEPS_PER_BEAT)
            end = min(total, round(float(n.offset + n.quarterLength) * STEPS_PER_BEAT))
            if end <= start:
                continue
            pitch = int(n.pitch.midi)
            if not PITCH_LO <= pitch <= PITCH_HI:
                return None
            tied = n.tie is not None and n.tie.type in ("stop", "continue")
            tokens[start, v] = HOLD if tied and start > 0 else pitch_token(pitch)
            tokens[start + 1:end, v] = HOLD
    beat_pos = np.zeros(total, dtype=np.int16)
    for m in parts[0].getElementsByClass("Measure"):
        bar_start = float(m.offset) - float(m.paddingLeft)
        a = round(float(m.offset) * STEPS_PER_BEAT)
        b = min(total, round(float(m.offset + m.duration.quarterLength) * STEPS_PER_BEAT))
        beat_pos[a:b] = np.arange(a, b) - round(bar_start * STEPS_PER_BEAT)
    key = score.analyze("key")
    roots, quals = beat_chords(tokens, beat_pos)
    return {"id": cid, "tokens": tokens, "beat_pos": beat_pos, "chord_root": roots,
            "chord_quality": quals, "key_tonic": int(key.tonic.pitchClass),
            "key_mode": MODES.index(key.mode) if key.mode in MODES else 0}


def parse_corpus(limit: int | None = None) -> Chorales:
    """Parse music21's Bach chorales (local corpus, no network); slow, about a minute."""
    from music21 import corpus

    names = sorted(set(corpus.chorales.Iterator(returnType="filename")))
    pieces = []
    for i, cid in enumerate(names):
        if limit is not None and len(pieces) >= limit:
            break
        piece = parse_chorale(corpus.parse(cid), cid)
        if piece is None:
            log.info("skipping %s: not four plain voices", cid)
            continue
        pieces.append(piece)
        if i % 50 == 0:
            log.info("parsed %d/%d chorales", i, len(names))
    return concat(pieces)


def load_corpus(rebuild: bool = False) -> Chorales:
    """All chorales, from the cache when it is there, else parsed and cached."""
    path = cache_dir() / f"chorales-v{CACHE_VERSION}.npz"
    if path.exists() and not rebuild:
        return load_npz(path)
    data = parse_corpus()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    data.save(tmp)
    tmp.replace(path)
    log.info("cached %d chorales (%d steps) in %s", len(data), data.steps, path)
    return data


def melody_fingerprint(tokens: np.ndarray, notes: int = 24) -> tuple[int, ...]:
    """The soprano's first intervals between onsets: the same tune in another key or setting
    gives the same fingerprint, so its harmonisations land on the same side of the split."""
    onsets = tokens[tokens[:, 0] >= FIRST_PITCH_TOKEN, 0].astype(int)[: notes + 1]
    return tuple(np.diff(onsets).tolist())


def make_split(data: Chorales) -> list[str]:
    """Held-out ids: whole melody groups whose first id (sorted) has CRC-32 ≡ 0 mod 10."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for i, cid in enumerate(data.ids):
        groups.setdefault(melody_fingerprint(data.chorale(i)["tokens"]), []).append(cid)
    held = []
    for members in groups.values():
        first = min(members)
        if zlib.crc32(first.encode()) % HELDOUT_MODULUS == 0:
            held.extend(members)
    return sorted(held)


def transpose(piece: dict, shift: int) -> dict:
    """A chorale moved by ``shift`` semitones (``ValueError`` if a note leaves the vocabulary)."""
    tokens = piece["tokens"].astype(np.int64)
    pitched = tokens >= FIRST_PITCH_TOKEN
    moved = np.where(pitched, tokens + shift, tokens)
    if np.any(pitched & ((moved < FIRST_PITCH_TOKEN)
                         | (moved > FIRST_PITCH_TOKEN + PITCH_HI - PITCH_LO))):
        raise ValueError(f"{piece['id']} transposed by {shift} leaves {PITCH_LO}..{PITCH_HI}")
    root = piece["chord_root"].astype(np.int64)
    return {**piece, "tokens": moved,
            "chord_root": np.where(root < 12, (root + shift) % 12, root),
            "key_tonic": (piece["key_tonic"] + shift) % 12}


def shift_to_key(tonic_pc: int, target_pc: int) -> int:
    """The smallest move (−6 … +5 semitones) that takes ``tonic_pc`` to ``target_pc``."""
    return (target_pc - tonic_pc + 6) % 12 - 6
