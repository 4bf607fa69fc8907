"""The analysis stream's format, defined once for the listening stages.

The server sends the sidecar a mono downmix of the humans at :data:`ANALYSIS_RATE`, in blocks of
:data:`BLOCK_MS` (one room tick), each stamped with the room-clock sample (48 kHz) of its first
sample. Every time the listener reports is on that room clock.
"""

from hrtf.constants import FRAME_MS, SAMPLE_RATE

#: The room clock the time stamps count: samples per second.
ROOM_RATE = SAMPLE_RATE
#: Samples per second of the analysis downmix, unless a listener is told otherwise.
ANALYSIS_RATE = 16_000
#: Duration of one analysis block: one room tick.
BLOCK_MS = FRAME_MS
#: Samples in one block at :data:`ANALYSIS_RATE` (320).
BLOCK = ANALYSIS_RATE * BLOCK_MS // 1000
#: The lowest and highest tempo the beat tracker looks for.
MIN_BPM = 60.0
MAX_BPM = 180.0
#: The range a fixed tempo may be given in (it is never looked for).
MIN_FIXED_BPM = 20.0
MAX_FIXED_BPM = 300.0


def block_size(sample_rate: int) -> int:
    """Samples in one 20 ms block at ``sample_rate``."""
    return sample_rate * BLOCK_MS // 1000


def check_sample_rate(sample_rate: int) -> int:
    """Return ``sample_rate`` if the listener supports it, else raise ``ValueError``.

    It must divide the room rate (so a block's samples map to whole room samples) and lie in
    8–48 kHz.
    """
    if (
        not isinstance(sample_rate, int)
        or not 8_000 <= sample_rate <= ROOM_RATE
        or ROOM_RATE % sample_rate
        or sample_rate % 100
    ):
        raise ValueError(
            f"sample_rate must be an integer number of Hz from 8000 to {ROOM_RATE} that divides "
            f"{ROOM_RATE} (8000, 16000, 24000, 48000, ...); got {sample_rate!r}"
        )
    return sample_rate
