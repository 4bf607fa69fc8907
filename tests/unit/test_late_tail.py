"""The room's late tail (issue 8): its impulse response and its partitioned convolution."""

from __future__ import annotations

import math

import numpy as np
import pyroomacoustics as pra
import pytest
import scipy.fft
import scipy.signal

from dsp.late_tail import (
    CROSSOVER_OCTAVES,
    FADE_IN_S,
    MAX_TAIL_S,
    LateTail,
    band_magnitudes,
    tail_energy,
    tail_ir,
)
from dsp.room_model import CENTER_FREQS_HZ, PRESETS, room_model
from hrtf.constants import FRAME, SAMPLE_RATE, SPEED_OF_SOUND_M_S
from tests.helpers.render import FRAMES

BY_HAND = {"by-hand 0.5 s": ((10.0, 8.0, 4.0), 0.5), "by-hand 1.5 s": ((10.0, 8.0, 4.0), 1.5)}


def model_named(name: str):
    if name in BY_HAND:
        dims_m, rt60_s = BY_HAND[name]
        return room_model(dims_m=dims_m, rt60_s=rt60_s)
    return room_model(name)


def run(tail: LateTail, send: np.ndarray) -> np.ndarray:
    """``send`` (whole frames) through ``tail`` frame by frame, shape ``(len(send), 2)``."""
    return np.concatenate([tail.process(frame) for frame in send.reshape(-1, tail.frame)])


