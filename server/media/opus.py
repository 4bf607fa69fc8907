"""Opus through ctypes: a decoder that can conceal, and an encoder that runs without the GIL.

PyAV decodes Opus well but cannot conceal a lost packet (an empty packet flushes its decoder),
and in-band FEC needs the *next* packet decoded with ``decode_fec``. This module calls libopus
directly — the copy bundled with PyAV's wheel (so it is always there when ``av`` is), else the
system's — for the three things the receive path needs:

- :meth:`OpusDecoder.decode` — a packet;
- :meth:`OpusDecoder.recover` — a lost frame from the packet *after* it: its low-bitrate
  redundancy (LBRR, in-band FEC) when the sender put one there, which only the SILK and hybrid
  modes can carry; libopus falls back to packet-loss concealment when there is none;
- :meth:`OpusDecoder.conceal` — packet-loss concealment (PLC) with nothing to go on.

:class:`OpusEncoder` encodes each listener's mix. Through ctypes, libopus runs without the GIL
(PyAV's encoder holds it for part of each call), so listeners' mixes encode in parallel on
all cores.

ctypes releases the GIL during each call; a decoder or encoder is used by one thread at a time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os

import numpy as np

from hrtf.constants import FRAME, SAMPLE_RATE

OPUS_OK = 0
OPUS_APPLICATION_RESTRICTED_LOWDELAY = 2051
OPUS_SET_BITRATE = 4002
OPUS_SET_VBR = 4006
#: The most bytes a 20 ms packet may take (RFC 6716 allows 1275 per frame).
MAX_PACKET = 1500


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
    lib.opus_encoder_create.argtypes = [ctypes.c_int32, c_int, c_int, ctypes.POINTER(c_int)]
    lib.opus_encoder_create.restype = c_void_p
    lib.opus_encoder_destroy.argtypes = [c_void_p]
    lib.opus_encoder_destroy.restype = None
    lib.opus_encode_float.argtypes = [c_void_p, c_void_p, c_int, c_char_p, ctypes.c_int32]
    lib.opus_encode_float.restype = ctypes.c_int32
    # opus_encoder_ctl is variadic; every request used here takes one int.
    lib.opus_encoder_ctl.argtypes = [c_void_p, c_int, c_int]
    lib.opus_encoder_ctl.restype = c_int
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
    """One stream's decoder at 48 kHz: mono by default (a stereo stream is down-mixed by
    libopus), samples ``(n,)``; with ``channels=2``, stereo ``(n, 2)``."""

    def __init__(self, channels: int = 1) -> None:
        lib = library()
        error = ctypes.c_int(0)
        self.channels = channels
        self._handle = lib.opus_decoder_create(SAMPLE_RATE, channels, ctypes.byref(error))
        if error.value != OPUS_OK or not self._handle:
            raise OpusError(f"cannot create an Opus decoder: {_error(error.value)}")
        self._max = FRAME * 6  # up to 120 ms, the longest Opus packet
        self._out = np.zeros(self._max * channels, np.float32)

    def __del__(self) -> None:
        handle, self._handle = getattr(self, "_handle", None), None
        if handle and _lib is not None:
            _lib.opus_decoder_destroy(handle)

    def _run(self, packet: bytes | None, samples: int, fec: int) -> np.ndarray:
        out = self._out[:samples * self.channels]
        pointer = out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        data, size = (packet, len(packet)) if packet else (None, 0)
        n = library().opus_decode_float(self._handle, data, size, pointer, samples, fec)
        if n < 0:
            raise OpusError(f"Opus cannot decode this packet: {_error(n)}")
        pcm = out[:n * self.channels].copy()
        return pcm if self.channels == 1 else pcm.reshape(n, self.channels)

    def decode(self, packet: bytes) -> np.ndarray:
        """The samples of ``packet`` (float32, ±1)."""
        return self._run(packet, self._max, 0)

    def recover(self, following: bytes, samples: int = FRAME) -> np.ndarray:
        """The ``samples`` lost just before ``following``: from its in-band FEC if it carries
        one, else concealed. ``following`` itself is not consumed: decode it next."""
        return self._run(following, samples, 1)

    def conceal(self, samples: int = FRAME) -> np.ndarray:
        """``samples`` of packet-loss concealment, continuing what was last decoded."""
        return self._run(None, samples, 0)


class OpusEncoder:
    """A stereo 48 kHz encoder in the restricted low-delay mode (CELT only: 2.5 ms look-ahead,
    no speech processing), variable bitrate around ``bitrate``."""

    def __init__(self, bitrate: int, channels: int = 2) -> None:
        lib = library()
        error = ctypes.c_int(0)
        self.channels = channels
        self._handle = lib.opus_encoder_create(SAMPLE_RATE, channels,
                                               OPUS_APPLICATION_RESTRICTED_LOWDELAY,
                                               ctypes.byref(error))
        if error.value != OPUS_OK or not self._handle:
            raise OpusError(f"cannot create an Opus encoder: {_error(error.value)}")
        for request, value in ((OPUS_SET_BITRATE, bitrate), (OPUS_SET_VBR, 1)):
            code = lib.opus_encoder_ctl(self._handle, request, value)
            if code != OPUS_OK:
                raise OpusError(f"the Opus encoder refused setting {request}: {_error(code)}")
        self._out = ctypes.create_string_buffer(MAX_PACKET)

    def __del__(self) -> None:
        handle, self._handle = getattr(self, "_handle", None), None
        if handle and _lib is not None:
            _lib.opus_encoder_destroy(handle)

    def encode(self, pcm: np.ndarray) -> bytes:
        """One packet of ``pcm``: float32 ``(samples, channels)``, interleaved, in ±1."""
        pcm = np.ascontiguousarray(pcm, np.float32)
        if pcm.ndim != 2 or pcm.shape[1] != self.channels:
            raise ValueError(f"expected (samples, {self.channels}) samples, got {pcm.shape}")
        n = library().opus_encode_float(self._handle, pcm.ctypes.data, pcm.shape[0], self._out,
                                        MAX_PACKET)
        if n < 0:
            raise OpusError(f"Opus cannot encode this frame: {_error(n)}")
        return self._out.raw[:n]
