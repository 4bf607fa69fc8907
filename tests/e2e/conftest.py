"""The end-to-end tier: real headless Chromium (Debian's, at /usr/bin/chromium) against real
servers. Every test here is skipped, saying why, where that browser is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.browser import CHROMIUM

HERE = Path(__file__).resolve().parent

NEEDS_CHROMIUM = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="needs Debian's chromium at /usr/bin/chromium "
                                           "(apt-get install chromium; make test does it)")


def pytest_collection_modifyitems(items):
    # A conftest's hook sees every collected item, not only its folder's: mark only ours.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(NEEDS_CHROMIUM)
