"""Loading SOFA files with hrtf.sofa: good files of every shape, and every kind of bad one.

The bad files are built here, in ``tmp_path``: with sofar from the shipped KEMAR data, by hand
with netCDF4 where sofar would refuse to write them, or as raw bytes. Each parse starts a child
process (about half a second), so each test parses as few files as its behaviour needs.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
import time
import wave

import netCDF4
import numpy as np
import pytest
import sofar

from hrtf import sofa
from hrtf.errors import HrtfError
from hrtf.hrirset import HrirSet
from hrtf.sofa import clear_memory_cache, default_sofa_path, load_sofa
from tests.helpers.sofa import hand_written

KEMAR_DIRECTIONS = 710
KEMAR_RATE = 44_100


@pytest.fixture(autouse=True)
def fresh_caches(tmp_path, monkeypatch):
    """Each test starts with no set in memory and an empty disk cache of its own."""
    cache_root = tmp_path / "cache"
    monkeypatch.setenv("SPATIALJAM_CACHE_DIR", str(cache_root))
    clear_memory_cache()
    yield cache_root
    clear_memory_cache()


@pytest.fixture(scope="module")
def kemar_sofa():
    """The shipped KEMAR file as a sofar object (read in this process: a trusted file)."""
    return sofar.read_sofa(default_sofa_path(), verify=False, verbose=False)


@pytest.fixture(scope="module")
def kemar_reference(kemar_sofa):
    """The KEMAR set built straight from its arrays, without the loader."""
    s = kemar_sofa
    return HrirSet.from_measurements(
        "reference", s.SourcePosition, s.Data_IR, s.Data_SamplingRate, delay=s.Data_Delay
    )


def kemar_copy(kemar_sofa, path, **changes):
    """Write the KEMAR data to ``path`` with sofar, with some attributes changed."""
    s = kemar_sofa.copy()
    for name, value in changes.items():
        setattr(s, name, value)
    sofar.write_sofa(str(path), s)
    return path


def refused(path, match, **limits):
    """Assert that loading ``path`` fails with one readable error naming the file."""
    with pytest.raises(HrtfError, match=match) as info:
        load_sofa(path, **limits)
    message = str(info.value)
    assert str(path) in message
    assert "Traceback" not in message and "\n" not in message
    return message


# --- files that load ---------------------------------------------------------------------------


def test_shipped_kemar_loads_at_48k(kemar_reference):
    hs = load_sofa(default_sofa_path())
    assert hs.name == "MIT_KEMAR_normal_pinna.sofa"
    assert hs.directions.shape == (KEMAR_DIRECTIONS, 3)
    assert hs.hrir.shape[:2] == (KEMAR_DIRECTIONS, 2)
    # 512 taps at 44.1 kHz are 557 at 48 kHz, less the leading silence trimmed.
    assert abs(hs.taps - 538) <= 8
    assert hs.digest == kemar_reference.digest


def test_cartesian_positions_give_the_same_set(tmp_path, kemar_sofa, kemar_reference):
    az, el = np.radians(kemar_sofa.SourcePosition[:, :2]).T
    radius = kemar_sofa.SourcePosition[:, 2]
    xyz = np.column_stack(
        [radius * np.cos(el) * np.cos(az), radius * np.cos(el) * np.sin(az), radius * np.sin(el)]
    )
    path = kemar_copy(
        kemar_sofa,
        tmp_path / "cartesian.sofa",
        SourcePosition=xyz,
        SourcePosition_Type="cartesian",
        SourcePosition_Units="metre",
    )
    hs = load_sofa(path)
    # Round trip through cos/sin: directions agree to float64 rounding.
    np.testing.assert_allclose(hs.directions, kemar_reference.directions, atol=1e-12)
    np.testing.assert_array_equal(hs.hrir, kemar_reference.hrir)


def test_delay_field_delays_one_ear_by_the_time_given(tmp_path, kemar_sofa, kemar_reference):
    # 44.1 samples at 44.1 kHz is 1 ms: exactly 48 samples at 48 kHz.
    path = kemar_copy(kemar_sofa, tmp_path / "delay.sofa", Data_Delay=np.array([[0.0, 44.1]]))
    hs = load_sofa(path)

    def onsets(hrir):
        """First sample of each response above a tenth of its own peak, shape (D, 2)."""
        level = np.abs(hrir)
        return np.argmax(level > 0.1 * level.max(axis=-1, keepdims=True), axis=-1)

    delayed = onsets(hs.hrir)
    plain = onsets(kemar_reference.hrir)
    shift = (delayed[:, 1] - delayed[:, 0]) - (plain[:, 1] - plain[:, 0])
    # An integer shift at 48 kHz moves each threshold crossing by exactly 48 samples.
    np.testing.assert_array_equal(shift, 48)


@pytest.mark.parametrize("rate", [22_050, 96_000])
def test_any_sample_rate_is_resampled_to_48k(tmp_path, kemar_sofa, kemar_reference, rate):
    path = kemar_copy(kemar_sofa, tmp_path / f"rate{rate}.sofa", Data_SamplingRate=rate)
    hs = load_sofa(path)
    assert hs.directions.shape == (KEMAR_DIRECTIONS, 3)
    # The same samples declared at another rate last KEMAR_RATE / rate times as long at 48 kHz;
    # trimming (a margin of 4 taps before the onset, the tail threshold) moves a few taps.
    expected = kemar_reference.taps * KEMAR_RATE / rate
    assert abs(hs.taps - expected) <= 8


def test_convention_version_unknown_to_sofar_still_loads(tmp_path, kemar_sofa, kemar_reference):
    path = kemar_copy(kemar_sofa, tmp_path / "old.sofa")
    with netCDF4.Dataset(path, "a") as ds:
        ds.SOFAConventionsVersion = "0.6"
    hs = load_sofa(path)
    assert hs.digest == kemar_reference.digest


def test_default_sofa_path_is_the_shipped_kemar_file():
    path = default_sofa_path()
    assert path.name == "MIT_KEMAR_normal_pinna.sofa"
    assert path.read_bytes()[:8] == sofa.HDF5_SIGNATURE


# --- caches ------------------------------------------------------------------------------------


def failing_worker(*args, **kwargs):
    raise AssertionError("the file was parsed again")


def test_same_content_gives_the_same_object_without_parsing(tmp_path, monkeypatch):
    first = load_sofa(default_sofa_path())
    copy = tmp_path / "renamed.sofa"
    copy.write_bytes(default_sofa_path().read_bytes())
    monkeypatch.setattr(sofa, "_run_worker", failing_worker)
    assert load_sofa(default_sofa_path()) is first
    assert load_sofa(copy) is first


def test_disk_cache_serves_a_new_process_without_parsing(fresh_caches, monkeypatch):
    first = load_sofa(default_sofa_path())
    assert len(list((fresh_caches / "hrtf").glob("*.npz"))) == 1
    clear_memory_cache()  # what a new process starts with
    monkeypatch.setattr(sofa, "_run_worker", failing_worker)
    second = load_sofa(default_sofa_path())
    assert second is not first
    assert second.digest == first.digest


def test_damaged_disk_cache_file_is_ignored_and_rewritten(fresh_caches):
    first = load_sofa(default_sofa_path())
    (cached,) = (fresh_caches / "hrtf").glob("*.npz")
    cached.write_bytes(b"PK\x03\x04 not a zip archive at all")
    clear_memory_cache()
    second = load_sofa(default_sofa_path())
    assert second.digest == first.digest
    with np.load(cached, allow_pickle=False) as npz:
        assert npz["hrir"].shape == (KEMAR_DIRECTIONS, 2, 512)
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no temporary left


def test_unwritable_disk_cache_does_not_stop_loading(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("SPATIALJAM_CACHE_DIR", str(blocker))
    assert load_sofa(default_sofa_path()).directions.shape == (KEMAR_DIRECTIONS, 3)


# --- files that are refused before any parser sees them ----------------------------------------


def test_missing_file(tmp_path):
    refused(tmp_path / "nowhere.sofa", "no such file")


def test_folder_instead_of_file(tmp_path):
    refused(tmp_path, "folder")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.sofa"
    path.write_bytes(b"")
    refused(path, "empty")


def test_file_larger_than_max_bytes():
    refused(default_sofa_path(), r"1\.1 MB or more; at most 0\.5 MB", max_bytes=2**19)


def test_text_file_is_not_sofa(tmp_path):
    path = tmp_path / "notes.sofa"
    path.write_text("azimuth, elevation, left, right\n0, 0, 0.5, 0.5\n")
    refused(path, "not a SOFA file: it looks like a text file")


def test_wav_file_is_not_sofa(tmp_path):
    path = tmp_path / "impulse.sofa"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(48_000)
        out.writeframes(np.zeros(960 * 2, dtype=np.int16).tobytes())
    refused(path, "not a SOFA file: it looks like a WAV audio file")


def test_netcdf3_file_is_not_sofa(tmp_path):
    path = tmp_path / "classic.sofa"
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.Conventions = "SOFA"
    refused(path, "netCDF-3 .classic. file; SOFA files are netCDF-4")


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.sofa"
    path.write_bytes(default_sofa_path().read_bytes()[:600_000])
    refused(path, "truncated: it has 600000 bytes but its HDF5 header says 1173158")


# --- files the parsing child refuses -----------------------------------------------------------


def test_hdf5_signature_followed_by_garbage(tmp_path):
    path = tmp_path / "garbage.sofa"
    path.write_bytes(sofa.HDF5_SIGNATURE + b"this is not HDF5 " * 200)
    refused(path, "HDF5/netCDF structure is damaged .* malformed")


def test_bytes_corrupted_in_the_middle(tmp_path):
    data = bytearray(default_sofa_path().read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"\xa5" * 4096  # inside the compressed Data.IR chunks
    path = tmp_path / "corrupted.sofa"
    path.write_bytes(bytes(data))
    refused(path, "data could not be decoded .* corrupted")


@pytest.mark.parametrize("convention", ["GeneralFIR", "SimpleFreeFieldHRTF"])
def test_other_sofa_convention(tmp_path, convention):
    path = tmp_path / f"{convention}.sofa"
    sofar.write_sofa(str(path), sofar.Sofa(convention))
    refused(path, f"uses the SOFA convention '{convention}'; only 'SimpleFreeFieldHRIR'")


def test_netcdf_file_that_is_not_sofa(tmp_path):
    path = hand_written(tmp_path / "plain.nc", attributes={"Conventions": "CF-1.8"})
    refused(path, "not a SOFA file .*Conventions is 'CF-1.8'")


def test_missing_variable(tmp_path):
    path = hand_written(tmp_path / "no-ir.sofa", omit=("Data.IR",))
    refused(path, "lacks the variable.* Data.IR")


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_impulse_responses(tmp_path, kemar_sofa, bad):
    ir = kemar_sofa.Data_IR.copy()
    ir[100, 1, 50:53] = bad
    path = hand_written(tmp_path / "nonfinite.sofa", shape=ir.shape, ir=ir, rate=KEMAR_RATE)
    refused(path, "impulse responses contain 3 NaN or infinite values")


def test_three_receivers(tmp_path):
    refused(hand_written(tmp_path / "three.sofa", shape=(6, 3, 32)), "3 receivers.* 2 .*ear")


def test_source_positions_not_matching_measurements(tmp_path):
    path = hand_written(tmp_path / "rows.sofa", shape=(6, 2, 32), position_rows=5)
    refused(path, "SourcePosition has 5 rows but Data.IR has 6 measurements")


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((250_000, 2, 8), "declares 250000 measurements; 1 to 200000"),
        ((4, 2, 100_000), "impulse responses of 100000 samples; 1 to 65536"),
        ((2_000, 2, 20_000), r"declares 610 MB of data; at most 256 MB"),
    ],
    ids=["measurements", "samples", "total-data"],
)
def test_absurd_declared_sizes_are_refused_before_reading(tmp_path, shape, match):
    path = hand_written(tmp_path / "huge.sofa", shape=shape, write_data=False)
    assert path.stat().st_size < 2**20  # declared, never stored
    refused(path, match)


@pytest.mark.parametrize("rate", [0.0, 1e9])
def test_absurd_sample_rate(tmp_path, rate):
    path = hand_written(tmp_path / "rate.sofa", rate=rate)
    refused(path, re.escape(f"sample rate {rate:g} Hz is outside 8000..768000 Hz"))


# --- the child's limits and isolation ----------------------------------------------------------


def test_memory_limit_too_small_for_the_file():
    # KEMAR holds 5.6 MB of float64 data; 70 MB is under what parsing it needs.
    refused(default_sofa_path(), "needs about 81 MB of memory.* limit of 70 MB", memory_limit_mb=70)


def test_memory_limit_too_small_for_any_file():
    refused(default_sofa_path(), "memory limit of 8 MB is below", memory_limit_mb=8)


def test_child_running_out_of_memory_is_reported():
    grab = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (2**28, 2**28)); bytearray(2**30)"
    )
    with pytest.raises(HrtfError, match="ran out of memory"):
        sofa._run_worker([sys.executable, "-c", grab], timeout_s=20)


def test_parser_crash_kills_only_the_child():
    crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    with pytest.raises(HrtfError, match=r"crashed on this file \(SIGSEGV: Segmentation fault\)"):
        sofa._run_worker([sys.executable, "-c", crash], timeout_s=20)


def test_cpu_time_limit_stops_the_child():
    spin = "import resource; resource.setrlimit(resource.RLIMIT_CPU, (1, 2))\nwhile True: pass"
    with pytest.raises(HrtfError, match=f"more CPU time than allowed .*{signal.SIGXCPU.name}"):
        sofa._run_worker([sys.executable, "-c", spin], timeout_s=20)


def test_a_server_shutting_down_stops_parses_under_way():
    """``stop_parsers`` kills running children: their callers get an error at once, not after
    the parse's time limit (a server exiting would otherwise wait for them)."""
    outcome: list[BaseException] = []

    def parse() -> None:
        try:
            sofa._run_worker([sys.executable, "-c", "import time; time.sleep(60)"], timeout_s=60)
        except HrtfError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=parse)
    worker.start()
    deadline = time.monotonic() + 20
    while not sofa._RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sofa.stop_parsers() == 1
    worker.join(20)
    assert not worker.is_alive()
    assert len(outcome) == 1 and "SIGKILL" in str(outcome[0]), outcome
    assert not sofa._RUNNING


def test_slow_parse_times_out():
    refused(default_sofa_path(), r"longer than 0\.05 s", timeout_s=0.05)


def test_child_without_reply_is_an_error():
    with pytest.raises(HrtfError, match=r"failed without saying why \(exit status 7\)"):
        sofa._run_worker([sys.executable, "-c", "raise SystemExit(7)"], timeout_s=20)
