"""Parse one untrusted SOFA file in a child process, under resource limits.

:func:`hrtf.sofa.load_sofa` runs this file as a script (``python -P _sofa_worker.py …``) so
that a file which crashes or exhausts the HDF5/netCDF parser takes down only this process. For
a plain parse it imports nothing from spatialjam (importing the ``hrtf`` package would pull
numba into every parse); the limits it applies come in as arguments. With
``--prepare-max-bytes`` (:func:`hrtf.sofa.prepare_sofa`, for uploaded sets) it also *prepares*
the set, as :mod:`hrtf.prepared` describes, importing ``hrtf`` from the tree it belongs to: the
serving process then reads only the finished set.

The calling contract:

1. Import the parsing libraries, then cap this process: address space (``RLIMIT_AS``) at what
   the libraries already use plus ``--memory-mb``, CPU time (``RLIMIT_CPU``), size of files
   written (``RLIMIT_FSIZE``), no core dumps. The libraries are trusted code; the cap bounds
   what the file can make them allocate.
2. Open the file with netCDF4 and check the convention, the variables and their declared sizes
   before any data is read; refuse absurd sizes there.
3. Read it with sofar and write ``arrays.npz`` into the output folder: ``positions`` (M, 3),
   ``hrir`` (M, 2, N), ``sample_rate`` (1,) and ``delay`` (1 or M, 2) as float64, spherical
   positions in degrees, and ``position_type`` as a string; nothing pickled.
   With ``--prepare-max-bytes B``: build the :class:`~hrtf.hrirset.HrirSet` from those arrays
   instead, refuse it if its prepared form (spectra included) would hold more than ``B``
   bytes, else write it as ``prepared.npz`` (:func:`hrtf.prepared.write_prepared`).
4. Print one JSON line on stdout: ``{"ok": true}`` (with ``"bytes"``, ``"directions"``,
   ``"taps"`` and ``"digest"`` of a prepared set) or
   ``{"ok": false, "error": "<what is wrong, in words>"}``. Exit status 0 on success, 2 for a
   refused file, 3 when memory ran out.

Anything else (death by a signal, another exit status, no JSON) is for the parent to explain.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import traceback
import warnings
from pathlib import Path

import netCDF4
import numpy as np
import sofar

CONVENTION = "SimpleFreeFieldHRIR"
REQUIRED = ("Data.IR", "Data.SamplingRate", "SourcePosition")
#: Bytes of memory the parse needs per byte of declared data (read, masked copy, float64).
MEMORY_PER_DATA_BYTE = 3
#: Memory the parse needs beyond the data (HDF5 chunk caches, sofar's default object).
MEMORY_OVERHEAD = 64 * 2**20
#: Room for the npz container around the arrays it holds.
OUTPUT_OVERHEAD = 16 * 2**20
MB = 2**20


class Refused(Exception):
    """The file is not a usable SimpleFreeFieldHRIR set; the message says why."""


def main(argv: list[str] | None = None) -> int:
    """Run the worker; see the module docstring for the contract."""
    args = _parse_args(argv)
    # The reply gets stdout to itself: whatever the libraries print goes to stderr.
    reply = os.dup(1)
    os.dup2(2, 1)
    if args.prepare_max_bytes is not None:  # imported before the limits, as the parsers are
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        import hrtf.prepared  # noqa: F401
    _apply_limits(args)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arrays = _extract(args)
            if args.prepare_max_bytes is None:
                np.savez(args.out / "arrays.npz", positions=arrays["positions"],
                         hrir=arrays["hrir"], sample_rate=arrays["sample_rate"],
                         delay=arrays["delay"], position_type=arrays["position_type"])
                prepared = {}
            else:
                prepared = _prepare(args, arrays)
    except Refused as exc:
        return _reply(reply, {"ok": False, "error": str(exc)}, 2)
    except MemoryError:
        error = f"the parser ran out of memory (limit {args.memory_mb} MB)"
        return _reply(reply, {"ok": False, "error": error}, 3)
    except Exception as exc:  # a parser library failing in a way not foreseen below
        traceback.print_exc()
        what = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        error = f"the file could not be parsed as SOFA ({what})"
        return _reply(reply, {"ok": False, "error": error}, 2)
    return _reply(reply, {"ok": True, **prepared}, 0)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="SOFA file to parse")
    parser.add_argument("out", type=Path, help="folder that receives arrays.npz")
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--cpu-s", type=int, required=True)
    parser.add_argument("--max-directions", type=int, required=True)
    parser.add_argument("--max-samples", type=int, required=True)
    parser.add_argument("--max-data-mb", type=int, required=True)
    parser.add_argument("--min-rate", type=float, required=True)
    parser.add_argument("--max-rate", type=float, required=True)
    parser.add_argument("--prepare-max-bytes", type=int,
                        help="prepare the set (prepared.npz) if it holds at most this many bytes")
    return parser.parse_args(argv)


def _apply_limits(args: argparse.Namespace) -> None:
    """Cap address space, CPU time, written file size and core dumps of this process."""
    _lower(resource.RLIMIT_AS, _current_address_space() + args.memory_mb * MB)
    used_s = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    _lower(resource.RLIMIT_CPU, math.ceil(used_s) + args.cpu_s, grace=1)
    output = max(args.max_data_mb * MB, args.prepare_max_bytes or 0)
    _lower(resource.RLIMIT_FSIZE, output + OUTPUT_OVERHEAD)
    _lower(resource.RLIMIT_CORE, 0)


def _lower(which: int, soft: int, grace: int = 0) -> None:
    """Set a limit to ``soft`` (hard limit ``soft + grace``), never above the inherited one."""
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
        resource.setrlimit(which, (soft, min(soft + grace, hard)))
    else:
        resource.setrlimit(which, (soft, soft + grace))


def _current_address_space() -> int:
    """Bytes of address space mapped now (``VmSize``; Linux, like the rest of the server)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmSize line")


