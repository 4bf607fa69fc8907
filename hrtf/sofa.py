"""Load SOFA ``SimpleFreeFieldHRIR`` files: untrusted input, parsed in isolation, cached.

A SOFA file (AES69) is a netCDF-4/HDF5 file. Its source positions use SOFA's coordinates, as
all of spatialjam does: x ahead, y to the left, z up (metres); azimuth 0° ahead, +90° to the
listener's left; elevation +90° above.

:func:`load_sofa` is the one entry point. What it does, cheapest first:

1. ``stat`` and read the file once to hash it (SHA-256), refusing a missing, unreadable or
   oversized file, one that is not netCDF-4/HDF5 at all (its first bytes say so) and an HDF5
   file shorter than its own superblock says (truncated).
2. Return the :class:`~hrtf.hrirset.HrirSet` already built from the same content in this
   process, if any (the same object).
3. Else build it from the disk cache, ``$SPATIALJAM_CACHE_DIR/hrtf/`` (default
   ``~/.cache/spatialjam/hrtf/``), which holds the parsed arrays of files seen before, keyed by
   content hash and :data:`LOADER_VERSION`.
4. Else copy the file to a private folder and parse the copy in a child process
   (:mod:`hrtf._sofa_worker`) capped in address space, CPU time and output size, under a
   wall-clock timeout: a file that crashes or exhausts the HDF5 parser kills the child only.
   The child checks the metadata before reading any data and hands back plain float64 arrays
   (an ``.npz`` read without pickles); :meth:`HrirSet.from_measurements` validates them again.

Every failure is one :class:`~hrtf.errors.HrtfError` that names the file and says what is
wrong with it. :func:`load_sofa` blocks (it may wait for the child); call it off the event loop.

:func:`prepare_sofa` is the entry point for untrusted uploads into a serving process: no cache
(the server keeps uploaded sets itself, within a memory budget), and the child does all of the
work (parsing, resampling, triangulating, the renderer's spectra) and refuses a set whose
prepared form exceeds a size, so that the caller pays only for the set it keeps
(:mod:`hrtf.prepared`), and only once it chose to (:meth:`PreparedFile.read`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrtf.errors import HrtfError
from hrtf.hrirset import (
    MAX_DIRECTIONS,
    MAX_INPUT_SAMPLES,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    HrirSet,
)
from hrtf.prepared import PREPARED_FILE, read_prepared

log = logging.getLogger(__name__)

#: Largest SOFA file accepted, in bytes (the large public sets are under 100 MB).
MAX_FILE_BYTES = 256 * 2**20
#: Largest amount of data (all variables, decoded) a file may declare, in MB.
MAX_DATA_MB = 256
#: Address space the parser may map beyond its own libraries, in MB.
MEMORY_LIMIT_MB = 1024
#: Wall-clock limit for one parse, in seconds; the CPU-time limit is the same.
TIMEOUT_S = 30.0
#: Version of what the worker extracts; bump it to invalidate the disk cache.
LOADER_VERSION = 1
#: Sets kept in memory, most recently used first.
MEMORY_CACHE_SIZE = 16

DEFAULT_SOFA_NAME = "MIT_KEMAR_normal_pinna.sofa"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: netCDF-3: classic, 64-bit offset and 64-bit data formats (not SOFA, which is netCDF-4).
NETCDF3_SIGNATURES = (b"CDF\x01", b"CDF\x02", b"CDF\x05")

_WORKER = Path(__file__).with_name("_sofa_worker.py")
_HEAD_BYTES = 64 * 1024
_CHUNK_BYTES = 2**20
_MAX_PROBLEM_CHARS = 400
_NUMERIC_KEYS = ("positions", "hrir", "sample_rate", "delay")
#: What a child that ran out of memory leaves on stderr when it had no chance to say so.
#: Parsing children running now, so that a server shutting down can stop them (stop_parsers).
_RUNNING: set[subprocess.Popen] = set()
_RUNNING_LOCK = threading.Lock()
_OUT_OF_MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "Memory allocation")

_memory_cache: OrderedDict[str, HrirSet] = OrderedDict()
_memory_lock = threading.Lock()


def default_sofa_path() -> Path:
    """Path of the shipped default set, MIT KEMAR (normal pinna), 710 directions."""
    return Path(__file__).with_name("data") / DEFAULT_SOFA_NAME


def load_sofa(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_FILE_BYTES,
    memory_limit_mb: int = MEMORY_LIMIT_MB,
    timeout_s: float = TIMEOUT_S,
) -> HrirSet:
    """Load a SOFA ``SimpleFreeFieldHRIR`` file as an :class:`HrirSet` at 48 kHz.

    Parameters
    ----------
    path : str or PathLike
        The file. Any sample rate from 8 to 768 kHz, any length up to
        :data:`~hrtf.hrirset.MAX_INPUT_SAMPLES` samples, spherical or cartesian positions,
        ``Data.Delay`` per set or per measurement.
    max_bytes : int
        Larger files are refused without being read.
    memory_limit_mb : int
        Address space the parsing child may map beyond its libraries (``RLIMIT_AS``).
    timeout_s : float
        Wall-clock limit of the parsing child; its CPU-time limit is the same.

    Returns
    -------
    HrirSet
        Named after the file. Equal content gives the same object within a process (the name
        is then the one the content was first loaded under).

    Raises
    ------
    HrtfError
        The file is missing, unreadable, too big, not SOFA, damaged, of another convention,
        inconsistent or absurd, or the parser crashed, ran out of memory or time. The message
        names the file and the problem.
    """
    if max_bytes <= 0 or memory_limit_mb <= 0 or timeout_s <= 0:
        raise ValueError("max_bytes, memory_limit_mb and timeout_s must be positive")
    path = Path(path)
    try:
        return _load(path, max_bytes, memory_limit_mb, timeout_s)
    except HrtfError as exc:
        raise HrtfError(f"cannot load HRTF file {path}: {exc}") from None


def clear_memory_cache() -> None:
    """Forget the sets loaded in this process (the disk cache stays)."""
    with _memory_lock:
        _memory_cache.clear()


def _load(path: Path, max_bytes: int, memory_limit_mb: int, timeout_s: float) -> HrirSet:
    digest, head, size = _read_file(path, max_bytes)
    _check_signature(head, size)
    with _memory_lock:
        if digest in _memory_cache:
            _memory_cache.move_to_end(digest, last=False)
            return _memory_cache[digest]

    cached = _cache_dir() / f"{digest}.v{LOADER_VERSION}.npz"
    hrir_set = _from_disk_cache(cached, path.name)
    if hrir_set is None:
        with tempfile.TemporaryDirectory(prefix="spatialjam-sofa-") as tmp:
            folder = Path(tmp)
            copy = folder / "input.sofa"
            if _read_file(path, max_bytes, copy_to=copy)[0] != digest:
                raise HrtfError("the file changed while it was being loaded; try again")
            argv = _worker_argv(copy, folder, memory_limit_mb, timeout_s)
            _run_worker(argv, timeout_s=timeout_s, cwd=folder)
            arrays = folder / "arrays.npz"
            try:
                raw = _RawSet.load(arrays)
            except Exception as exc:  # the child said ok; its output must still be sound
                raise HrtfError(f"the parser's output could not be read ({exc})") from None
            hrir_set = raw.build(path.name)
            _store_in_disk_cache(arrays, cached)
        log.info("parsed %s: %d directions, %d taps", path, len(hrir_set.directions), hrir_set.taps)

    with _memory_lock:
        hrir_set = _memory_cache.setdefault(digest, hrir_set)
        _memory_cache.move_to_end(digest, last=False)
        while len(_memory_cache) > MEMORY_CACHE_SIZE:
            _memory_cache.popitem()
    return hrir_set


def _worker_argv(copy: Path, folder: Path, memory_limit_mb: int, timeout_s: float) -> list[str]:
    argv = [sys.executable, "-P", str(_WORKER), str(copy), str(folder)]
    argv += ["--memory-mb", str(memory_limit_mb), "--cpu-s", str(math.ceil(timeout_s))]
    argv += ["--max-directions", str(MAX_DIRECTIONS)]
    argv += ["--max-samples", str(MAX_INPUT_SAMPLES), "--max-data-mb", str(MAX_DATA_MB)]
    argv += ["--min-rate", repr(MIN_SAMPLE_RATE), "--max-rate", repr(MAX_SAMPLE_RATE)]
    return argv


@dataclass(eq=False)
class PreparedFile:
    """A set the child prepared (:func:`prepare_sofa`), in a private folder until it is read
    or discarded; ``nbytes`` is what reading it will cost (:attr:`HrirSet.nbytes`), ``digest``
    its content's (:attr:`HrirSet.digest`; a caller that holds that set already need not read
    it)."""

    folder: tempfile.TemporaryDirectory
    nbytes: int
    directions: int
    taps: int
    digest: str

    def read(self, name: str) -> HrirSet:
        """The set, named ``name``, spectra computed (blocking); the folder is deleted.

        Raises
        ------
        HrtfError
            The child's output is not a sound prepared set of ``nbytes`` (it never should be).
        """
        try:
            hrirs = read_prepared(Path(self.folder.name) / PREPARED_FILE, name, self.nbytes)
        except Exception as exc:  # the child said ok; its output must still be sound
            raise HrtfError(f"the parser's output could not be read ({exc})") from None
        finally:
            self.discard()
        if hrirs.digest != self.digest:
            raise HrtfError("the parser's output is not the set it announced")
        return hrirs

    def discard(self) -> None:
        """Delete the folder (again is harmless)."""
        self.folder.cleanup()


def prepare_sofa(
    path: str | os.PathLike[str],
    *,
    max_bytes: int,
    max_set_bytes: int,
    memory_limit_mb: int = MEMORY_LIMIT_MB,
    timeout_s: float = TIMEOUT_S,
) -> PreparedFile:
    """Parse and prepare an untrusted SOFA file in a child process; the set is not read yet.

    Parameters
    ----------
    path : str or PathLike
        The file (as for :func:`load_sofa`).
    max_bytes : int
        Larger files are refused without being read.
    max_set_bytes : int
        A set whose prepared form (:attr:`HrirSet.prepared_bytes`: responses, grid and the
        renderer's spectra) would hold more is refused by the child, before its spectra are
        computed.
    memory_limit_mb, timeout_s :
        The child's limits, as for :func:`load_sofa`.

    Raises
    ------
    HrtfError
        As :func:`load_sofa`, and for a set over ``max_set_bytes``; the message names the file.
    """
    path = Path(path)
    folder = tempfile.TemporaryDirectory(prefix="spatialjam-sofa-")
    try:
        copy = Path(folder.name) / "input.sofa"
        _, head, size = _read_file(path, max_bytes, copy_to=copy)
        _check_signature(head, size)
        argv = _worker_argv(copy, Path(folder.name), memory_limit_mb, timeout_s)
        argv += ["--prepare-max-bytes", str(max_set_bytes)]
        reply = _run_worker(argv, timeout_s=timeout_s, cwd=folder.name)
        copy.unlink()
        sizes = [reply.get(key) for key in ("bytes", "directions", "taps")]
        nbytes, directions, taps = (v if isinstance(v, int) and v > 0 else 0 for v in sizes)
        digest = reply.get("digest")
        if (not (nbytes and directions and taps) or nbytes > max_set_bytes
                or not isinstance(digest, str) or not re.fullmatch("[0-9a-f]{64}", digest)):
            raise HrtfError(f"the parser's reply makes no sense ({reply})"[:_MAX_PROBLEM_CHARS])
    except HrtfError as exc:
        folder.cleanup()
        raise HrtfError(f"cannot load HRTF file {path}: {exc}") from None
    except BaseException:
        folder.cleanup()
        raise
    return PreparedFile(folder, nbytes, directions, taps, digest)


def _read_file(path: Path, max_bytes: int, copy_to: Path | None = None) -> tuple[str, bytes, int]:
    """SHA-256, first bytes and size of a regular file of at most ``max_bytes``.

    With ``copy_to``, the bytes hashed are also written there.
    """
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise HrtfError("it is a folder, not a file")
        if not stat.S_ISREG(mode):  # a pipe or device would block or never end
            raise HrtfError("it is not a regular file")
        with open(path, "rb") as src:
            _check_size(os.fstat(src.fileno()).st_size, max_bytes)
            sha = hashlib.sha256()
            head = b""
            size = 0
            with open(copy_to, "xb") if copy_to else contextlib.nullcontext() as dst:
                while chunk := src.read(_CHUNK_BYTES):
                    size += len(chunk)
                    _check_size(size, max_bytes)
                    sha.update(chunk)
                    if dst is not None:
                        dst.write(chunk)
                    if len(head) < _HEAD_BYTES:
                        head += chunk[: _HEAD_BYTES - len(head)]
    except FileNotFoundError:
        raise HrtfError("no such file") from None
    except PermissionError:
        raise HrtfError("permission to read it was denied") from None
    except OSError as exc:
        raise HrtfError(f"it could not be read ({exc.strerror or exc})") from None
    if size == 0:
        raise HrtfError("the file is empty")
    return sha.hexdigest(), head, size


def _check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise HrtfError(
            f"the file is {size / 2**20:.1f} MB or more; at most {max_bytes / 2**20:.1f} MB "
            "are accepted"
        )


def _check_signature(head: bytes, size: int) -> None:
    """Refuse a file that is not netCDF-4/HDF5, or an HDF5 file cut short."""
    if head.startswith(NETCDF3_SIGNATURES):
        # Its reader pads a short file with zeros instead of failing; AES69 excludes it anyway.
        raise HrtfError(
            "it is a netCDF-3 (classic) file; SOFA files are netCDF-4 (HDF5) files: convert it, "
            "for example with nccopy -k nc4"
        )
    offset = _hdf5_superblock_offset(head)
    if offset is None:
        raise HrtfError(
            f"it is not a SOFA file: it looks like {_describe(head)}, whereas a SOFA file is a "
            "netCDF-4 (HDF5) file"
        )
    expected = _hdf5_end_of_file(head) if offset == 0 else None
    if expected is not None and size < expected:
        raise HrtfError(
            f"the file is truncated: it has {size} bytes but its HDF5 header says {expected} "
            "(copy or download it again)"
        )


def _hdf5_superblock_offset(head: bytes) -> int | None:
    """Where the HDF5 signature is: at 0, or past a user block of 512 × 2^k bytes."""
    offset = 0
    while offset + len(HDF5_SIGNATURE) <= len(head):
        if head[offset : offset + len(HDF5_SIGNATURE)] == HDF5_SIGNATURE:
            return offset
        offset = max(512, 2 * offset)
    return None


def _hdf5_end_of_file(head: bytes) -> int | None:
    """The file size an HDF5 superblock at byte 0 declares, if it is sound enough to trust.

    Superblock layout from the HDF5 File Format Specification (version 3.0), section II.A:
    versions 0 and 1 hold base, free-space, end-of-file and driver addresses after 24 (v0) or
    28 (v1) bytes; versions 2 and 3 hold base, extension and end-of-file addresses after 12.
    """
    if len(head) < 64:
        return None
    version = head[8]
    if version in (0, 1):
        if head[9:13] != b"\0\0\0\0":  # free-space, root group, reserved, shared header
            return None
        width, lengths, start = head[13], head[14], 24 + 4 * version
        if lengths not in (2, 4, 8):
            return None
    elif version in (2, 3):
        width, start = head[9], 12
    else:
        return None
    if width not in (2, 4, 8):
        return None
    base, _, end = (
        int.from_bytes(head[start + i * width : start + (i + 1) * width], "little")
        for i in range(3)
    )
    if base != 0 or end == 2 ** (8 * width) - 1:
        return None
    return end


def _describe(head: bytes) -> str:
    """What the first bytes of a file suggest it is, in words."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "a WAV audio file"
    if head[:4] == b"PK\x03\x04":
        return "a ZIP archive"
    if head[:5] == b"%PDF-":
        return "a PDF document"
    sample = head[:512]
    if b"\0" not in sample and all(b >= 0x20 or b in b"\t\n\r" for b in sample):
        return "a text file"
    return f"unknown content starting with bytes {sample[:8].hex(' ')}"


def _run_worker(
    argv: Sequence[str], *, timeout_s: float, cwd: str | os.PathLike[str] | None = None
) -> dict:
    """Run a parsing child and return its JSON reply, or raise why it gave none.

    Parameters
    ----------
    argv : sequence of str
        The command; normally the worker (see :mod:`hrtf._sofa_worker` for its contract).
    timeout_s : float
        The child is killed after this many seconds.
    cwd : path, optional
        Working folder of the child.

    Raises
    ------
    HrtfError
        The child refused the file, was killed by a signal (crash, CPU limit, memory), ran out
        of memory, timed out, or ended without a reply. The message does not name the file.
    """
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        child = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, cwd=cwd, env=env)
    except OSError as exc:
        raise HrtfError(f"the SOFA parser could not be started ({exc.strerror or exc})") from None
    with _RUNNING_LOCK:
        _RUNNING.add(child)
    try:
        stdout, stderr_bytes = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise HrtfError(f"parsing took longer than {timeout_s:g} s and was stopped") from None
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(child)
    done = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr_bytes)
    stderr = done.stderr.decode("utf-8", errors="replace")
    if stderr:
        log.debug("SOFA parser stderr (exit status %d):\n%s", done.returncode, stderr[-4000:])
    if done.returncode < 0:
        raise HrtfError(_signal_problem(-done.returncode))
    reply = _last_json_line(done.stdout)
    if reply is None or (done.returncode != 0 and reply.get("ok")):
        if any(marker in stderr for marker in _OUT_OF_MEMORY_MARKERS):
            raise HrtfError("the parser ran out of memory")
        log.warning(
            "SOFA parser ended with status %d and no reply:\n%s", done.returncode, stderr[-4000:]
        )
        raise HrtfError(f"the parser failed without saying why (exit status {done.returncode})")
    if not reply.get("ok"):
        problem = " ".join(str(reply.get("error") or "the parser refused the file").split())
        raise HrtfError(problem[:_MAX_PROBLEM_CHARS])
    return reply


