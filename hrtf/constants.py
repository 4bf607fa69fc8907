"""The engine's audio format, defined once.

It lives in the lowest package of the dependency chain (``server → dsp → hrtf``) so that every
other package imports it from here.
"""

#: Samples per second everywhere inside spatialjam (HRTFs are resampled to it at load).
SAMPLE_RATE = 48_000
#: Samples per frame of the default room: one 20 ms tick of the room clock, one Opus packet.
FRAME = 960
#: The default frame's duration in milliseconds.
FRAME_MS = 1000 * FRAME // SAMPLE_RATE
#: Frame sizes a room may tick at (ms): 2.5, 5 and 10 for low-latency rooms, 20 the default.
FRAME_CHOICES_MS = (2.5, 5.0, 10.0, 20.0)
#: Speed of sound (m/s) in air at about 20 °C: pyroomacoustics' value (tests check they agree).
SPEED_OF_SOUND_M_S = 343.0


def frame_samples(frame_ms: float) -> int:
    """Samples per frame of ``frame_ms`` (one of FRAME_CHOICES_MS) at SAMPLE_RATE."""
    if frame_ms not in FRAME_CHOICES_MS:
        choices = ", ".join(f"{ms:g}" for ms in FRAME_CHOICES_MS)
        raise ValueError(f"frame of {frame_ms!r} ms is not one a room may tick at; choose one "
                         f"of {choices} ms")
    return round(frame_ms * SAMPLE_RATE / 1000)