def _reply(fd: int, message: dict, status: int) -> int:
    os.write(fd, (json.dumps(message) + "\n").encode())
    return status


def _quote(value: object, limit: int = 60) -> str:
    """``repr`` of a value read from the file, cut short: the file chooses its length."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _extract(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Check the file and read it: the arrays of ``arrays.npz``, by name."""
    m = _check_header(args)
    try:
        sofa = sofar.read_sofa(args.path, verify=False, verbose=False)
    except ValueError as exc:
        if "not a valid SOFA Convention" not in str(exc):
            raise
        # A SimpleFreeFieldHRIR version sofar does not list: read the variables as they are.
        sofa = sofar.read_sofa_as_netcdf(args.path)
    except (OSError, RuntimeError) as exc:
        if "memory" in str(exc).lower():
            raise MemoryError from None
        raise Refused(
            f"its data could not be decoded ({exc}): the file is corrupted or truncated"
        ) from None

    hrir = _numbers(sofa.Data_IR, "Data.IR")
    positions = _numbers(sofa.SourcePosition, "SourcePosition")
    rate = _numbers(sofa.Data_SamplingRate, "Data.SamplingRate").reshape(-1)
    delay = _numbers(getattr(sofa, "Data_Delay", np.zeros((1, 2))), "Data.Delay")
    # sofar drops trailing singleton dimensions; the header check fixed the real shape.
    hrir = hrir.reshape(m, 2, -1)
    positions = positions.reshape(m, 3)
    delay = delay.reshape(-1, 2)

    position_type = str(getattr(sofa, "SourcePosition_Type", "spherical")).strip().lower()
    units = str(getattr(sofa, "SourcePosition_Units", "")).replace(",", " ").lower().split()
    if position_type == "spherical" and units and units[0].startswith("rad"):
        positions = positions.copy()
        positions[:, :2] = np.degrees(positions[:, :2])

    return {"positions": positions, "hrir": hrir, "sample_rate": rate, "delay": delay,
            "position_type": np.array(position_type)}


def _prepare(args: argparse.Namespace, arrays: dict[str, np.ndarray]) -> dict:
    """Build the set, refuse it if it would hold too much, write ``prepared.npz``; its size."""
    from hrtf.errors import HrtfError
    from hrtf.hrirset import HrirSet
    from hrtf.prepared import write_prepared

    try:
        hrirs = HrirSet.from_measurements(
            args.path.name, arrays.pop("positions"), arrays.pop("hrir"), arrays["sample_rate"],
            position_type=str(arrays["position_type"]), delay=arrays["delay"])
    except HrtfError as exc:
        raise Refused(str(exc)) from None
    need, limit = hrirs.prepared_bytes, args.prepare_max_bytes
    if need > limit:
        raise Refused(
            f"its {len(hrirs.directions)} directions of {hrirs.taps} taps would take "
            f"{need / MB:.0f} MB of the server's memory once prepared for rendering; this "
            f"server takes sets of up to {limit / MB:.0f} MB: upload a set with fewer "
            "directions or shorter responses")
    held = write_prepared(hrirs, args.out)
    return {"bytes": held, "directions": len(hrirs.directions), "taps": hrirs.taps,
            "digest": hrirs.digest}


def _numbers(value: object, name: str) -> np.ndarray:
    if np.ma.is_masked(value):
        missing = int(np.ma.count_masked(value))
        raise Refused(f"{name} has {missing} missing values (never written in the file)")
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise Refused(f"{name} does not hold numbers") from None


