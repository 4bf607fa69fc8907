"""No clicks when sources move, at every frame size a room may tick at.

Click metric: the largest sample-to-sample step ``max |y[n] − y[n−1]|`` of the moving render,
divided by the largest step of the same signal rendered static at each of 24 azimuths around
the listener (the loudest static render bounds what smooth motion can produce). The input is
a 1 kHz sine, whose smooth steps are small (2π·1000/48000 ≈ 0.13 of its amplitude), so a
discontinuity of the order of the amplitude shows up as a ratio of several. A static render
does not depend on the frame size (overlap-save is exact), so one bound serves every size;
shorter frames crossfade over fewer samples, and the ratio must hold all the same.
"""

from __future__ import annotations

import numpy as np
import pytest

from dsp.offline import render_mono
from hrtf.constants import FRAME, SAMPLE_RATE
from tests.helpers.render import FRAMES

SKIP = 4 * FRAME
CLICK_RATIO_MAX = 1.10
#: Where the jump test's source moves: a boundary of every frame size (10 default frames).
JUMP = 10 * FRAME


def sine(seconds: float, freq: float = 1000.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def max_step(y: np.ndarray) -> float:
    return float(np.abs(np.diff(y[SKIP:-FRAME], axis=0)).max())


@pytest.fixture(scope="module")
def static_bound(kemar):
    x = sine(0.3)
    return max(max_step(render_mono(x, kemar, azimuth_deg=az, limit=False))
               for az in np.arange(0, 360, 15))


@pytest.mark.parametrize("frame", FRAMES)
def test_source_orbiting_every_2_s_does_not_click(kemar, static_bound, frame):
    y = render_mono(sine(2.2), kemar, azimuth_deg=0.0, orbit_s=2.0, limit=False, frame=frame)
    assert max_step(y) / static_bound <= CLICK_RATIO_MAX


def jump_render(hrirs, crossfade: bool, frame: int = FRAME) -> np.ndarray:
    """Hard left for 10 default frames, then hard right: crossfaded by the engine (in frames of
    ``frame`` samples), or spliced."""
    x = sine(0.4)
    left = render_mono(x, hrirs, azimuth_deg=90.0, limit=False)
    right = render_mono(x, hrirs, azimuth_deg=-90.0, limit=False)
    cut = JUMP + 317  # mid-frame for the splice, so the jump lands off a zero crossing
    if not crossfade:
        return np.concatenate([left[:cut], right[cut:]])
    from dsp.geometry import Scene
    from dsp.renderer import Renderer

    renderer = Renderer(hrirs, 1, 1, frame=frame)
    frames = []
    for k in range(len(left) // frame):
        az = 90.0 if k * frame < JUMP else -90.0
        pos = [np.cos(np.radians(az)), np.sin(np.radians(az)), 0.0]
        block = np.zeros((1, frame), np.float32)
        chunk = x[k * frame:(k + 1) * frame]
        block[0, : len(chunk)] = chunk
        frames.append(renderer.render_unlimited(Scene.create([0, 0, 0], pos), block)[0])
    return np.concatenate(frames)


@pytest.mark.parametrize("frame", FRAMES)
def test_jump_from_hard_left_to_hard_right_is_crossfaded(kemar, static_bound, frame):
    y = jump_render(kemar, crossfade=True, frame=frame)
    assert max_step(y) / static_bound <= CLICK_RATIO_MAX


def test_click_metric_catches_an_unfaded_jump(kemar, static_bound):
    assert max_step(jump_render(kemar, crossfade=False)) / static_bound > 2.0
