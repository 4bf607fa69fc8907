"""The room model (issue 8): presets, RT60 against pyroomacoustics, rooms by hand, validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pyroomacoustics as pra
import pytest

from dsp.room_model import (
    AIR_ABSORPTION_PER_M,
    ALPHA_RANGE,
    CENTER_FREQS_HZ,
    PRA_WALLS,
    PRESETS,
    WALLS,
    RoomModel,
    eyring_rt60_s,
    room_model,
    wall_areas_m2,
)

RT60_RANGES_S = {
    "dry-studio": (0.2, 0.3),
    "rehearsal-room": (0.5, 0.7),
    "club": (0.8, 1.2),
    "concert-hall": (1.8, 2.3),
}
BANDS = len(CENTER_FREQS_HZ)


def shoebox(dims_m, materials) -> pra.ShoeBox:
    """pyroomacoustics' own room, at our sample rate; ``materials`` maps our wall names."""
    return pra.ShoeBox(list(dims_m), fs=48_000, max_order=0,
                       materials={pw: materials[w] for w, pw in zip(WALLS, PRA_WALLS, strict=True)})


def test_every_preset_named_in_the_issue_exists():
    assert set(PRESETS) == set(RT60_RANGES_S)


@pytest.mark.parametrize("name", sorted(RT60_RANGES_S))
def test_preset_rings_for_its_kind_of_room(name):
    model = room_model(name)
    lo, hi = RT60_RANGES_S[name]
    assert lo <= model.rt60_broadband_s <= hi
    assert model.name == name
    assert model.max_order == 1 and model.wet == 0.5
    assert model.rt60_s.shape == (BANDS,) and model.absorption.shape == (6, BANDS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_walls_carry_pyroomacoustics_absorption(name):
    spec = PRESETS[name]
    room = shoebox(spec["dims_m"], {w: pra.Material(spec["materials"][w]) for w in WALLS})
    theirs = np.array([room.walls[room.wall_names.index(pw)].absorption for pw in PRA_WALLS])
    # pyroomacoustics resamples each material to its bands (125 Hz … 16 kHz at 48 kHz) as we
    # do; we keep the first seven and clip to ALPHA_RANGE. Its coefficients are float32.
    np.testing.assert_allclose(room_model(name).absorption,
                               np.clip(theirs[:, :BANDS], *ALPHA_RANGE), atol=1e-6)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_rt60_per_band_is_eyring_as_pyroomacoustics_computes_it(name):
    """pyroomacoustics' rt60_theory gives one number for a multi-band room, so each band is a
    room of its own with flat materials. Its "eyring" sums −S_w ln(1 − α_w) wall by wall
    (Millington–Sette); Eyring's formula is that of the same room with its absorption spread
    evenly, ᾱ = Σ S_w α_w / S, which we build. They agree to 1e-6 (pyroomacoustics computes
    wall areas in float32). For the uneven real walls, Millington–Sette ≤ Eyring ≤ Sabine
    (−ln(1 − α) is convex and ≥ α), which pins the formula between two others."""
    model = room_model(name)
    ours = eyring_rt60_s(model.dims_m, model.absorption)
    areas = wall_areas_m2(model.dims_m)
    for b in range(BANDS):
        even = areas @ model.absorption[:, b] / areas.sum()
        spread = shoebox(model.dims_m, dict.fromkeys(WALLS, pra.Material(float(even))))
        assert ours[b] == pytest.approx(spread.rt60_theory("eyring"), rel=1e-6)
        walls = shoebox(model.dims_m, {w: pra.Material(float(model.absorption[i, b]))
                                       for i, w in enumerate(WALLS)})
        assert walls.rt60_theory("eyring") <= ours[b] * (1 + 1e-6)
        assert ours[b] <= walls.rt60_theory("sabine") * (1 + 1e-6)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_rt60_adds_air_absorption(name):
    """The presets include air: Eyring's formula is Sabine's with α replaced by −ln(1 − ᾱ), so
    pyroomacoustics' rt60_sabine(S, V, −ln(1 − ᾱ), m, c) is Eyring's with air. (Its
    rt60_eyring adds 4 m V with the wrong sign, and ShoeBox.rt60_theory adds it once per wall:
    neither can be the reference with air.)"""
    model = room_model(name)
    areas = wall_areas_m2(model.dims_m)
    mean_alpha = areas @ model.absorption / areas.sum()
    theirs = [pra.acoustics.rt60_sabine(areas.sum(), model.volume_m3, -math.log1p(-mean_alpha[b]),
                                        AIR_ABSORPTION_PER_M[b], pra.constants.get("c"))
              for b in range(BANDS)]
    np.testing.assert_allclose(model.rt60_s, theirs, rtol=1e-12)
    without_air = eyring_rt60_s(model.dims_m, model.absorption)
    assert (model.rt60_s < without_air).all()


@pytest.mark.parametrize("dims_m", [(10.0, 8.0, 4.0), (2.0, 2.0, 2.0), (60.0, 40.0, 20.0)])
@pytest.mark.parametrize("rt60_s", [0.3, 0.5, 1.5, 4.0])
def test_room_by_hand_rings_as_asked_in_every_band(dims_m, rt60_s):
    model = room_model(dims_m=dims_m, rt60_s=rt60_s)
    assert model.name == "custom"
    assert model.dims_m == dims_m
    np.testing.assert_allclose(model.rt60_s, rt60_s, rtol=0.02)
    assert model.rt60_broadband_s == pytest.approx(rt60_s, rel=0.02)
    assert np.ptp(model.absorption) == 0.0  # one coefficient, every wall, every band


def test_room_by_hand_rings_as_pyroomacoustics_says():
    model = room_model(dims_m=(9.0, 7.0, 3.5), rt60_s=0.8)
    room = shoebox(model.dims_m, dict.fromkeys(WALLS, pra.Material(float(model.absorption[0, 0]))))
    assert room.rt60_theory("eyring") == pytest.approx(0.8, rel=0.02)


def test_preset_in_other_dims_keeps_its_materials():
    club = room_model("club")
    small = room_model("club", dims_m=(10.0, 8.0, 4.0))
    assert small.name == "club" and small.dims_m == (10.0, 8.0, 4.0)
    np.testing.assert_array_equal(small.absorption, club.absorption)
    assert small.rt60_broadband_s < 0.8 * club.rt60_broadband_s  # less volume per absorption


@pytest.mark.parametrize(("name", "rt60_s"), [("club", 1.5), ("club", 0.5),
                                              ("concert-hall", 3.0), ("dry-studio", 0.4)])
def test_preset_with_rt60_scales_its_absorption(name, rt60_s):
    preset = room_model(name)
    model = room_model(name, rt60_s=rt60_s)
    assert model.rt60_broadband_s == pytest.approx(rt60_s, rel=0.02)
    lo, hi = ALPHA_RANGE
    assert (model.absorption >= lo).all() and (model.absorption <= hi).all()
    inside = (preset.absorption > lo) & (preset.absorption < hi) & \
        (model.absorption > lo) & (model.absorption < hi)
    ratio = model.absorption[inside] / preset.absorption[inside]
    assert np.ptp(ratio) < 1e-9  # one factor for every wall and band that was not clipped


def test_model_geometry():
    model = room_model("rehearsal-room")
    lo, hi = model.bounds_m()
    np.testing.assert_array_equal(lo, [-4.0, -3.0, 0.0])
    np.testing.assert_array_equal(hi, [4.0, 3.0, 3.2])
    assert model.volume_m3 == pytest.approx(8 * 6 * 3.2)
    assert model.surface_m2 == pytest.approx(2 * (48 + 8 * 3.2 + 6 * 3.2))
    sabine = wall_areas_m2(model.dims_m) @ model.absorption
    assert model.absorption_area_m2 == pytest.approx((sabine[2] + sabine[3]) / 2)
    assert model.rt60_broadband_s == pytest.approx((model.rt60_s[2] + model.rt60_s[3]) / 2)


@pytest.mark.parametrize(("name", "expected_s"), [
    ("dry-studio", 0.020),                                # √90 ≈ 9.5 ms, clamped up
    ("club", math.sqrt(20 * 14 * 6) * 1e-3),             # √1680 ≈ 41 ms (Polack)
    ("concert-hall", math.sqrt(44 * 24 * 17) * 1e-3),    # √17952 ≈ 134 ms
])
def test_mixing_time_is_polack_clamped(name, expected_s):
    assert room_model(name).mixing_time_s == pytest.approx(expected_s)


def test_mixing_time_of_the_largest_room_is_clamped_down():
    assert room_model(dims_m=(60, 60, 30), rt60_s=3.0).mixing_time_s == pytest.approx(0.150)


def test_reflection_gains_are_pressure_coefficients_over_250_hz_to_4_khz():
    model = room_model("concert-hall")
    mid = model.absorption[:, 1:6].mean(axis=1)
    np.testing.assert_allclose(model.reflection_gains(), np.sqrt(1 - mid))
    assert model.reflection_gains()[WALLS.index("floor")] < 0.5  # the audience swallows sound
    assert model.reflection_gains()[WALLS.index("ceiling")] > 0.9


def test_describe_is_json_and_rounds_rt60():
    info = room_model("club", max_order=2, wet=0.3).describe()
    assert json.loads(json.dumps(info)) == {"name": "club", "dims_m": [20.0, 14.0, 6.0],
                                            "rt60_s": 1.0, "max_order": 2, "wet": 0.3}


def test_with_wet_changes_only_the_wet_level():
    model = room_model("club")
    wetter = model.with_wet(0.8)
    assert wetter.wet == 0.8 and model.wet == 0.5
    assert wetter.dims_m == model.dims_m and wetter.max_order == model.max_order
    np.testing.assert_array_equal(wetter.rt60_s, model.rt60_s)
    with pytest.raises(ValueError, match="wet must be between 0 and 1"):
        model.with_wet(1.5)


def test_model_arrays_are_read_only():
    model = room_model("club")
    with pytest.raises(ValueError, match="read-only"):
        model.absorption[0, 0] = 0.5
    with pytest.raises(ValueError, match="read-only"):
        model.rt60_s[0] = 9.0


def test_model_refuses_arrays_of_the_wrong_shape():
    with pytest.raises(ValueError, match="absorption must be"):
        RoomModel("custom", (5.0, 5.0, 3.0), np.full((5, BANDS), 0.2), CENTER_FREQS_HZ,
                  np.full(BANDS, 0.5), 1, 0.5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"preset": "cathedral"}, "unknown room preset 'cathedral': choose one of dry-studio, "
                              "rehearsal-room, club, concert-hall"),
    ({"dims_m": (1.0, 5.0, 3.0), "rt60_s": 0.5}, r"dims_m\[0\] must be between 2 and 60 m"),
    ({"dims_m": (5.0, 5.0, 61.0), "rt60_s": 0.5}, r"dims_m\[2\] must be between 2 and 60 m"),
    ({"dims_m": (5.0, 5.0), "rt60_s": 0.5}, r"dims_m must be three lengths"),
    ({"dims_m": 5.0, "rt60_s": 0.5}, r"dims_m must be three lengths"),
    ({"dims_m": (5.0, float("nan"), 3.0), "rt60_s": 0.5}, r"dims_m\[1\] must be a finite"),
    ({"dims_m": (5.0, "5", 3.0), "rt60_s": 0.5}, r"dims_m\[1\] must be a number"),
    ({"dims_m": (5.0, 5.0, 3.0), "rt60_s": 0.05}, "rt60_s must be between 0.1 and 4 s"),
    ({"dims_m": (5.0, 5.0, 3.0), "rt60_s": 4.5}, "rt60_s must be between 0.1 and 4 s"),
    ({"preset": "club", "rt60_s": float("inf")}, "rt60_s must be a finite number"),
    ({"preset": "club", "max_order": 3}, "max_order must be 0 .* 1 or 2, got 3"),
    ({"preset": "club", "max_order": -1}, "max_order must be 0"),
    ({"preset": "club", "max_order": 1.5}, "max_order must be 0"),
    ({"preset": "club", "max_order": True}, "max_order must be 0"),
    ({"preset": "club", "wet": 1.2}, "wet must be between 0 and 1"),
    ({"preset": "club", "wet": float("nan")}, "wet must be a finite number"),
    ({"rt60_s": 0.5}, "a custom room needs dims_m and rt60_s .missing dims_m"),
    ({"dims_m": (5.0, 5.0, 3.0)}, "a custom room needs dims_m and rt60_s .missing rt60_s"),
    ({}, "a custom room needs dims_m and rt60_s"),
    ({"dims_m": (60.0, 60.0, 30.0), "rt60_s": 0.1}, "cannot ring for rt60_s=0.1 s"),
    ({"dims_m": (60.0, 60.0, 30.0), "rt60_s": 0.2, "preset": "concert-hall"},
     "the concert-hall in a 60 × 60 × 30 m room cannot ring for rt60_s=0.2 s"),
])
def test_invalid_rooms_are_refused_with_a_message(kwargs, message):
    with pytest.raises(ValueError, match=message):
        room_model(**kwargs)


def test_numpy_integers_are_orders():
    assert room_model("club", max_order=np.int64(2)).max_order == 2
    assert room_model("club", max_order=0).max_order == 0
