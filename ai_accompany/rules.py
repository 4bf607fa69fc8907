"""The rule-based accompanist the networks are measured against (no learning, no look-ahead).

At each 16th step it takes the triad that best fits the melody's pitch classes of the last
beat heard, this step's included (diatonic triads of the key once the key is known, all 24
major and minor triads before), keeps its chord when another fits no better, and voices it
close to the last voicing: the root in the bass, the other two tones in the tenor and alto
ranges.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from ai_accompany.texture import STEPS_PER_BEAT
from ai_accompany.vocab import VOICE_RANGES

_MAJOR, _MINOR = (0, 4, 7), (0, 3, 7)
#: Diatonic triads: (degree in semitones above the tonic, intervals).
_DIATONIC = {
    "major": ((0, _MAJOR), (2, _MINOR), (4, _MINOR), (5, _MAJOR), (7, _MAJOR), (9, _MINOR)),
    "minor": ((0, _MINOR), (3, _MAJOR), (5, _MINOR), (7, _MAJOR), (8, _MAJOR), (10, _MAJOR)),
}
_ALL = tuple((r, q) for r in range(12) for q in (_MAJOR, _MINOR))


def _nearest(pc: int, lo: int, hi: int, near: int) -> int:
    options = [p for p in range(lo, hi + 1) if p % 12 == pc]
    return min(options, key=lambda p: abs(p - near))


class TriadRule:
    """Alto, tenor and bass of the best-fitting triad, one 16th step per call, as
    :class:`~ai_accompany.models.Harmoniser` is called."""

    name = "rule-harmoniser"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._heard: deque[int | None] = deque(maxlen=STEPS_PER_BEAT)
        self._chord: tuple[int, tuple[int, ...]] | None = None
        self.sounding: tuple[int | None, int | None, int | None] = (None, None, None)

    def step(self, melody: int | None, lookahead: Sequence[int | None] = (), beat_pos: int = 0,
             *, key: tuple[int, str] | None = None, **_ignored) -> tuple:
        self._heard.append(melody)
        chord = self._choose(key)
        if chord is not None and chord != self._chord:
            self._chord = chord
            self.sounding = self._voice(chord)
        return self.sounding

    def _choose(self, key: tuple[int, str] | None):
        # the newest note counts twice: it is what sounds now
        heard = [*self._heard, self._heard[-1]] if self._heard else []
        pcs = [p % 12 for p in heard if p is not None]
        if not pcs:
            return self._chord or ((key[0], _MAJOR if key[1] == "major" else _MINOR)
                                   if key else None)
        candidates = (tuple(((key[0] + d) % 12, q) for d, q in _DIATONIC[key[1]])
                      if key else _ALL)

        def fit(chord) -> float:
            root, quality = chord
            tones = {(root + i) % 12 for i in quality}
            score = sum(pc in tones for pc in pcs)
            if chord == self._chord:
                score += 0.5  # keep the chord unless another fits better
            if key and root == key[0]:
                score += 0.25
            return score

        return max(candidates, key=fit)

    def _voice(self, chord) -> tuple[int, int, int]:
        root, quality = chord
        alto0, tenor0, bass0 = (p if p is not None else d for p, d in
                                zip(self.sounding, (67, 57, 48), strict=True))
        bass = _nearest(root, 40, 55, bass0)
        upper = [(root + i) % 12 for i in quality[1:]]
        tenor = _nearest(upper[0], *VOICE_RANGES["tenor"], tenor0)
        alto = _nearest(upper[1], max(VOICE_RANGES["alto"][0], tenor + 1),
                        VOICE_RANGES["alto"][1], alto0)
        return alto, tenor, bass
