"""The held-out folk tunes of the online evaluation: ``python -m ai_accompany.train.folk``.

Reels and hornpipes in 2/2, 2/4 and 4/4 from Ryan's Mammoth Collection (1883), as music21's
corpus ships it (``ryansMammoth``): every :data:`EVERY`-th such tune by file name, up to
:data:`COUNT`, melody only, quantised to 16ths (the top note of a chord; repeats not
expanded). None of them is trained on. The corpus here has no chord symbols for these tunes,
so the set is scored against its melodies alone. Writes ``models/heldout_folk.npz``, read by
:func:`ai_accompany.tunes.folk` (which needs neither music21 nor torch).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ai_accompany.models import MODELS_DIR
from ai_accompany.tunes import FOLK_FILE
from ai_accompany.vocab import HOLD, MODES, PITCH_HI, PITCH_LO, REST, pitch_token

log = logging.getLogger(__name__)

COUNT = 24
EVERY = 9
METERS = ("2/2", "2/4", "4/4")
#: Quarter notes per minute: a reel or hornpipe at a comfortable session pace.
BPM = 100.0
MAX_STEPS = 512


def melody_tokens(score) -> tuple[np.ndarray, int] | None:
    """(tokens of the top line on the 16th grid, 16ths from the downbeat to the first step);
    None for a tune that does not sit on that grid."""
    part = score.parts[0] if score.parts else score
    notes = part.flatten().notesAndRests
    if not notes:
        return None
    first_measure = part.getElementsByClass("Measure")
    first = 0  # a pickup: the first note lies this far into its (incomplete) bar
    if first_measure and first_measure[0].paddingLeft:
        first = round(float(first_measure[0].paddingLeft) * 4) % 16
    end = round(float(part.highestTime) * 4)
    tokens = np.full(min(end, MAX_STEPS), REST, np.int64)
    for n in notes:
        start = float(n.offset) * 4
        length = float(n.quarterLength) * 4
        if abs(start - round(start)) > 1e-6 or abs(length - round(length)) > 1e-6:
            return None  # triplets or grace notes: off the grid
        a, b = round(start), round(start + length)
        if a >= len(tokens) or b <= a or n.isRest:
            continue
        pitch = max(p.midi for p in n.pitches)
        if not PITCH_LO <= pitch <= PITCH_HI:
            return None
        tie = n.tie is not None and n.tie.type in ("stop", "continue")
        tokens[a] = HOLD if tie and a > 0 and tokens[a - 1] != REST else pitch_token(pitch)
        tokens[a + 1:b] = HOLD
    return tokens, first


def build(out: Path = MODELS_DIR, count: int = COUNT, every: int = EVERY) -> Path:
    from music21 import corpus

    ids, pieces, keys, firsts = [], [], [], []
    eligible = 0
    for path in sorted(corpus.getComposer("ryansMammoth")):
        if len(ids) >= count:
            break
        try:
            score = corpus.parse(path)
        except Exception as exc:  # a file music21 cannot read is left out, and said
            log.warning("%s: %s", path.name, exc)
            continue
        meters = score.recurse().getElementsByClass("TimeSignature")
        if not meters or meters[0].ratioString not in METERS:
            continue
        eligible += 1
        if (eligible - 1) % every:
            continue
        line = melody_tokens(score)
        if line is None:
            continue
        key = score.analyze("key")
        ids.append(f"ryansMammoth/{path.stem}")
        pieces.append(line[0])
        firsts.append(line[1])
        keys.append((key.tonic.pitchClass, MODES.index(key.mode if key.mode in MODES
                                                       else "major")))
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64)
    target = out / FOLK_FILE
    np.savez_compressed(target, ids=np.array(ids), tokens=np.concatenate(pieces).astype(np.int16),
                        offsets=offsets, key_tonic=np.array([k[0] for k in keys], np.int16),
                        key_mode=np.array([k[1] for k in keys], np.int16),
                        first_step=np.array(firsts, np.int16),
                        bpm=np.full(len(ids), BPM), chords=np.full((offsets[-1], 2), -1, np.int16))
    log.info("%d folk tunes (%d steps) to %s", len(ids), offsets[-1], target)
    return target


#: The collections the forecaster learns from (music21's corpus): Ryan's Mammoth (one tune a
#: file) and O'Neill's *Music of Ireland* (1903, music21's ``oneills1850``: 50 to 100 tunes a
#: file). The same tunes go round both, so a tune of either whose title or opening is a
#: held-out tune's is left out too (:func:`held_marks`).
COLLECTIONS = ("ryansMammoth", "oneills1850")
#: Notes of a tune's opening compared (their intervals) to tell the same tune in two books.
OPENING_NOTES = 12


def _scores(collection: str):
    """(id, score) of every tune music21 reads in ``collection`` (the rest are left out)."""
    from music21 import corpus

    for path in sorted(corpus.getComposer(collection)):
        try:
            parsed = corpus.parse(path)
        except Exception:  # unreadable by music21: left out
            continue
        scores = parsed.scores if hasattr(parsed, "scores") and len(parsed.scores) else [parsed]
        for k, score in enumerate(scores):
            yield (f"{collection}/{path.stem}" if len(scores) == 1
                   else f"{collection}/{path.stem}#{k}"), score


def title_mark(title: str | None) -> str:
    """A tune's title reduced to what two books share: its words, no article or kind."""
    words = "".join(c if c.isalpha() else " " for c in (title or "").upper()).split()
    kinds = {"THE", "A", "REEL", "HORNPIPE", "JIG", "MARCH", "POLKA", "NO", "OR"}
    return " ".join(w for w in words if w not in kinds)


