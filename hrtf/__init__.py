"""HRTF sets: SOFA loading and validation, direction grid and interpolation, analytic heads.

Coordinates follow SOFA throughout spatialjam: x ahead, y to the left, z up (metres); azimuth
0° straight ahead, +90° to the listener's left; elevation +90° above.
"""

from hrtf.errors import HrtfError
from hrtf.hrirset import HrirSet

__all__ = ["HrirSet", "HrtfError"]