def impulse_response(model, seed: int = 0) -> np.ndarray:
    """An impulse through the model's LateTail, long enough to ring out, float64."""
    ir = tail_ir(model, seed=seed)
    send = np.zeros((-(-len(ir) // FRAME) + 1) * FRAME, np.float32)
    send[0] = 1.0
    return run(LateTail(ir), send).astype(np.float64)


def kuttruff_energy(dims_m, rt60_s: float, mixing_time_s: float) -> float:
    """16π/A · exp(−13.8 t_mix / T), A = 24 ln 10 · V / (c T): the tail of a room flat in RT60."""
    volume = math.prod(dims_m)
    area = 24 * math.log(10) * volume / (SPEED_OF_SOUND_M_S * rt60_s)
    return 16 * math.pi / area * math.exp(-6 * math.log(10) * mixing_time_s / rt60_s)


def schroeder_t30(energy: np.ndarray) -> float:
    """RT60 from the Schroeder backward integral of an energy envelope: the line fitted
    between −5 and −35 dB, extrapolated to 60 dB (ISO 3382's T30)."""
    energy = energy[: np.flatnonzero(energy)[-1] + 1]
    decay = np.cumsum(energy[::-1])[::-1]
    db = 10 * np.log10(decay / decay[0])
    start, stop = np.argmax(db <= -5), np.argmax(db <= -35)
    t = np.arange(len(energy)) / SAMPLE_RATE
    slope = np.polyfit(t[start:stop], db[start:stop], 1)[0]
    return -60 / slope


def band_only(x: np.ndarray, center_hz: float) -> np.ndarray:
    """``x`` through a zero-phase Hann window in log frequency over ±(½ − w/2) octave around
    ``center_hz``: the part of the octave that only this band of the tail feeds."""
    half = 0.5 - CROSSOVER_OCTAVES / 2
    n = scipy.fft.next_fast_len(2 * len(x), real=True)
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    u = np.clip(np.log2(np.maximum(freqs, 1e-3) / center_hz) / half, -1, 1)
    return scipy.fft.irfft(scipy.fft.rfft(x, n) * (0.5 + 0.5 * np.cos(np.pi * u)), n)[:len(x)]


# --- the impulse response -------------------------------------------------------------------

def test_band_filters_add_to_one_and_each_band_is_alone_near_its_centre():
    mags = band_magnitudes(48_000, CENTER_FREQS_HZ)
    np.testing.assert_allclose(mags.sum(axis=0), 1.0, atol=1e-12)
    assert (mags >= 0).all()
    freqs = np.fft.rfftfreq(48_000, 1 / SAMPLE_RATE)
    half = 0.5 - CROSSOVER_OCTAVES / 2
    for b, fc in enumerate(CENTER_FREQS_HZ):
        alone = (freqs >= fc * 2 ** -half) & (freqs <= fc * 2 ** half)
        np.testing.assert_array_equal(mags[b, alone], 1.0)
    assert mags[0, 0] == 1.0 and mags[-1, -1] == 1.0  # DC and Nyquist belong to a band


@pytest.mark.parametrize("name", ["dry-studio", "concert-hall", "by-hand 0.5 s"])
def test_tail_is_silent_before_the_mixing_time_then_fades_in(name):
    model = model_named(name)
    ir = tail_ir(model)
    assert ir.dtype == np.float32 and ir.ndim == 2 and ir.shape[1] == 2
    start = math.ceil(model.mixing_time_s * SAMPLE_RATE)
    fade = round(FADE_IN_S * SAMPLE_RATE)
    assert not ir[:start].any()
    onset, after = np.abs(ir[start:start + fade // 4]), np.abs(ir[start:start + 2 * fade])
    assert onset.max() < 0.5 * after.max()
    assert (np.abs(ir[start + fade:start + 2 * fade]) > 0).mean() > 0.99


@pytest.mark.parametrize("name", ["dry-studio", "club", "by-hand 1.5 s"])
def test_tail_lasts_until_the_slowest_band_is_60_db_down(name):
    model = model_named(name)
    assert len(tail_ir(model)) == math.ceil(model.rt60_s.max() * SAMPLE_RATE)


def test_tail_is_cut_at_the_longest_allowed():
    model = room_model("club", rt60_s=2.5)  # its 125 Hz band rings about 5 s
    assert model.rt60_s.max() > MAX_TAIL_S
    assert len(tail_ir(model)) == MAX_TAIL_S * SAMPLE_RATE


def test_tail_is_the_same_for_a_seed_and_differs_between_seeds():
    model = room_model("dry-studio")
    np.testing.assert_array_equal(tail_ir(model, seed=3), tail_ir(model, seed=3))
    assert not np.allclose(tail_ir(model, seed=3), tail_ir(model, seed=4))


@pytest.mark.parametrize("name", [*PRESETS, *BY_HAND])
def test_ears_are_decorrelated(name):
    ir = tail_ir(model_named(name)).astype(np.float64)
    left, right = ir[:, 0], ir[:, 1]
    norm = math.sqrt((left @ left) * (right @ right))
    assert abs(left @ right) / norm < 0.2
    lags = round(1e-3 * SAMPLE_RATE)  # ±1 ms
    full = scipy.signal.correlate(left, right, mode="full", method="fft")
    centre = len(left) - 1
    assert np.abs(full[centre - lags:centre + lags + 1]).max() / norm < 0.3


@pytest.mark.parametrize("dims_m", [(10.0, 8.0, 4.0), (4.0, 3.0, 2.5), (40.0, 30.0, 15.0)])
@pytest.mark.parametrize("rt60_s", [0.5, 1.5])
def test_energy_is_kuttruffs_reverberant_energy_after_the_mixing_time(dims_m, rt60_s):
    model = room_model(dims_m=dims_m, rt60_s=rt60_s)
    expected = kuttruff_energy(dims_m, model.rt60_broadband_s, model.mixing_time_s)
    assert tail_energy(model) == pytest.approx(expected, rel=0.05)
    ir = tail_ir(model).astype(np.float64)
    for ear in range(2):
        assert ir[:, ear] @ ir[:, ear] == pytest.approx(expected, rel=0.05)
    out = impulse_response(model)  # and LateTail neither adds nor loses energy
    for ear in range(2):
        assert out[:, ear] @ out[:, ear] == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_energy_of_a_preset_weighs_each_band_by_its_share_of_the_spectrum(name):
    model = room_model(name)
    ir = tail_ir(model).astype(np.float64)
    shares = band_magnitudes(len(ir), model.center_freqs_hz).mean(axis=1)
    assert shares.sum() == pytest.approx(1.0)
    expected = sum(share * kuttruff_energy(model.dims_m, rt60, model.mixing_time_s)
                   for share, rt60 in zip(shares, model.rt60_s, strict=True))
    for ear in range(2):
        assert ir[:, ear] @ ir[:, ear] == pytest.approx(expected, rel=0.05)


# --- its decay, measured through LateTail -----------------------------------------------------

@pytest.mark.parametrize("name", sorted(BY_HAND))
def test_tail_of_a_room_by_hand_decays_at_its_rt60(name):
    """One realisation per ear, broadband: the room is flat in RT60, so broadband is honest."""
    model = model_named(name)
    out = impulse_response(model)
    for ear in range(2):
        mine = schroeder_t30(out[:, ear] ** 2)
        theirs = pra.experimental.measure_rt60(out[:, ear], fs=SAMPLE_RATE, decay_db=30)
        assert mine == pytest.approx(model.rt60_broadband_s, rel=0.10)
        assert theirs == pytest.approx(model.rt60_broadband_s, rel=0.10)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_tail_of_a_preset_decays_at_its_rt60_in_every_band(name):
    """Per band, on the part of each octave that only that band feeds (``band_only``), with
    the decays of both ears and 8 seeds averaged (one noise realisation of a 125 Hz band in
    a 0.3 s room is too short to measure within 10 %). A standard octave filter would see its
    neighbours' decay through its skirts too: the rehearsal room's 500 Hz band, whose 250 Hz
    neighbour rings 1.6× longer, then measures 10–13 % long; broadband, the 8 kHz band's
    share of white noise (three quarters) would dominate."""
    model = room_model(name)
    outs = [impulse_response(model, seed) for seed in range(8)]
    for fc, rt60 in zip(model.center_freqs_hz, model.rt60_s, strict=True):
        energy = sum(band_only(out[:, ear], fc) ** 2 for out in outs for ear in range(2))
        assert schroeder_t30(energy) == pytest.approx(rt60, rel=0.10), f"{fc:g} Hz"


# --- LateTail: the convolution ----------------------------------------------------------------

@pytest.mark.parametrize("length", [1, 500, FRAME, FRAME + 1, 5_000, 20_000])
def test_late_tail_equals_direct_convolution_over_many_frames(length, rng):
    ir = rng.standard_normal((length, 2)).astype(np.float32)
    send = rng.standard_normal(40 * FRAME).astype(np.float32)
    out = run(LateTail(ir), send)
    assert out.shape == (len(send), 2) and out.dtype == np.float32
    for ear in range(2):
        ref = scipy.signal.fftconvolve(send.astype(np.float64), ir[:, ear].astype(np.float64))
        # float32 FFTs and a float32 sum over up to 21 partitions: errors near 2e-7 of the
        # peak were measured; 1e-5 leaves room and still catches any misplaced sample.
        np.testing.assert_allclose(out[:, ear], ref[:len(send)], rtol=0,
                                   atol=1e-5 * np.abs(ref).max())


def test_late_tail_of_a_room_equals_direct_convolution(rng):
    """A real tail starts with silent partitions (skipped) and ends mid-partition."""
    ir = tail_ir(room_model("dry-studio"))
    send = rng.standard_normal(30 * FRAME).astype(np.float32)
    out = run(LateTail(ir), send)
    for ear in range(2):
        ref = scipy.signal.fftconvolve(send.astype(np.float64), ir[:, ear].astype(np.float64))
        np.testing.assert_allclose(out[:, ear], ref[:len(send)], rtol=0,
                                   atol=1e-5 * np.abs(ref).max())


def test_late_tail_has_no_latency():
    ir = np.zeros((3 * FRAME, 2), np.float32)
    ir[0] = (1.0, -0.5)
    ir[FRAME + 7] = (0.25, 0.75)
    tail = LateTail(ir)
    assert tail.latency_samples == 0
    send = np.zeros(3 * FRAME, np.float32)
    send[5] = 1.0
    out = run(tail, send)
    np.testing.assert_allclose(out[5], (1.0, -0.5), atol=1e-6)
    np.testing.assert_allclose(out[FRAME + 12], (0.25, 0.75), atol=1e-6)
    out[[5, FRAME + 12]] = 0.0
    np.testing.assert_allclose(out, 0.0, atol=1e-6)


def test_output_is_continuous_across_frame_boundaries():
    ir = tail_ir(room_model(dims_m=(6.0, 5.0, 3.0), rt60_s=0.4))
    t = np.arange(40 * FRAME) / SAMPLE_RATE
    out = run(LateTail(ir), (0.5 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32))
    steps = np.abs(np.diff(out[20 * FRAME:], axis=0))  # well after the tail has built up
    at_boundary = np.zeros(len(steps), bool)
    at_boundary[FRAME - 1::FRAME] = True
    assert steps[at_boundary].max() <= steps[~at_boundary].max()


def test_tail_rings_out_to_exact_silence():
    ir = tail_ir(room_model("dry-studio"))
    tail = LateTail(ir)
    send = np.zeros((tail.partitions + 4) * FRAME, np.float32)
    send[100] = 1.0
    out = run(tail, send)
    assert np.abs(out[: len(ir)]).max() > 0
    assert not out[(tail.partitions + 2) * FRAME:].any()


def test_reset_forgets_all_input(rng):
    ir = rng.standard_normal((3_000, 2)).astype(np.float32)
    used, fresh = LateTail(ir), LateTail(ir)
    run(used, rng.standard_normal(5 * FRAME).astype(np.float32))
    used.reset()
    send = rng.standard_normal(6 * FRAME).astype(np.float32)
    np.testing.assert_array_equal(run(used, send), run(fresh, send))


@pytest.mark.parametrize("ir", [np.zeros(100), np.zeros((100, 3)), np.zeros((0, 2)),
                                np.array([[0.0, np.nan]]), np.array([[np.inf, 0.0]])])
def test_late_tail_refuses_a_malformed_impulse_response(ir):
    with pytest.raises(ValueError, match="impulse response"):
        LateTail(ir)


@pytest.mark.parametrize("shape", [(FRAME - 1,), (FRAME, 1), (2 * FRAME,)])
def test_late_tail_refuses_a_send_that_is_not_one_frame(shape):
    with pytest.raises(ValueError, match="a send frame is"):
        LateTail(np.ones((10, 2))).process(np.zeros(shape, np.float32))


# --- LateTail at every frame size (issue 17) ---------------------------------------------------

def direct(send: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Both ears of ``send * ir`` in float64, cut to the send's length, ``(len(send), 2)``."""
    return np.column_stack([
        scipy.signal.fftconvolve(send.astype(np.float64), ir[:, ear].astype(np.float64))
        [:len(send)] for ear in range(2)])


@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("length", [1, 500, FRAME, FRAME + 1, 5_000])
def test_late_tail_equals_direct_convolution_at_every_frame_size(frame, length, rng):
    """Heads that sound from the first sample (every stage busy), IRs shorter than a block
    and longer than one; the same 1e-5 of the peak as at the default frame."""
    ir = rng.standard_normal((length, 2)).astype(np.float32)
    send = rng.standard_normal(12 * FRAME).astype(np.float32)
    out = run(LateTail(ir, frame), send)
    ref = direct(send, ir)
    assert out.shape == (len(send), 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("frame", FRAMES)
def test_late_tail_of_a_room_gives_the_same_samples_at_every_frame_size(frame, rng):
    """The same send cut into frames of ``frame`` and of 960 samples: the same output (float32
    sums in another order: 1e-6 of the peak)."""
    ir = tail_ir(room_model("rehearsal-room"))
    send = rng.standard_normal(30 * FRAME).astype(np.float32)
    short, default = run(LateTail(ir, frame), send), run(LateTail(ir), send)
    np.testing.assert_allclose(short, default, rtol=0, atol=1e-6 * np.abs(default).max())
    np.testing.assert_allclose(short, direct(send, ir), rtol=0,
                               atol=1e-5 * np.abs(default).max())


@pytest.mark.parametrize("frame", FRAMES)
def test_late_tail_has_no_latency_at_every_frame_size(frame):
    ir = np.zeros((3 * FRAME, 2), np.float32)
    ir[0] = (1.0, -0.5)
    ir[FRAME + 7] = (0.25, 0.75)
    send = np.zeros(4 * FRAME, np.float32)
    send[FRAME - 3] = 1.0  # late in a block: its echo lands in the block after next
    out = run(LateTail(ir, frame), send)
    np.testing.assert_allclose(out[FRAME - 3], (1.0, -0.5), atol=1e-6)
    np.testing.assert_allclose(out[2 * FRAME + 4], (0.25, 0.75), atol=1e-6)
    out[[FRAME - 3, 2 * FRAME + 4]] = 0.0
    np.testing.assert_allclose(out, 0.0, atol=1e-6)


@pytest.mark.parametrize("frame", FRAMES)
def test_reset_forgets_all_input_at_every_frame_size(frame, rng):
    ir = rng.standard_normal((3_000, 2)).astype(np.float32)
    used, fresh = LateTail(ir, frame), LateTail(ir, frame)
    run(used, rng.standard_normal(5 * FRAME + frame).astype(np.float32))  # mid-block
    used.reset()
    send = rng.standard_normal(6 * FRAME).astype(np.float32)
    out = run(used, send)
    np.testing.assert_allclose(out, run(fresh, send), rtol=0, atol=1e-5 * np.abs(out).max())


@pytest.mark.parametrize("frame", FRAMES)
def test_a_short_frames_tail_has_no_more_partitions_than_the_default_frames(frame):
    """Work, not a timing: partitions of 5 ms would be four times as many, each done four
    times as often. A tail that starts at 20 ms (a club's) leaves only the 960-sample
    partitions, done once per 960 samples as at the default frame."""
    ir = tail_ir(room_model("club"))
    assert LateTail(ir, frame).partitions <= LateTail(ir).partitions


def test_late_tail_refuses_a_send_of_another_frame_size():
    with pytest.raises(ValueError, match=r"a send frame is \(240,\) samples"):
        LateTail(np.ones((10, 2)), 240).process(np.zeros(FRAME, np.float32))
