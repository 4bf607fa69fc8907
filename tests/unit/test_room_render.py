"""The renderer with room acoustics and per-listener settings, measured on rendered audio."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.geometry import Scene
from dsp.image_sources import image_positions, image_recipes
from dsp.renderer import Renderer, dry_wet_gains
from dsp.room_model import room_model
from hrtf.constants import FRAME, SAMPLE_RATE, SPEED_OF_SOUND_M_S
from hrtf.library import load_hrtf
from tests.helpers.render import FRAMES

LISTENER = np.array([0.3, 0.4, 1.2])
SOURCE = np.array([1.8, -0.9, 1.5])


@pytest.fixture(scope="module")
def kemar():
    return load_hrtf("kemar")


@pytest.fixture(scope="module")
def sphere():
    return load_hrtf("spherical-head:0.0875")


def impulse_response(renderer: Renderer, scene: Scene, frames: int) -> np.ndarray:
    """Listener 0's (frames · FRAME, 2) response to a unit impulse from source 0."""
    renderer.prime(scene)
    out = []
    for k in range(frames):
        audio = np.zeros((renderer.sources, FRAME), np.float32)
        if k == 0:
            audio[0, 0] = 1.0
        out.append(renderer.render_unlimited(scene, audio)[0])
    return np.concatenate(out)


@pytest.mark.parametrize("max_order", [1, 2])
def test_early_reflections_sit_at_the_image_source_delays(kemar, max_order):
    """Reference panning (one-tap responses) leaves each reflection a single spike: the
    early part (the room minus the same room without images) has spikes at exactly the
    delays the image geometry predicts, and nowhere else."""
    room = room_model(dims_m=(8.0, 6.0, 3.5), rt60_s=0.6, max_order=max_order)
    tail_only = room_model(dims_m=(8.0, 6.0, 3.5), rt60_s=0.6, max_order=0)
    scene = Scene.create(LISTENER, SOURCE)
    responses = []
    for model in (room, tail_only):
        renderer = Renderer(kemar, 1, 1)
        renderer.configure_listener(0, reference=True)
        renderer.set_room(model)
        responses.append(impulse_response(renderer, scene, 4))
    early = np.abs(responses[0] - responses[1]).sum(axis=1)

    lo, hi = room.bounds_m()
    modes, _ = image_recipes(max_order, room.reflection_gains())
    images = image_positions(SOURCE, lo, hi, modes)
    extra_m = np.linalg.norm(images - LISTENER, axis=1) - np.linalg.norm(SOURCE - LISTENER)
    predicted = np.round(extra_m * SAMPLE_RATE / SPEED_OF_SOUND_M_S).astype(int)
    found = np.flatnonzero(early > 1e-6 * early.max())
    assert set(found) == set(predicted), "spikes off the image-source delays"
    # the levels: tests/unit/test_image_sources.py checks each image's gain before panning


def schroeder_rt60(signal: np.ndarray, lo_db=-5.0, hi_db=-25.0) -> float:
    """T20: the Schroeder decay's slope between ``lo_db`` and ``hi_db``, extrapolated to 60 dB."""
    energy = np.cumsum((signal.astype(np.float64) ** 2)[::-1])[::-1]
    decay = 10 * np.log10(energy / energy[0] + 1e-30)
    i0 = int(np.argmax(decay <= lo_db))
    i1 = int(np.argmax(decay <= hi_db))
    t = np.arange(i0, i1) / SAMPLE_RATE
    slope = np.polyfit(t, decay[i0:i1], 1)[0]
    return -60.0 / slope


@pytest.mark.parametrize("rt60_s", [0.5, 1.5])
def test_the_rendered_tail_decays_at_the_rooms_rt60(kemar, rt60_s):
    """Wet only (wet 1: the direct sound is gone), order 0: what remains is the tail."""
    model = room_model(dims_m=(12.0, 9.0, 4.0), rt60_s=rt60_s, max_order=0, wet=1.0)
    renderer = Renderer(kemar, 1, 1)
    renderer.set_room(model)
    ir = impulse_response(renderer, Scene.create(LISTENER, SOURCE), int(1.6 * rt60_s * 50) + 5)
    for ear in range(2):
        measured = schroeder_rt60(ir[:, ear])
        assert measured == pytest.approx(rt60_s, rel=0.10), f"ear {ear}: T20 {measured:.3f} s"


