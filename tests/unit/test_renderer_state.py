"""The renderer between ticks: slots reused, misbehaving sources, the first tick."""

from __future__ import annotations

import numpy as np

from dsp.geometry import Scene
from dsp.offline import render_mono
from dsp.renderer import Renderer
from hrtf.constants import FRAME


def scene3():
    return Scene.create([[0, 0, 0], [1, 1, 0]], [[2, 0, 0], [0, 2, 0], [-1, -1, 1]],
                        listener_yaw_deg=[0, 45])


def noise(rng, sources=3):
    return (rng.standard_normal((sources, FRAME)) * 0.1).astype(np.float32)


def test_a_reset_source_slot_forgets_the_old_sources_audio(kemar, rng):
    frames = [noise(rng) for _ in range(4)]
    frames[3][1] = 0.0  # the new occupant of slot 1 is silent on its first tick
    reused, never = Renderer(kemar, 2, 3), Renderer(kemar, 2, 3)
    for k in range(3):
        reused.render(scene3(), frames[k])
        without_1 = frames[k].copy()
        without_1[1] = 0.0
        never.render(scene3(), without_1)
    reused.reset_source(1)
    np.testing.assert_allclose(reused.render(scene3(), frames[3]),
                               never.render(scene3(), frames[3]), atol=1e-6)


def test_a_reset_listener_slot_fades_in_again(kemar, rng):
    renderer = Renderer(kemar, 2, 3)
    frame = np.full((3, FRAME), 0.05, np.float32)
    for _ in range(3):
        renderer.render_unlimited(scene3(), frame)
    renderer.reset_listener(0)
    out = renderer.render_unlimited(scene3(), frame)
    assert np.abs(out[0, :32]).max() < 0.05 * np.abs(out[0, -32:]).max()
    np.testing.assert_allclose(out[1, :32], out[1, -32:], rtol=1e-3)  # the other one is steady


def test_a_new_slot_fades_in_over_one_frame(kemar, rng):
    renderer = Renderer(kemar, 2, 3)
    frame = np.ones((3, FRAME), np.float32) * 0.05
    out = renderer.render_unlimited(scene3(), frame)
    edges = np.abs(out[:, :32]).max(), np.abs(out[:, -32:]).max()
    assert edges[0] < 0.05 * edges[1]


def test_nan_from_one_source_silences_only_that_source(kemar, rng):
    renderer = Renderer(kemar, 2, 3)
    clean = Renderer(kemar, 2, 3)
    for tick in range(4):
        frame = noise(rng)
        bad = frame.copy()
        if tick == 1:
            bad[2, 100] = np.nan
            bad[0, 5] = np.inf
        out = renderer.render(scene3(), bad)
        assert np.all(np.isfinite(out))
        if tick == 1:
            frame[[0, 2]] = 0.0
        np.testing.assert_allclose(out, clean.render(scene3(), frame), atol=1e-6)
    assert renderer.rejected_frames.tolist() == [1, 0, 1]


def test_offline_render_starts_at_full_level(kemar):
    click = np.zeros(FRAME * 20, np.float32)
    click[0] = click[FRAME * 10] = 0.5
    y = render_mono(click, kemar, azimuth_deg=30.0, limit=False)
    first = np.sum(y[:FRAME] ** 2)
    later = np.sum(y[FRAME * 10:FRAME * 11] ** 2)
    assert abs(first - later) / later < 1e-4


def test_zero_sources_render_silence(kemar):
    renderer = Renderer(kemar, 2, 0)
    scene = Scene.create([[0, 0, 0], [1, 0, 0]], np.zeros((0, 3)))
    out = renderer.render(scene, np.zeros((0, FRAME), np.float32))
    assert out.shape == (2, FRAME, 2) and not out.any()