def stop_parsers() -> int:
    """Kill every parsing child still running (a server shutting down does not wait for them);
    their callers get an error. Returns how many were stopped."""
    with _RUNNING_LOCK:
        children = list(_RUNNING)
    for child in children:
        with contextlib.suppress(OSError):
            child.kill()
    return len(children)


def _signal_problem(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    if number == signal.SIGXCPU:
        return f"the parser used more CPU time than allowed and was stopped ({name})"
    if number == signal.SIGXFSZ:
        return f"the parser's output grew past the size allowed ({name})"
    if number == signal.SIGKILL:
        return f"the parser was killed ({name}), most likely because it ran out of memory"
    return (
        f"the parser crashed on this file ({name}: {signal.strsignal(number)}); "
        "the file is malformed"
    )


def _last_json_line(stdout: bytes) -> dict | None:
    lines = stdout.decode("utf-8", errors="replace").strip().splitlines()
    try:
        reply = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None
    return reply if isinstance(reply, dict) else None


@dataclass(frozen=True)
class _RawSet:
    """The arrays a SOFA file holds, as the worker wrote them (and the disk cache keeps)."""

    positions: np.ndarray
    hrir: np.ndarray
    sample_rate: np.ndarray
    delay: np.ndarray
    position_type: str

    @classmethod
    def load(cls, path: Path) -> _RawSet:
        """Read an ``.npz`` of the worker's layout (no pickles); ``ValueError`` if it is not."""
        with np.load(path, allow_pickle=False) as npz:
            missing = {*_NUMERIC_KEYS, "position_type"} - set(npz.files)
            if missing:
                raise ValueError(f"it lacks {', '.join(sorted(missing))}")
            arrays = {key: npz[key] for key in _NUMERIC_KEYS}
            position_type = npz["position_type"]
        for key, value in arrays.items():
            if value.dtype != np.float64:
                raise ValueError(f"{key} has dtype {value.dtype}, expected float64")
        if position_type.dtype.kind != "U" or position_type.ndim != 0:
            raise ValueError("position_type is not a string")
        return cls(**arrays, position_type=str(position_type))

    def build(self, name: str) -> HrirSet:
        return HrirSet.from_measurements(
            name,
            self.positions,
            self.hrir,
            self.sample_rate,
            position_type=self.position_type,
            delay=self.delay,
        )


def _cache_dir() -> Path:
    root = os.environ.get("SPATIALJAM_CACHE_DIR")
    if root:
        return Path(root) / "hrtf"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spatialjam" / "hrtf"


def _from_disk_cache(cached: Path, name: str) -> HrirSet | None:
    """The set built from a cache file, or ``None`` if there is none or it is unusable."""
    if not cached.is_file():
        return None
    try:
        hrir_set = _RawSet.load(cached).build(name)
    except Exception as exc:  # any damage to the cache file only means parsing again
        log.warning("ignoring damaged HRTF cache file %s (%s)", cached, exc)
        cached.unlink(missing_ok=True)
        return None
    log.info("loaded %s from the cache (%s)", name, cached)
    return hrir_set


def _store_in_disk_cache(arrays: Path, cached: Path) -> None:
    """Copy the worker's output into the cache atomically (write aside, then rename)."""
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=cached.parent, prefix=f".{cached.name}.", suffix=".tmp")
    except OSError as exc:
        log.warning("cannot write to the HRTF cache folder %s (%s)", cached.parent, exc)
        return
    try:
        with os.fdopen(handle, "wb") as dst, open(arrays, "rb") as src:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, cached)
    except OSError as exc:
        log.warning("could not write the HRTF cache file %s (%s)", cached, exc)
        Path(tmp).unlink(missing_ok=True)