def opening_mark(tokens: np.ndarray) -> tuple[int, ...]:
    """The intervals between a melody's first :data:`OPENING_NOTES` notes (transposition-free)."""
    pitches = [int(t) for t in tokens if t >= pitch_token(PITCH_LO)][:OPENING_NOTES]
    return tuple(np.diff(pitches).tolist())


def held_marks(exclude: set[str]) -> tuple[set[str], set[tuple[int, ...]]]:
    """The titles and openings of the held-out tunes ``exclude`` (ids of Ryan's Mammoth)."""
    from music21 import corpus

    titles, openings = set(), set()
    for path in sorted(corpus.getComposer("ryansMammoth")):
        if f"ryansMammoth/{path.stem}" in exclude:
            score = corpus.parse(path)
            titles.add(title_mark(score.metadata.title if score.metadata else None))
            line = melody_tokens(score)
            if line is not None:
                openings.add(opening_mark(line[0]))
    titles.discard("")
    return titles, openings


def _eligible(exclude: set[str]):
    """(id, score, :func:`melody_tokens`) of every tune in a duple metre of :data:`COLLECTIONS`
    on the 16th grid that is not a held-out one (``exclude``), by id, title or opening."""
    titles, openings = held_marks(exclude)
    same = 0
    for collection in COLLECTIONS:
        for name, score in _scores(collection):
            if name in exclude:
                continue
            meters = score.recurse().getElementsByClass("TimeSignature")
            if not meters or meters[0].ratioString not in METERS:
                continue
            line = melody_tokens(score)
            title = title_mark(score.metadata.title if score.metadata else None)
            if title in titles or (line is not None and opening_mark(line[0]) in openings):
                same += 1
                continue
            if line is not None:
                yield name, score, line
    log.info("folk: %d tunes left out as versions of held-out ones", same)


def training_pieces(exclude: set[str], limit: int | None = None) -> list[dict]:
    """Every other such tune as a piece for :mod:`ai_accompany.train.fit` (the melody in the
    soprano column, no chords), cached beside the chorales (``cache_dir()``)."""
    from ai_accompany.train.data import Chorales, cache_dir, concat, load_npz
    from ai_accompany.vocab import CHORD_QUALITIES, NO_CHORD_ROOT

    cache = cache_dir() / f"folk-train-{len(exclude)}-{limit or 'all'}-{len(COLLECTIONS)}.npz"
    if cache.is_file():
        data = load_npz(cache)
    else:
        pieces = []
        for name, score, (tokens, first) in _eligible(exclude):
            if limit and len(pieces) >= limit:
                break
            key = score.analyze("key")
            steps = len(tokens)
            column = np.full((steps, 4), REST, np.int64)
            column[:, 0] = tokens
            pieces.append({"id": name, "tokens": column,
                           "beat_pos": (first + np.arange(steps)) % 16,
                           "chord_root": np.full(steps, NO_CHORD_ROOT),
                           "chord_quality": np.full(steps, CHORD_QUALITIES.index("none")),
                           "key_tonic": key.tonic.pitchClass,
                           "key_mode": MODES.index(key.mode if key.mode in MODES else "major")})
        data: Chorales = concat(pieces)
        cache.parent.mkdir(parents=True, exist_ok=True)
        data.save(cache)
    return [data.chorale(i) for i in range(len(data))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ai_accompany.train.folk", description=__doc__)
    p.add_argument("--out", type=Path, default=MODELS_DIR, metavar="DIR")
    p.add_argument("--count", type=int, default=COUNT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    build(args.out, args.count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
