"""A listener's set is warmed at the room's frame: its spectra are ready before its first tick."""

from __future__ import annotations

from hrtf.constants import FRAME, frame_samples
from hrtf.hrirset import fft_size
from hrtf.panning import reference_set
from server.rooms.rendering import _warm


def test_a_set_chosen_in_a_5_ms_room_is_warmed_at_that_frames_fft_size(spherical_head):
    frame = frame_samples(5)
    nfft = fft_size(spherical_head.taps, frame)
    assert nfft != fft_size(spherical_head.taps, FRAME)  # else this test tells nothing
    _warm(spherical_head, True, frame)
    assert nfft in spherical_head._spectra
    ref = reference_set(spherical_head)
    assert fft_size(ref.taps, frame) in ref._spectra
