"""The engine's audio format, defined once.

It lives in the lowest package of the dependency chain (``server → dsp → hrtf``) so that every
other package imports it from here.
"""

#: Samples per second everywhere inside spatialjam (HRTFs are resampled to it at load).
SAMPLE_RATE = 48_000
#: Samples per frame: one 20 ms tick of the room clock, one Opus packet.
FRAME = 960
#: Frame duration in milliseconds.
FRAME_MS = 1000 * FRAME // SAMPLE_RATE
#: Speed of sound (m/s) in air at about 20 °C: pyroomacoustics' value (tests check they agree).
SPEED_OF_SOUND_M_S = 343.0