def _check_header(args: argparse.Namespace) -> int:
    """Refuse what can be refused from the metadata alone; return the measurement count M."""
    if args.memory_mb * MB < MEMORY_OVERHEAD:
        # Below this even opening the file can fail, and HDF5 then blames the file.
        raise Refused(
            f"the parser's memory limit of {args.memory_mb} MB is below the "
            f"{MEMORY_OVERHEAD // MB} MB that parsing any SOFA file needs"
        )
    try:
        dataset = netCDF4.Dataset(args.path, "r")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if "memory" in reason.lower():
            raise MemoryError from None
        raise Refused(
            f"its HDF5/netCDF structure is damaged ({reason}): the file is malformed or truncated"
        ) from None
    with dataset:
        return _check_dataset(dataset, args)


def _check_dataset(ds: netCDF4.Dataset, args: argparse.Namespace) -> int:
    attributes = set(ds.ncattrs())
    conventions = ds.getncattr("Conventions") if "Conventions" in attributes else None
    if conventions != "SOFA":
        raise Refused(
            "it is a netCDF/HDF5 file but not a SOFA file "
            f"(global attribute Conventions is {_quote(conventions)}, expected 'SOFA')"
        )
    if "SOFAConventions" not in attributes:
        raise Refused("it does not say which SOFA convention it follows (no SOFAConventions)")
    convention = str(ds.getncattr("SOFAConventions"))
    if convention != CONVENTION:
        raise Refused(
            f"it uses the SOFA convention {_quote(convention)}; only {CONVENTION!r} "
            "(head-related impulse responses) can be loaded"
        )

    variables = ds.variables
    missing = [name for name in REQUIRED if name not in variables]
    if missing:
        raise Refused(f"it lacks the variable(s) {', '.join(missing)} that {CONVENTION} requires")
    declared = 0
    for name, var in variables.items():
        if not isinstance(var.dtype, np.dtype) or var.dtype.kind not in "fiuS":
            raise Refused(
                f"variable {_quote(name)} has type {var.dtype}; SOFA stores numbers and text"
            )
        declared += math.prod(var.shape) * var.dtype.itemsize
    for name in (*REQUIRED, "Data.Delay"):
        if name in variables and variables[name].dtype.kind not in "fiu":
            raise Refused(f"variable {name} holds text, not numbers")

    shape = variables["Data.IR"].shape
    if len(shape) != 3:
        raise Refused(f"Data.IR has {len(shape)} dimensions, expected 3 (M, R, N)")
    m, r, n = shape
    if r != 2:
        raise Refused(f"Data.IR has {r} receivers; a binaural set has 2 (left and right ear)")
    if not 1 <= m <= args.max_directions:
        raise Refused(f"it declares {m} measurements; 1 to {args.max_directions} are accepted")
    if not 1 <= n <= args.max_samples:
        raise Refused(
            f"it declares impulse responses of {n} samples; 1 to {args.max_samples} are accepted"
        )
    positions = variables["SourcePosition"].shape
    if len(positions) != 2 or positions[1] != 3:
        raise Refused(f"SourcePosition has shape {positions}, expected ({m}, 3)")
    if positions[0] != m:
        raise Refused(
            f"SourcePosition has {positions[0]} rows but Data.IR has {m} measurements; "
            "there must be one source position per measurement"
        )
    if "Data.Delay" in variables:
        delay = variables["Data.Delay"].shape
        if delay not in ((1, 2), (m, 2)):
            raise Refused(f"Data.Delay has shape {delay}, expected (1, 2) or ({m}, 2)")

    if declared > args.max_data_mb * MB:
        raise Refused(
            f"it declares {declared / MB:.0f} MB of data; at most {args.max_data_mb} MB "
            "are accepted"
        )
    needed = declared * MEMORY_PER_DATA_BYTE + MEMORY_OVERHEAD
    if needed > args.memory_mb * MB:
        raise Refused(
            f"parsing its {declared / MB:.1f} MB of data needs about {needed / MB:.0f} MB of "
            f"memory, more than the parser's limit of {args.memory_mb} MB"
        )
    _check_rate(variables["Data.SamplingRate"], m, args)
    return m


def _check_rate(var: netCDF4.Variable, m: int, args: argparse.Namespace) -> None:
    if not 1 <= math.prod(var.shape) <= m:
        raise Refused(f"Data.SamplingRate has shape {var.shape}, expected one value")
    rates = np.ma.filled(np.ma.asarray(var[:], dtype=np.float64), np.nan).reshape(-1)
    if not np.all(np.isfinite(rates)):
        raise Refused("Data.SamplingRate is missing, NaN or infinite")
    if np.any(rates != rates[0]):
        raise Refused("Data.SamplingRate varies between measurements; one rate is needed")
    rate = float(rates[0])
    if not args.min_rate <= rate <= args.max_rate:
        raise Refused(
            f"its sample rate {rate:g} Hz is outside {args.min_rate:g}..{args.max_rate:g} Hz"
        )


if __name__ == "__main__":
    sys.exit(main())