def tone_scene(listeners: int = 2) -> tuple[Scene, np.ndarray]:
    """Two listeners, two sources on either side of them."""
    lp = np.array([[0.0, 0.0, 1.2], [0.5, -0.3, 1.2]])[:listeners]
    sp = np.array([[1.0, 2.0, 1.2], [1.5, -2.0, 1.2]])
    return Scene.create(lp, sp), sp


def render_tones(renderer: Renderer, scene: Scene, frames: int, change_at=None, change=None):
    rng = np.random.default_rng(3)
    out = []
    for k in range(frames):
        if k == change_at:
            change(renderer)
        audio = (0.1 * rng.standard_normal((renderer.sources, FRAME))).astype(np.float32)
        out.append(renderer.render_unlimited(scene, audio))
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("setting", ["hrtf", "acoustics off", "reference"])
def test_a_listeners_setting_changes_their_mix_only(kemar, sphere, setting):
    change = {
        "hrtf": lambda r: r.configure_listener(0, hrirs=sphere),
        "acoustics off": lambda r: r.configure_listener(0, acoustics=False),
        "reference": lambda r: r.configure_listener(0, reference=True),
    }[setting]
    scene, _ = tone_scene()
    outs = []
    for changed in (False, True):
        renderer = Renderer(kemar, 2, 2)
        renderer.set_room(room_model("rehearsal-room"))
        outs.append(render_tones(renderer, scene, 12, 6, change if changed else lambda r: None))
    before, after = outs
    # the other listener: the same mix (float32 arithmetic in other batch shapes: 1e-5)
    np.testing.assert_allclose(after[1], before[1], atol=1e-5)
    # this listener: the same until the change, clearly different after it
    np.testing.assert_allclose(after[0, :6 * FRAME], before[0, :6 * FRAME], atol=1e-5)
    late = slice(8 * FRAME, None)
    difference = np.linalg.norm(after[0, late] - before[0, late]) / np.linalg.norm(before[0, late])
    assert difference > 0.2


def test_acoustics_off_is_the_dry_mix(kemar):
    scene, _ = tone_scene()
    dry = render_tones(Renderer(kemar, 2, 2), scene, 6)
    renderer = Renderer(kemar, 2, 2)
    renderer.set_room(room_model("club"))
    renderer.configure_listener(1, acoustics=False)
    wet = render_tones(renderer, scene, 6)
    np.testing.assert_allclose(wet[1], dry[1], atol=1e-5)
    assert np.linalg.norm(wet[0] - dry[0]) > 0.1 * np.linalg.norm(dry[0])


def test_reference_mode_is_plain_panning(kemar):
    """A source hard left: the reference puts nothing in the right ear; KEMAR does."""
    scene = Scene.create([0, 0, 1.2], [0, 2, 1.2])
    ir = {}
    for reference in (False, True):
        renderer = Renderer(kemar, 1, 1)
        renderer.configure_listener(0, reference=reference)
        ir[reference] = impulse_response(renderer, scene, 2)
    assert np.abs(ir[True][:, 1]).max() < 1e-9 * np.abs(ir[True][:, 0]).max()  # cos(π/2) in floats
    assert np.abs(ir[True][:, 0]).max() > 0
    assert np.abs(ir[False][:, 1]).max() > 0.01 * np.abs(ir[False][:, 0]).max()


