"""Shared fixtures: the HRTF sets, loaded once per session; the model internet of the deployment
tests (tests/helpers/netns.py), a test CA and coturn on it, each built for one test."""

from __future__ import annotations

import gc
import shutil
import subprocess
import time

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def young_heap():
    """Each test starts with the objects of the tests before it frozen out of Python's cyclic
    garbage collector (``gc.freeze``), after collecting the last test's garbage.

    The suite's process keeps what hundreds of tests imported and cached (half a million
    objects a third of the way in), and a full collection walks all of it: 300 to 650 ms
    with the loop stopped, measured here. In a test whose bots live in this process, that
    pause looked like a gap in a server's mix (656 ms in a fresh-clone run; none when the
    test ran alone). Frozen, a collection walks only what the running test made, as in a
    process of its own; what is still referenced is kept, and garbage freed by reference
    counting is freed as always.
    """
    gc.collect()
    gc.freeze()
    yield


@pytest.fixture(scope="session", autouse=True)
def state_dir(tmp_path_factory):
    """Servers the tests start keep their room state in a temporary folder, never in $HOME."""
    folder = tmp_path_factory.mktemp("state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPATIALJAM_STATE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def kemar():
    from hrtf.library import load_hrtf

    return load_hrtf("kemar")


@pytest.fixture(scope="session")
def spherical_head():
    from hrtf.library import load_hrtf

    return load_hrtf("spherical-head")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A Redis server of the tests' own (Debian's redis-server) on a free loopback port,
    keeping nothing on disk; the tests that ask for it skip where it is not installed."""
    import redis

    from bench.serverproc import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (make test installs it)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    client.close()
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(5)


@pytest.fixture
def internet(tmp_path):
    """The model internet (tests/helpers/netns.py), torn down after the test; skips saying
    why where network namespaces cannot be built."""
    from tests.helpers import netns

    netns.require()
    with netns.Internet(tmp_path) as net:
        yield net


@pytest.fixture
def ca(tmp_path):
    from tests.helpers.certs import TestCA

    return TestCA(tmp_path / "ca")


@pytest.fixture
def turn(internet, ca):
    """coturn on the model internet's TURN host, with a fresh shared secret."""
    from tests.helpers import coturn

    return coturn.start_coturn(internet, ca)
