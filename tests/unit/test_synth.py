"""The AI musician's synthesiser: notes on their exact sample, in tune, no clicks, no clipping."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from dsp.notes import NoteEvent
from dsp.synth import INSTRUMENTS, LIMIT, Synth, midi_to_hz
from hrtf.constants import FRAME, SAMPLE_RATE

INSTRUMENT_NAMES = tuple(INSTRUMENTS)


def play(synth: Synth, events, samples: int, block: int = FRAME, start: int = 0) -> np.ndarray:
    """Schedule ``events`` and render ``samples`` from ``start`` in blocks of ``block``."""
    synth.schedule(events)
    out = [synth.render(k, min(block, start + samples - k))
           for k in range(start, start + samples, block)]
    return np.concatenate(out)


def release_samples(name: str) -> int:
    return round(INSTRUMENTS[name].release_ms * 1e-3 * SAMPLE_RATE)


def peak_hz(x: np.ndarray, expected_hz: float) -> tuple[float, float]:
    """Frequency of the strongest spectral peak within ±50 cents of ``expected_hz``, and its
    magnitude relative to the spectrum's highest peak. Hann window, 8× zero padding and a
    parabola through the log magnitudes: accurate to well under a cent for an isolated peak."""
    pad = 8 * len(x)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), pad))
    freqs = np.fft.rfftfreq(pad, 1 / SAMPLE_RATE)
    band = np.flatnonzero((freqs > expected_hz * 2 ** (-0.5 / 12))
                          & (freqs < expected_hz * 2 ** (0.5 / 12)))
    i = band[np.argmax(spec[band])]
    a, b, c = np.log(spec[i - 1:i + 2])
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return (i + offset) * SAMPLE_RATE / pad, spec[i] / spec.max()


@pytest.mark.parametrize("name", INSTRUMENT_NAMES)
@pytest.mark.parametrize(("onset", "block"), [(5 * FRAME, FRAME), (5 * FRAME + 1, FRAME),
                                              (6 * FRAME - 1, FRAME), (4321, 441), (999, 1)])
def test_note_begins_on_its_exact_sample(name, onset, block):
    # ``block`` 1 renders sample by sample: the note's first sample is its own render call
    samples = onset + 600 if block == 1 else onset + 3 * FRAME
    out = play(Synth(name), [NoteEvent(onset, 2 * FRAME, 57, 0.8)], samples, block)
    assert np.flatnonzero(out)[0] == onset
    assert not out[:onset].any()


@pytest.mark.parametrize("name", INSTRUMENT_NAMES)
@pytest.mark.parametrize("off", [3 * FRAME, 3 * FRAME + 1, 4 * FRAME - 1, 3 * FRAME + 517])
def test_note_is_released_on_its_exact_sample_and_ends_after_the_release(name, off):
    onset = FRAME + 100
    length = off + release_samples(name) + FRAME
    short = play(Synth(name), [NoteEvent(onset, off - onset, 50, 0.9)], length)
    held = play(Synth(name), [NoteEvent(onset, 10 * FRAME, 50, 0.9)], length)
    # identical until the note-off sample, different from it on
    assert np.flatnonzero(short != held)[0] == off
    end = off + release_samples(name)
    assert np.flatnonzero(short)[-1] == end - 1
    assert not short[end:].any()


# The pad's two sawtooths, ±4 cents apart, resolve into two peaks above A4 in a 0.5 s window.
IN_TUNE_CASES = [(name, pitch) for name in INSTRUMENT_NAMES for pitch in (36, 48, 57, 69, 81)
                 if not (name == "pad" and pitch > 69)]


@pytest.mark.parametrize(("name", "pitch"), IN_TUNE_CASES)
def test_pitch_is_in_tune(name, pitch):
    synth = Synth(name)
    hz = midi_to_hz(pitch)
    out = play(synth, [NoteEvent(FRAME, 40 * FRAME, pitch, 0.7)], 40 * FRAME, start=0)
    settled = out[round(0.3 * SAMPLE_RATE):]  # past every attack
    measured, rel = peak_hz(settled, hz)
    cents = 1200 * math.log2(measured / hz)
    # 3 cents: the bass's falling cutoff adds a phase drift of ≈ −0.05 Hz (−1.3 cents at C2)
    assert abs(cents) < 3.0, f"{name} {pitch}: {cents:+.2f} cents"
    assert rel > 0.1, f"{name} {pitch}: the fundamental is only {rel:.3f} of the loudest peak"


@pytest.mark.parametrize("name", INSTRUMENT_NAMES)
@pytest.mark.parametrize("pitch", [33, 45, 69])
def test_note_on_and_off_do_not_click(name, pitch):
    """A click is a step much larger than the waveform's own. A gate that opened or closed at
    once would step by the full amplitude; the envelope keeps the steps in the first and last
    millisecond of the note to half those of the sounding note, and where the release begins
    to no more than them."""
    onset, off = 1000, 1000 + 20 * FRAME
    ms = SAMPLE_RATE // 1000
    attack = round(INSTRUMENTS[name].attack_ms * 1e-3 * SAMPLE_RATE)
    end = off + release_samples(name)
    out = play(Synth(name), [NoteEvent(onset, off - onset, pitch, 1.0)], end + FRAME)
    step = np.abs(np.diff(out, prepend=0.0))
    body = step[onset + attack:off].max()
    assert step[onset - 1:onset + ms].max() <= 0.5 * body
    assert step[off - 1:off + ms].max() <= body
    assert step[end - ms:end + 1].max() <= 0.5 * body
    assert not out[:onset].any() and not out[end:].any()


def test_late_events_are_dropped_and_counted():
    synth = Synth("organ")
    for k in range(3):
        synth.render(k * FRAME)
    assert synth.position == 3 * FRAME
    accepted = synth.schedule([NoteEvent(3 * FRAME - 1, FRAME, 60, 1.0),
                               NoteEvent(3 * FRAME, FRAME, 64, 1.0)])
    assert (accepted, synth.late) == (1, 1)
    out = synth.render(3 * FRAME)
    assert np.flatnonzero(out)[0] == 0  # the on-time note plays, the late one never does


def test_events_due_inside_a_clock_gap_are_dropped_as_late():
    synth = Synth("organ")
    synth.render(0)
    assert synth.schedule([NoteEvent(2 * FRAME, FRAME, 60, 1.0),
                           NoteEvent(6 * FRAME + 10, FRAME, 60, 1.0)]) == 2
    out = synth.render(5 * FRAME)  # the clock jumped over frames 1..4
    assert synth.late == 1 and not out.any()
    assert np.flatnonzero(synth.render(6 * FRAME))[0] == 10


def test_a_gap_keeps_sounding_notes_on_the_room_clock():
    """A note sounding across a gap resumes where its envelope stands at the new time."""
    events = [NoteEvent(100, 10 * FRAME, 62, 1.0)]
    straight = play(Synth("epiano"), events, 12 * FRAME)
    gapped = Synth("epiano")
    gapped.schedule(events)
    gapped.render(0)
    resumed = gapped.render(4 * FRAME)
    # the oscillator phase differs, the envelope does not: same level, within 5 %
    level = np.abs(straight[4 * FRAME:5 * FRAME]).max()
    assert abs(np.abs(resumed).max() - level) < 0.05 * level
    assert not any(np.any(gapped.render(k * FRAME)) for k in range(15, 17))


def test_render_refuses_to_go_back_in_time():
    synth = Synth()
    synth.render(10 * FRAME)
    with pytest.raises(ValueError, match="before the synth's position"):
        synth.render(10 * FRAME)
    with pytest.raises(ValueError, match="n > 0"):
        synth.render(11 * FRAME, 0)


@pytest.mark.parametrize("name", INSTRUMENT_NAMES)
def test_many_loud_notes_never_clip(name):
    synth = Synth(name, max_voices=32)
    chord = [NoteEvent(FRAME // 2 + 7 * i, 30 * FRAME, 36 + i, 1.0) for i in range(48)]
    out = play(synth, chord, 32 * FRAME)
    assert np.abs(out).max() <= LIMIT + 1e-6
    assert np.abs(out).max() > 0.5 * LIMIT  # and it is still loud
    assert synth.stolen == 16


def test_voice_stealing_releases_the_oldest_notes():
    """40 organ notes, one every 10 ms, 32 voices: the first 8 are stolen. Pitches 40..79: the
    stolen fundamentals (82..123 Hz) lie below every partial of the notes that stay."""
    synth = Synth("organ", max_voices=32)
    events = [NoteEvent(480 * i, 3 * SAMPLE_RATE, 40 + i, 0.25) for i in range(40)]
    out = play(synth, events, 2 * SAMPLE_RATE)
    assert np.abs(out).max() < LIMIT  # quiet enough that the limiter stays out of the way
    assert synth.stolen == 8
    assert synth.voices_in_use == 32  # the stolen notes' short releases are over
    tail = out[SAMPLE_RATE:]
    spec = np.abs(np.fft.rfft(tail * np.hanning(len(tail))))
    bin_of = lambda pitch: round(midi_to_hz(pitch) * len(tail) / SAMPLE_RATE)  # noqa: E731
    kept = np.median([spec[bin_of(p)] for p in range(48, 80)])
    stolen = max(spec[bin_of(p)] for p in range(40, 48))
    assert stolen < 1e-3 * kept


def test_stolen_note_is_released_without_a_click():
    synth = Synth("organ", max_voices=1)
    events = [NoteEvent(0, 10 * FRAME, 45, 1.0), NoteEvent(3 * FRAME + 11, FRAME, 45, 1.0)]
    out = play(synth, events, 5 * FRAME)
    assert synth.stolen == 1
    step = np.abs(np.diff(out))
    assert step[3 * FRAME:4 * FRAME].max() <= step[FRAME:3 * FRAME].max()


def test_a_lines_next_note_ends_the_one_it_holds_and_velocity_zero_rests_it():
    """In a line voice (the AI's), a note sent long is cut, without a click, where the line's
    next note starts; a note of velocity 0 only ends it. Other voices keep their lengths."""
    def line(events, voices=frozenset({"bass"})):
        synth = Synth("organ")
        synth.line_voices = voices
        return play(synth, events, 12 * FRAME)

    cut = 4 * FRAME + 7
    after = cut + round(0.011 * SAMPLE_RATE)  # the cut note's 10 ms release is over
    held = NoteEvent(0, 20 * FRAME, 45, 0.5, "bass")
    rested = line([held, NoteEvent(cut, 1, 45, 0.0, "bass")])
    assert np.abs(rested[FRAME:cut]).max() > 0.01 and np.abs(rested[after:]).max() == 0
    nxt = NoteEvent(cut, 20 * FRAME, 52, 0.5, "bass")
    moved = line([held, nxt])
    np.testing.assert_allclose(moved[after:], line([nxt])[after:], atol=1e-6)
    step = np.abs(np.diff(moved))  # no click: no steeper than either note on its own
    alone = max(step[FRAME:3 * FRAME].max(), np.abs(np.diff(line([nxt])))[cut:].max())
    assert step[cut - 50:cut + 500].max() < 1.5 * alone
    melody = [NoteEvent(0, 20 * FRAME, 45, 0.5, "melody"), NoteEvent(cut, 20 * FRAME, 52, 0.5,
                                                                     "melody")]
    np.testing.assert_array_equal(line(melody), line(melody, frozenset()))  # not a line


def test_instrument_per_voice():
    events = [NoteEvent(100, 5 * FRAME, 40, 0.8, "bass")]
    mixed = Synth("organ")
    mixed.set_instrument("bass", voice="bass")
    assert mixed.instrument == "organ"
    np.testing.assert_array_equal(play(mixed, events, 6 * FRAME),
                                  play(Synth("bass"), events, 6 * FRAME))


def test_set_instrument_changes_new_notes_only():
    synth = Synth("organ")
    synth.schedule([NoteEvent(0, 4 * FRAME, 60, 1.0)])
    synth.render(0)
    synth.set_instrument("pad")
    reference = Synth("organ")
    reference.schedule([NoteEvent(0, 4 * FRAME, 60, 1.0)])
    reference.render(0)
    np.testing.assert_array_equal(synth.render(FRAME), reference.render(FRAME))


def test_unknown_instrument_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="choose one of organ, epiano, bass"):
        Synth("theremin")
    with pytest.raises(ValueError, match="unknown instrument"):
        Synth().set_instrument("kazoo")


def test_schedule_takes_note_events_only():
    with pytest.raises(TypeError, match="NoteEvent"):
        Synth().schedule([(0, 960, 60, 1.0, "")])


def test_all_notes_off_releases_everything_and_forgets_the_queue():
    synth = Synth("organ")
    synth.schedule([NoteEvent(0, 100 * FRAME, 60, 1.0), NoteEvent(50 * FRAME, FRAME, 64, 1.0)])
    synth.render(0)
    synth.all_notes_off()
    assert synth.pending == 0
    out = synth.render(FRAME)
    assert out[0] != 0 and not out[10 * SAMPLE_RATE // 1000:].any()


@pytest.mark.parametrize("name", INSTRUMENT_NAMES)
def test_render_cost_of_sixteen_voices(name):
    """Printed, not asserted (timings belong to bench/): a frame of 16 voices on this core."""
    synth = Synth(name)
    synth.schedule([NoteEvent(0, 10 * SAMPLE_RATE, 40 + 3 * i, 0.8) for i in range(16)])
    synth.render(0)
    times = []
    for k in range(1, 101):
        t0 = time.perf_counter()
        out = synth.render(k * FRAME)
        times.append(time.perf_counter() - t0)
    assert synth.voices_in_use == 16 and out.dtype == np.float32 and out.shape == (FRAME,)
    print(f"\n{name}: 16 voices, {1e3 * np.median(times):.3f} ms per {FRAME}-sample frame "
          f"(p99 {1e3 * np.percentile(times, 99):.3f} ms)")


# -- NoteEvent: validated on construction and on the way in from the wire ----------------------


@pytest.mark.parametrize(("fields", "message"), [
    ((-1, 960, 60, 0.5), "start must be ≥ 0"),
    ((0, 0, 60, 0.5), "duration must be > 0"),
    ((0, -5, 60, 0.5), "duration must be > 0"),
    ((0, 960, 128, 0.5), "pitch must be a MIDI note 0..127"),
    ((0, 960, -1, 0.5), "pitch must be a MIDI note 0..127"),
    ((0, 960, 60, float("nan")), "velocity must be in 0..1"),
    ((0, 960, 60, 1.5), "velocity must be in 0..1"),
    ((0, 960, 60, -0.1), "velocity must be in 0..1"),
    ((0, 960, 60, 0.5, "x" * 33), "at most 32 characters"),
    ((0, 960, 60, 0.5, "bass\n"), "printable"),
])
def test_note_event_refuses_out_of_range_values(fields, message):
    with pytest.raises(ValueError, match=message):
        NoteEvent(*fields)
    with pytest.raises(ValueError, match=message):
        NoteEvent.from_tuple(list(fields))


@pytest.mark.parametrize("fields", [(0.5, 960, 60, 0.5), (0, 960, 60.0, 0.5), (0, True, 60, 0.5),
                                    (0, 960, 60, "loud"), (0, 960, 60, 0.5, 7)])
def test_note_event_refuses_values_of_the_wrong_kind(fields):
    with pytest.raises(TypeError, match="must be"):
        NoteEvent(*fields)


@pytest.mark.parametrize("wire", [(0, 960, 60), (0, 960, 60, 0.5, "a", "b"), "0 960 60 0.5", None])
def test_note_event_wire_form_must_have_four_or_five_fields(wire):
    with pytest.raises(ValueError, match="start, duration, pitch, velocity"):
        NoteEvent.from_tuple(wire)


def test_note_event_wire_round_trip_is_plain_python():
    event = NoteEvent(np.int64(48_000), np.int32(960), np.uint8(60), np.float32(0.5), "bass")
    wire = event.to_tuple()
    assert wire == (48_000, 960, 60, 0.5, "bass")
    assert [type(v) for v in wire] == [int, int, int, float, str]
    assert NoteEvent.from_tuple(wire) == event and NoteEvent.from_tuple(wire[:4]).voice == ""
    assert event.end == 48_960


def test_outside_the_chorale_the_ais_bass_line_plays_on_the_bass():
    """The AI's voice (server/ai/bridge.py): a style set on the event loop reaches the tick's
    synthesiser with its next frame; the bass line moves to the bass and back."""
    from server.ai.bridge import AiVoice

    bass_line = [NoteEvent(FRAME, 4 * FRAME, 40, 0.8, "bass")]

    def played(style: str | None) -> np.ndarray:
        voice = AiVoice("organ")
        if style is not None:
            voice.set_style(style)
        voice.deliver([e.to_tuple() for e in bass_line], 0)
        return np.concatenate([voice.render(k * FRAME) for k in range(6)])

    on_bass = play(Synth("bass"), bass_line, 6 * FRAME)
    on_organ = play(Synth("organ"), bass_line, 6 * FRAME)
    np.testing.assert_array_equal(played("folk"), on_bass)
    np.testing.assert_array_equal(played("chorale"), on_organ)
    np.testing.assert_array_equal(played(None), on_organ)
