"""A prepared set handed between processes (hrtf.prepared): what is written is what is read,
nothing more is read than announced, and no index read can reach outside its arrays. Written
and read in this process here; tests/integration/test_hrtf_upload_memory.py has the child."""

from __future__ import annotations

import numpy as np
import pytest

from hrtf.hrirset import spectra_bytes
from hrtf.prepared import PREPARED_FILE, read_prepared, write_prepared


def test_a_prepared_set_reads_back_equal_with_its_spectra(kemar, tmp_path):
    kemar = type(kemar)(**{**vars(kemar), "_spectra": {}})  # none of other tests' frame sizes
    held = write_prepared(kemar, tmp_path)
    back = read_prepared(tmp_path / PREPARED_FILE, "again.sofa", held)
    assert back.name == "again.sofa" and back.digest == kemar.digest
    assert held == back.nbytes == back.prepared_bytes == kemar.prepared_bytes
    np.testing.assert_array_equal(back.hrir, kemar.hrir)
    for a, b in zip(back.spectra(back.nfft), kemar.spectra(kemar.nfft), strict=True):
        np.testing.assert_array_equal(a, b)  # there already: not computed again
    np.testing.assert_array_equal(back.grid.facets, kemar.grid.facets)
    directions = np.array([[0.0, 1.0, 0.0], [0.3, -0.2, 0.9]])
    for a, b in zip(back.grid.weights(directions), kemar.grid.weights(directions), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_prepared_size_counts_the_spectra_to_come(spherical_head):
    fresh = type(spherical_head)(**{**vars(spherical_head), "_spectra": {}})
    points = len(fresh.grid.points)
    assert fresh.prepared_bytes == fresh.nbytes + spectra_bytes(points, fresh.nfft)
    assert spectra_bytes(points, fresh.nfft) == points * 2 * (fresh.nfft // 2 + 1) * 8


def test_the_bytes_written_are_the_default_frames_spectra_only(kemar, tmp_path):
    """A set that renderers at shorter frames also hold spectra of another size for (issue 17)
    is written, and read back, with its default size's only."""
    kemar = type(kemar)(**{**vars(kemar), "_spectra": {}})
    kemar.spectra(1024)
    held = write_prepared(kemar, tmp_path)
    back = read_prepared(tmp_path / PREPARED_FILE, "again.sofa", held)
    assert held == back.nbytes == kemar.nbytes - spectra_bytes(len(kemar.grid.points), 1024)


def test_a_file_holding_more_than_announced_is_not_read(kemar, tmp_path):
    held = write_prepared(kemar, tmp_path)
    with pytest.raises(ValueError, match="more than the 1000000 announced"):
        read_prepared(tmp_path / PREPARED_FILE, "x", 1_000_000)
    assert held > 1_000_000


def rewrite(kemar, tmp_path, **changed):
    write_prepared(kemar, tmp_path)
    with np.load(tmp_path / PREPARED_FILE) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays.update(changed)
    np.savez(tmp_path / PREPARED_FILE, **arrays)
    return tmp_path / PREPARED_FILE


@pytest.mark.parametrize(("name", "bad", "words"), [
    ("facets", lambda k: np.where(k.grid.facets == 0, len(k.grid.points), k.grid.facets),
     "grid facets has an index outside"),
    ("neighbors", lambda k: -k.grid.neighbors, "grid neighbors has an index outside"),
    ("source_of", lambda k: k.grid.source_of + 1, "grid source_of has an index outside"),
    ("hrir", lambda k: k.hrir.astype(np.float64), "hrir is float64"),
    ("spectra_re", lambda k: k.spectra(k.nfft)[0][:-1], "spectra_re is float32"),
    ("spectra_im", lambda k: np.full_like(k.spectra(k.nfft)[1], np.nan), "NaN or infinite"),
    ("directions", lambda k: 2 * k.directions, "not unit vectors"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_prepared_file_that_is_not_sound_is_refused(kemar, tmp_path, name, bad, words):
    path = rewrite(kemar, tmp_path, **{name: bad(kemar)})
    with pytest.raises(ValueError, match=words):
        read_prepared(path, "x", 10 * kemar.prepared_bytes)
