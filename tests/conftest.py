"""Shared fixtures: the HRTF sets, loaded once per session."""

from __future__ import annotations

import numpy as np
import pytest

from hrtf.constants import FRAME


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


def white_noise(seconds: float, seed: int = 7, level: float = 0.1) -> np.ndarray:
    """Gaussian white noise, whole frames long, float32."""
    frames = round(seconds * 48_000 / FRAME)
    return (np.random.default_rng(seed).standard_normal(frames * FRAME) * level).astype(np.float32)
