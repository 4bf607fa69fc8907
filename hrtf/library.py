"""Named HRTF sets: what ``--hrtf``/``--sofa`` and the server's settings resolve to.

``kemar`` (the default) is MIT KEMAR, normal pinna, shipped in ``hrtf/data/`` (Gardner &
Martin, MIT Media Lab, 1994). ``spherical-head`` is the analytic Brown–Duda head
(``spherical-head:0.09`` for a 9 cm radius), as loud on music as KEMAR (:mod:`hrtf.loudness`:
switching between them compares ears, not levels). Anything else is a path to a SOFA file.
"""

from __future__ import annotations

import functools

from hrtf.errors import HrtfError
from hrtf.hrirset import HrirSet
from hrtf.loudness import pink_power
from hrtf.sofa import default_sofa_path, load_sofa
from hrtf.spherical_head import DEFAULT_HEAD_RADIUS_M, spherical_head_set

DEFAULT = "kemar"
BUILT_IN = ("kemar", "spherical-head")


def load_hrtf(spec: str = DEFAULT) -> HrirSet:
    """The HRTF set named by ``spec``: a built-in name or a SOFA file path."""
    if spec == "kemar":
        return load_sofa(default_sofa_path())
    if spec == "spherical-head" or spec.startswith("spherical-head:"):
        _, _, radius = spec.partition(":")
        try:
            radius_m = float(radius) if radius else DEFAULT_HEAD_RADIUS_M
        except ValueError:
            raise HrtfError(f"head radius {radius!r} is not a number of metres") from None
        return _spherical_head(radius_m)
    return load_sofa(spec)


@functools.lru_cache(maxsize=8)
def _spherical_head(radius_m: float) -> HrirSet:
    head = spherical_head_set(radius_m)
    gain = (pink_power(load_hrtf(DEFAULT)) / pink_power(head)) ** 0.5
    return spherical_head_set(radius_m, gain=gain)
