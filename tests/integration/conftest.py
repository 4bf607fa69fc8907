"""Fixtures of the tests on the model internet (tests/helpers/netns.py, coturn.py): the
internet itself, a test CA, and coturn on it. Each is built for one test and torn down after."""

from __future__ import annotations

import pytest

from tests.helpers import coturn, netns
from tests.helpers.certs import TestCA


@pytest.fixture
def internet(tmp_path):
    netns.require()
    with netns.Internet(tmp_path) as net:
        yield net


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path / "ca")


@pytest.fixture
def turn(internet, ca):
    return coturn.start_coturn(internet, ca)