@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("setting", ["hrtf", "reference", "room"])
def test_switching_settings_does_not_click(kemar, sphere, setting, frame):
    """A 220 Hz tone's sample-to-sample step stays under what the tone itself makes, at
    every frame size (the change lands after 15 default frames, a boundary of each)."""
    change = {
        "hrtf": lambda r: r.configure_listener(0, hrirs=sphere),
        "reference": lambda r: r.configure_listener(0, reference=True),
        "room": lambda r: r.set_room(room_model("concert-hall")),
    }[setting]
    scene = Scene.create([0, 0, 1.2], [1.0, 1.5, 1.2])
    renderer = Renderer(kemar, 1, 1, frame=frame)
    renderer.set_room(room_model("dry-studio"))
    t = np.arange(30 * FRAME) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    out = []
    for k in range(30 * FRAME // frame):
        if k * frame == 15 * FRAME:
            change(renderer)
        out.append(renderer.render_unlimited(scene, tone[None, k * frame:(k + 1) * frame])[0])
    y = np.concatenate(out)[10 * FRAME:]
    steps = np.abs(np.diff(y, axis=0)).max(axis=0)
    peak = np.abs(y).max(axis=0)
    # a 220 Hz sine of amplitude A steps at most 2πf/fs·A per sample; a click steps far more
    assert np.all(steps <= 1.5 * 2 * np.pi * 220 / SAMPLE_RATE * peak)


@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("motion", ["walk", "jumps"])
def test_moving_sources_do_not_click_in_a_room(kemar, motion, frame):
    """Walking at 1.4 m/s (every image's delay moves a sample or a few a tick) or jumping
    1.5 m every 100 ms: the taps crossfade within the frame, and a 220 Hz tone stays as
    smooth as itself, at every frame size."""
    renderer = Renderer(kemar, 1, 1, frame=frame)
    renderer.set_room(room_model("rehearsal-room"))
    ticks = 40 * FRAME // frame
    t = np.arange(ticks * frame) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    out = []
    for k in range(ticks):
        walked = 1.4 * k * frame / SAMPLE_RATE
        x = -2.0 + (walked if motion == "walk" else 1.5 * ((k * frame // (5 * FRAME)) % 2))
        scene = Scene.create([0.0, 0.0, 1.2], [x, 1.0, 1.4])
        if k == 0:
            renderer.prime(scene)
        out.append(renderer.render_unlimited(scene, tone[None, k * frame:(k + 1) * frame])[0])
    y = np.concatenate(out)[10 * FRAME:]
    steps = np.abs(np.diff(y, axis=0)).max(axis=0)
    peak = np.abs(y).max(axis=0)
    assert np.all(steps <= 1.5 * 2 * np.pi * 220 / SAMPLE_RATE * peak)


def test_dry_wet_balance():
    assert dry_wet_gains(0.5) == (1.0, 1.0)
    assert dry_wet_gains(0.0) == (1.0, 0.0)
    assert dry_wet_gains(1.0) == (0.0, 1.0)


def test_many_pairs_with_acoustics_render_finite_frames(kemar):
    """The 20×20 case the benchmark times (bench/test_acoustics_benchmarks.py), for
    correctness only: right shape, finite, and louder than dry (the room adds energy)."""
    rng = np.random.default_rng(0)
    lp = np.column_stack([rng.uniform(-3, 3, (20, 2)), np.full(20, 1.2)])
    scene = Scene.create(lp, lp)
    audio = (0.05 * rng.standard_normal((20, FRAME))).astype(np.float32)
    energy = {}
    for acoustic in (False, True):
        renderer = Renderer(kemar, 20, 20)
        if acoustic:
            renderer.set_room(room_model("rehearsal-room"))
        frames = [renderer.render(scene, audio) for _ in range(5)]
        assert all(f.shape == (20, FRAME, 2) and np.isfinite(f).all() for f in frames)
        energy[acoustic] = float(np.sum(frames[-1] ** 2))
    assert energy[True] > energy[False]


@pytest.mark.parametrize("frame", FRAMES)
def test_a_still_scene_in_a_room_renders_the_same_samples_at_every_frame_size(kemar, frame):
    """Direct sound, early reflections and late tail are all exact convolutions: with nothing
    moving, cutting the signal into frames of ``frame`` or 960 samples gives the same mix
    (float32 sums in another order: 1e-5 of the peak)."""
    rng = np.random.default_rng(17)
    scene = Scene.create([[0.3, 0.4, 1.2], [-1.0, 0.5, 1.6]], [[1.8, -0.9, 1.5], [0.0, 2.0, 1.2]],
                         listener_yaw_deg=[10.0, -70.0])
    x = (0.1 * rng.standard_normal((2, 12 * FRAME))).astype(np.float32)
    outs = {}
    for size in {frame, FRAME}:
        renderer = Renderer(kemar, 2, 2, frame=size)
        renderer.set_room(room_model("rehearsal-room"))
        renderer.prime(scene)
        outs[size] = np.concatenate([renderer.render_unlimited(scene, x[:, k:k + size])
                                     for k in range(0, x.shape[1], size)], axis=1)
    dry = Renderer(kemar, 2, 2)
    dry.prime(scene)
    dry_out = np.concatenate([dry.render_unlimited(scene, x[:, k:k + FRAME])
                              for k in range(0, x.shape[1], FRAME)], axis=1)
    peak = np.abs(outs[FRAME]).max()
    assert np.abs(outs[FRAME] - dry_out).max() > 0.05 * peak  # the room is there to compare
    np.testing.assert_allclose(outs[frame], outs[FRAME], rtol=0, atol=1e-5 * peak)
