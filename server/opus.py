"""An Opus decoder that can conceal: libopus through ctypes.

PyAV decodes Opus well but cannot conceal a lost packet (an empty packet flushes its decoder),
and in-band FEC needs the *next* packet decoded with ``decode_fec``. This module calls libopus
directly — the copy bundled with PyAV's wheel (so it is always there when ``av`` is), else the
system's — for the three things the receive path needs:

- :meth:`OpusDecoder.decode` — a packet;
- :meth:`OpusDecoder.recover` — a lost frame from the packet *after* it: its low-bitrate
  redundancy (LBRR, in-band FEC) when the sender put one there, which only the SILK and hybrid
  modes can carry; libopus falls back to packet-loss concealment when there is none;
- :meth:`OpusDecoder.conceal` — packet-loss concealment (PLC) with nothing to go on.

ctypes releases the GIL during each call; a decoder is used by one thread at a time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os

import numpy as np

from hrtf.constants import FRAME, SAMPLE_RATE

OPUS_OK = 0


class OpusError(RuntimeError):
    """libopus refused: a corrupt packet, or no usable library."""


def _load_library() -> ctypes.CDLL:
    import av

    bundled = os.path.join(os.path.dirname(os.path.dirname(av.__file__)), "av.libs")
    candidates = sorted(glob.glob(os.path.join(bundled, "libopus*.so*")))
    system = ctypes.util.find_library("opus")
    if system:
        candidates.append(system)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        _declare(lib)
        return lib
    raise OpusError("libopus was not found (neither in PyAV's wheel nor on the system)")


def _declare(lib: ctypes.CDLL) -> None:
    c_int, c_void_p, c_char_p = ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, c_int, ctypes.POINTER(c_int)]
    lib.opus_decoder_create.restype = c_void_p
    lib.opus_decoder_destroy.argtypes = [c_void_p]
    lib.opus_decoder_destroy.restype = None
    lib.opus_decode_float.argtypes = [c_void_p, c_char_p, ctypes.c_int32,
                                      ctypes.POINTER(ctypes.c_float), c_int, c_int]
    lib.opus_decode_float.restype = c_int
    lib.opus_packet_get_nb_samples.argtypes = [c_char_p, ctypes.c_int32, ctypes.c_int32]
    lib.opus_packet_get_nb_samples.restype = c_int
    lib.opus_strerror.argtypes = [c_int]
    lib.opus_strerror.restype = c_char_p
    if hasattr(lib, "opus_packet_has_lbrr"):  # libopus ≥ 1.5
        lib.opus_packet_has_lbrr.argtypes = [c_char_p, ctypes.c_int32]
        lib.opus_packet_has_lbrr.restype = c_int


_lib: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        _lib = _load_library()
    return _lib


def _error(code: int) -> str:
    return library().opus_strerror(code).decode(errors="replace")


def packet_samples(packet: bytes) -> int:
    """Samples per channel at 48 kHz that ``packet`` holds (its TOC byte and frame count), or
    a negative libopus error code for a malformed packet."""
    if not packet:
        return -1
    return library().opus_packet_get_nb_samples(packet, len(packet), SAMPLE_RATE)


def has_fec(packet: bytes) -> bool:
    """Whether ``packet`` carries redundancy (LBRR) for the packet before it.

    Asked of libopus where it can tell (≥ 1.5); otherwise whether the packet's mode (its TOC
    byte, RFC 6716 section 3.1) is SILK or hybrid, the modes that can carry one. CELT-only
    packets (music at high bitrates) never do.
    """
    if not packet:
        return False
    lib = library()
    if hasattr(lib, "opus_packet_has_lbrr"):
        return lib.opus_packet_has_lbrr(packet, len(packet)) == 1
    return (packet[0] >> 3) < 16


class OpusDecoder:
    """One stream's mono decoder at 48 kHz (a stereo stream is down-mixed by libopus)."""

    def __init__(self) -> None:
        lib = library()
        error = ctypes.c_int(0)
        self._handle = lib.opus_decoder_create(SAMPLE_RATE, 1, ctypes.byref(error))
        if error.value != OPUS_OK or not self._handle:
            raise OpusError(f"cannot create an Opus decoder: {_error(error.value)}")
        self._out = np.zeros(FRAME * 6, np.float32)  # up to 120 ms, the longest Opus packet

    def __del__(self) -> None:
        handle, self._handle = getattr(self, "_handle", None), None
        if handle and _lib is not None:
            _lib.opus_decoder_destroy(handle)

    def _run(self, packet: bytes | None, samples: int, fec: int) -> np.ndarray:
        out = self._out[:samples]
        pointer = out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        data, size = (packet, len(packet)) if packet else (None, 0)
        n = library().opus_decode_float(self._handle, data, size, pointer, samples, fec)
        if n < 0:
            raise OpusError(f"Opus cannot decode this packet: {_error(n)}")
        return out[:n].copy()

    def decode(self, packet: bytes) -> np.ndarray:
        """The samples of ``packet`` (float32, mono, ±1)."""
        return self._run(packet, len(self._out), 0)

    def recover(self, following: bytes, samples: int = FRAME) -> np.ndarray:
        """The ``samples`` lost just before ``following``: from its in-band FEC if it carries
        one, else concealed. ``following`` itself is not consumed: decode it next."""
        return self._run(following, samples, 1)

    def conceal(self, samples: int = FRAME) -> np.ndarray:
        """``samples`` of packet-loss concealment, continuing what was last decoded."""
        return self._run(None, samples, 0)
