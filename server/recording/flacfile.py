"""A FLAC file that can be read while it is being written, as far as it is on disk.

libsndfile writes the FLAC STREAMINFO block's sample count when a file is closed; until then
the count reads 0, "unknown" (RFC 9639, section 8.2), and libsndfile itself (so
:mod:`soundfile`) cannot read the file: it takes the length for 2**60 frames. A process killed
while writing would leave files few tools open. :meth:`FlacFile.sync` patches that count
(:func:`patch_flac_length`) with the samples surely on disk: all but the last
:data:`UNFLUSHED_SAMPLES`, which libFLAC may still hold in its block buffer. A count larger
than what is on disk is worse than none (libsndfile fails at the end of the data), so the
margin errs short. :meth:`FlacFile.close` then writes the exact count and the MD5 signature.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile

from hrtf.constants import SAMPLE_RATE

#: Samples libFLAC may hold before they reach the file: it encodes a block once it has one
#: sample past the block size (4096 at libsndfile's compression level), so twice that is safe.
UNFLUSHED_SAMPLES = 2 * 4096
#: 16-bit PCM: the uplink came through Opus from 16-bit microphones; 96 dB of range.
SUBTYPE = "PCM_16"

_FLAC_MAGIC = b"fLaC"
_TOTAL_SAMPLES_BITS = 36


def patch_flac_length(fd: int, samples: int) -> bool:
    """Write ``samples`` into the STREAMINFO total-samples field of the FLAC file open at
    ``fd`` (its own descriptor; the encoder's position is not moved).

    STREAMINFO is the first metadata block (RFC 9639, section 8.1): after the 4-byte marker
    ``fLaC`` and a 4-byte block header (type 0) come min/max block size (2 + 2 bytes), min/max
    frame size (3 + 3), then at byte 18 a 64-bit word: sample rate (20 bits), channels − 1 (3),
    bits per sample − 1 (5) and total samples (36). Returns False, writing nothing, when the
    file does not start that way yet (nothing encoded so far) or ``samples`` does not fit.
    """
    if not 0 < samples < 1 << _TOTAL_SAMPLES_BITS:
        return False
    head = os.pread(fd, 26, 0)
    if len(head) < 26 or head[:4] != _FLAC_MAGIC or head[4] & 0x7F != 0:
        return False
    word = int.from_bytes(head[18:26], "big")
    word = (word & ~((1 << _TOTAL_SAMPLES_BITS) - 1)) | samples
    os.pwrite(fd, word.to_bytes(8, "big"), 18)
    return True


class AudioFile(Protocol):
    """Where a track's samples go (:class:`FlacFile`; tests give slow or failing ones)."""

    def write(self, block: np.ndarray) -> None: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


class FlacFile:
    """A 48 kHz 16-bit FLAC file written block by block, readable after every :meth:`sync`."""

    def __init__(self, path: Path, channels: int) -> None:
        self.path = path
        self._file = soundfile.SoundFile(path, "w", SAMPLE_RATE, channels, SUBTYPE,
                                         format="FLAC")
        self._fd = os.open(path, os.O_RDWR)
        self.samples = 0

    def write(self, block: np.ndarray) -> None:
        """Float samples in ±1 (libsndfile clips what lies beyond), ``(n,)`` or
        ``(n, channels)``."""
        self._file.write(block)
        self.samples += len(block)

    def sync(self) -> None:
        patch_flac_length(self._fd, self.samples - UNFLUSHED_SAMPLES)

    def close(self) -> None:
        try:
            self._file.close()  # writes the exact length and the MD5 signature
        finally:
            os.close(self._fd)
