"""Textures: when the accompanist's voices sound within a bar, style by style (no I/O).

The harmoniser decides *what* the three accompanying voices (alto, tenor, bass) would sing at
every 16th-note step; a texture decides *when* they sound and for how long. A texture is a
bar of :class:`Hit` s: at 16th ``step`` of the bar the named voices strike the pitches the
harmoniser holds at that step and keep them ``steps`` 16ths (times ``legato``). Because each
hit's length is fixed by the texture, a hit is decided just before it sounds (the room's
decision lead), from the newest melody heard, and never needs to be taken back.

Styles (:data:`STYLES`):

- ``chorale``: all three voices on every beat, held (the harmoniser's own idiom);
- ``folk``: "oom-pah": the bass on beats 1 and 3, the upper voices on 2 and 4, short;
- ``pop``: the bass on 1 and 3 with a push on the "and" of 2; the upper voices on 1, the "and"
  of 2, 3 and the "and" of 4;
- ``blues``: a bass note on every beat, the upper voices on the swung "and" of 2 and 4.

Swing (``blues``) moves each beat's second 8th note to two thirds of the beat.
"""

from __future__ import annotations

from dataclasses import dataclass

STEPS_PER_BEAT = 4
BEATS_PER_BAR = 4
STEPS_PER_BAR = STEPS_PER_BEAT * BEATS_PER_BAR
UPPER = ("alto", "tenor")
ALL = ("alto", "tenor", "bass")


@dataclass(frozen=True)
class Hit:
    """Voices that strike at a step of the bar and how long they hold (16ths)."""

    step: int
    voices: tuple[str, ...]
    steps: int
    legato: float = 0.95


@dataclass(frozen=True)
class Texture:
    name: str
    hits: tuple[Hit, ...]
    swing: bool = False

    def hits_at(self, bar_step: int) -> tuple[Hit, ...]:
        return tuple(h for h in self.hits if h.step == bar_step % STEPS_PER_BAR)


STYLES: dict[str, Texture] = {
    "chorale": Texture("chorale", tuple(Hit(4 * b, ALL, 4) for b in range(BEATS_PER_BAR))),
    "folk": Texture("folk", (Hit(0, ("bass",), 4, 0.8), Hit(4, UPPER, 2, 0.9),
                             Hit(8, ("bass",), 4, 0.8), Hit(12, UPPER, 2, 0.9))),
    "pop": Texture("pop", (Hit(0, ("bass",), 6, 0.9), Hit(6, ("bass",), 2, 0.9),
                           Hit(8, ("bass",), 8, 0.9),
                           Hit(0, UPPER, 3, 0.9), Hit(6, UPPER, 2, 0.8),
                           Hit(8, UPPER, 3, 0.9), Hit(14, UPPER, 2, 0.8))),
    "blues": Texture("blues", (*(Hit(4 * b, ("bass",), 4, 0.9) for b in range(BEATS_PER_BAR)),
                               Hit(6, UPPER, 2, 0.7), Hit(14, UPPER, 2, 0.7)), swing=True),
}
STYLE_NAMES = tuple(STYLES)
DEFAULT_STYLE = "chorale"


def step_offset(step_in_beat: int, swing: bool) -> float:
    """Where a 16th-note step falls within its beat, in beats (swing: the second 8th at 2/3)."""
    if not swing:
        return step_in_beat / STEPS_PER_BEAT
    return (0.0, 1 / 3, 2 / 3, 5 / 6)[step_in_beat]
