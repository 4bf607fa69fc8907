"""A set prepared for the renderer, handed from the process that made it to the one that plays.

An uploaded SOFA file is parsed *and prepared* in a child process (:mod:`hrtf._sofa_worker`
with ``--prepare-max-bytes``): validated, resampled, trimmed, triangulated, and its spectra
computed, so that every temporary of that work (about five times the set's responses for a
large set) is paid by the child. The serving process then reads only what it will keep, in
the form it keeps it:

``prepared.npz`` (uncompressed, no pickles) holds ``directions`` (D, 3) float64, ``hrir``
(D, 2, N) float32, ``trimmed_samples`` (), the grid's arrays
(:data:`~hrtf.grid.DirectionGrid.ARRAYS`) and ``spectra_re``/``spectra_im`` (P, 2, B) float32
for the renderer's FFT size. :func:`read_prepared` reads each array straight into its final
buffer (numpy reads an ``.npz`` member in 256 KiB pieces), so the reader's memory grows by the
set's size and no more; measured with a 41,527-direction set, see
``tests/integration/test_hrtf_upload_memory.py``.

The reader trusts nothing it reads (the child parsed untrusted input): dtypes, shapes,
finiteness and every index are checked, and the content digest is computed again.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from hrtf.grid import DirectionGrid
from hrtf.hrirset import MAX_DIRECTIONS, MAX_TAPS, HrirSet, content_digest, fft_size

PREPARED_FILE = "prepared.npz"
#: Bytes an ``.npz`` may hold beyond its arrays' data (zip entries, ``.npy`` headers).
CONTAINER_OVERHEAD = 64 * 1024
#: Rows checked for finiteness at a time: the check's temporaries stay small.
_CHUNK_ROWS = 1024
_SCALARS = ("trimmed_samples",)


def write_prepared(hrirs: HrirSet, folder: Path) -> int:
    """Compute ``hrirs``' spectra and write the set into ``folder`` as :data:`PREPARED_FILE`.

    Returns the bytes the set holds once read back (:attr:`HrirSet.nbytes`): the spectra of
    :attr:`HrirSet.nfft` only, whatever other sizes ``hrirs`` holds (renderers at shorter frames
    compute their own).
    """
    re, im = hrirs.spectra(hrirs.nfft)
    arrays: dict[str, Any] = {
        "directions": hrirs.directions, "hrir": hrirs.hrir, "spectra_re": re, "spectra_im": im,
        "trimmed_samples": np.array(hrirs.trimmed_samples, dtype=np.int64),
        **hrirs.grid.arrays()}
    np.savez(folder / PREPARED_FILE, **arrays)
    return hrirs.directions.nbytes + hrirs.hrir.nbytes + hrirs.grid.nbytes + re.nbytes + im.nbytes


def read_prepared(path: Path, name: str, max_bytes: int) -> HrirSet:
    """The set :func:`write_prepared` wrote at ``path``, named ``name``, with its spectra.

    Parameters
    ----------
    max_bytes : int
        Most bytes its arrays may hold: a file that says more is refused before any is read.

    Raises
    ------
    ValueError
        The file is not a prepared set of the expected layout, or holds more than
        ``max_bytes``; the message says what.
    """
    with zipfile.ZipFile(path) as archive:
        held = sum(member.file_size for member in archive.infolist())
    if held > max_bytes + CONTAINER_OVERHEAD:
        raise ValueError(f"it holds {held} bytes, more than the {max_bytes} announced")
    with np.load(path, allow_pickle=False) as npz:
        expected = {"directions", "hrir", *_SCALARS, "spectra_re", "spectra_im",
                    *DirectionGrid.ARRAYS}
        if set(npz.files) != expected:
            raise ValueError(f"it holds {sorted(npz.files)}, expected {sorted(expected)}")
        directions, hrir = npz["directions"], npz["hrir"]
        _check(directions, "directions", np.float64, (len(directions), 3))
        if hrir.ndim != 3:
            raise ValueError(f"hrir has {hrir.ndim} dimensions, expected 3")
        _check(hrir, "hrir", np.float32, (len(directions), 2, hrir.shape[2]))
        d, n = hrir.shape[0], hrir.shape[2]
        if not 3 <= d <= MAX_DIRECTIONS or not 1 <= n <= MAX_TAPS:
            raise ValueError(f"hrir has shape {hrir.shape}: not a set's responses")
        trimmed = npz["trimmed_samples"]
        if trimmed.dtype != np.int64 or trimmed.shape != () or trimmed < 0:
            raise ValueError("trimmed_samples is not a count")
        grid = DirectionGrid.from_arrays({key: npz[key] for key in DirectionGrid.ARRAYS}, d)
        nfft = fft_size(n)
        shape = (len(grid.points), 2, nfft // 2 + 1)
        re, im = npz["spectra_re"], npz["spectra_im"]
        _check(re, "spectra_re", np.float32, shape)
        _check(im, "spectra_im", np.float32, shape)
    norms = np.linalg.norm(directions, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-6):
        raise ValueError("directions are not unit vectors")
    return HrirSet(name, directions, hrir, grid, int(trimmed), content_digest(directions, hrir),
                   {nfft: (re, im)})


def _check(value: np.ndarray, name: str, dtype: type, shape: tuple[int, ...]) -> None:
    """``value`` has ``dtype`` and ``shape`` and holds finite numbers only."""
    if value.dtype != dtype or value.shape != shape:
        raise ValueError(f"{name} is {value.dtype} {value.shape}, expected {np.dtype(dtype)} "
                         f"{shape}")
    for lo in range(0, len(value), _CHUNK_ROWS):
        if not np.all(np.isfinite(value[lo:lo + _CHUNK_ROWS])):
            raise ValueError(f"{name} holds NaN or infinite values")
