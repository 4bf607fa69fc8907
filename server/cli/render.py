"""``spatialjam render``: file in, binaural file out."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from fractions import Fraction

import numpy as np
import scipy.io.wavfile
from scipy.signal import resample_poly

from dsp.offline import render_mono
from dsp.room_model import room_model
from hrtf.constants import SAMPLE_RATE
from hrtf.grid import unit_vectors
from hrtf.hrirset import HrirSet
from hrtf.library import load_hrtf
from server.cli.args import hrtf_spec
from server.errors import CliError

log = logging.getLogger(__name__)

#: Inputs longer than this are refused (an offline render holds the file in memory).
MAX_INPUT_SECONDS = 3600
#: An interpolated response whose peak is this far below the set's loudest counts as none
#: (as good as zero: under the floor of the 16-bit output).
NO_RESPONSE_DB = -100.0


def read_wav_mono(path: str) -> np.ndarray:
    """Read a WAV file as mono float32 at 48 kHz (downmixing and resampling if needed)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.io.wavfile.WavFileWarning)
            rate, data = scipy.io.wavfile.read(path, mmap=False)
    except FileNotFoundError:
        raise CliError(f"input file {path!r} does not exist") from None
    except IsADirectoryError:
        raise CliError(f"input {path!r} is a directory, not a WAV file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise CliError(f"input file {path!r} is not a readable WAV file ({exc})") from None
    if not 1_000 <= rate <= 768_000:
        raise CliError(f"input file {path!r} declares a sample rate of {rate} Hz "
                       "(expected 1000..768000)")
    if data.size == 0:
        raise CliError(f"input file {path!r} holds no samples")
    if len(data) > MAX_INPUT_SECONDS * rate:
        raise CliError(f"input file {path!r} is longer than {MAX_INPUT_SECONDS} s")
    if np.issubdtype(data.dtype, np.integer):
        # full scale is half the code range: 128 for unsigned 8-bit (centred on 128), 2**15
        # for 16-bit, 2**31 for 24-bit (scipy left-aligns it in int32) and 32-bit
        info = np.iinfo(data.dtype)
        full_scale = (float(info.max) - float(info.min) + 1) / 2
        offset = 0.0 if info.min < 0 else full_scale
        audio = (data.astype(np.float64) - offset) / full_scale
    else:
        audio = data.astype(np.float64)
    if not np.all(np.isfinite(audio)):
        raise CliError(f"input file {path!r} contains NaN or infinite samples")
    if audio.ndim == 2:
        log.info("downmixing %d channels to mono", audio.shape[1])
        audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        ratio = Fraction(SAMPLE_RATE, rate).limit_denominator(1000)
        audio = resample_poly(audio, ratio.numerator, ratio.denominator)
    return audio.astype(np.float32)


def has_response(hrirs: HrirSet, azimuth_deg: float, elevation_deg: float) -> bool:
    """Whether the HRIR pair the renderer interpolates towards ``(azimuth_deg, elevation_deg)``
    peaks within :data:`NO_RESPONSE_DB` of the set's loudest response."""
    idx, w = hrirs.grid.weights(unit_vectors(np.array([azimuth_deg]), np.array([elevation_deg])))
    pair = np.tensordot(w[0], hrirs.hrir[hrirs.grid.source_of[idx[0]]], axes=1)
    return bool(np.abs(pair).max() > np.abs(hrirs.hrir).max() * 10 ** (NO_RESPONSE_DB / 20))


def run_render(args: argparse.Namespace) -> int:
    if args.distance_model == "linear" and args.rolloff > 1:
        raise CliError("the linear distance model needs --rolloff ≤ 1")
    room = None
    if args.room or args.room_dims or args.rt60 is not None or args.room_order is not None \
            or args.wet is not None:
        try:
            room = room_model(args.room, dims_m=args.room_dims, rt60_s=args.rt60,
                              max_order=args.room_order, wet=args.wet)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    signal = read_wav_mono(args.input)
    spec = hrtf_spec(args)
    hrirs = load_hrtf(spec)
    silent_there = not args.reference and not has_response(hrirs, args.azimuth, args.elevation)
    try:
        stereo = render_mono(
            signal, hrirs, azimuth_deg=args.azimuth, elevation_deg=args.elevation,
            distance_m=args.distance, orbit_s=args.orbit, device=args.device,
            distance_model=args.distance_model, ref_distance_m=args.ref_distance,
            rolloff=args.rolloff, room=room, reference=args.reference,
        )
    except (RuntimeError, ValueError) as exc:
        raise CliError(str(exc)) from None
    out = stereo if args.float else np.round(np.clip(stereo, -1, 1) * 32767).astype(np.int16)
    if silent_there:
        where = (f"the HRTF set {spec!r} has no response at azimuth {args.azimuth:g}°, "
                 f"elevation {args.elevation:g}° (its impulse responses there are zero)")
        if np.any(signal) and not np.any(out):
            raise CliError(f"{where}: the output would be silent, so none was written")
        # an orbit moves the source out of the gap, a room's reflections come from elsewhere
        print(f"spatialjam render: warning: {where}: the source is silent there",
              file=sys.stderr)
    try:
        scipy.io.wavfile.write(args.output, SAMPLE_RATE, out)
    except OSError as exc:
        raise CliError(f"cannot write {args.output!r}: {exc.strerror or exc}") from None
    where = "" if room is None else (f", in {room.name} {'×'.join(f'{d:g}' for d in room.dims_m)}"
                                      f" m, RT60 {room.rt60_broadband_s:.2f} s")
    print(f"wrote {args.output}: {len(stereo) / SAMPLE_RATE:.2f} s stereo at {SAMPLE_RATE} Hz "
          f"({'reference panning' if args.reference else hrirs.name}{where})")
    return 0
