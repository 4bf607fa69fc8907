"""The package boundaries docs/ARCHITECTURE.md draws, and the size of modules, checked from
the source (no import is run): a change that crosses one fails here with the place named."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("server", "dsp", "hrtf", "signaling", "ai_accompany")
#: Lines a module may hold; past it, split it along a seam (STYLE.md).
MAX_MODULE_LINES = 600


def modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Top-level package names ``path`` imports, anywhere in it (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def crossings(packages: tuple[str, ...], forbidden: set[str]) -> list[str]:
    return [f"{path.relative_to(ROOT)} imports {', '.join(sorted(imported(path) & forbidden))}"
            for path in modules(*packages) if imported(path) & forbidden]


def test_the_engine_imports_nothing_above_it_nor_asyncio_or_aiortc():
    assert crossings(("dsp", "hrtf"), {"server", "bench", "ai_accompany", "signaling",
                                       "asyncio", "aiortc", "websockets"}) == []


def test_the_protocol_core_touches_no_audio_and_no_server():
    assert crossings(("signaling",), {"server", "bench", "dsp", "ai_accompany", "aiortc",
                                      "numpy", "asyncio"}) == []


def test_nothing_of_the_product_imports_the_benches():
    assert crossings(PRODUCT, {"bench"}) == []


def test_the_sidecar_reaches_the_server_only_over_its_channel():
    assert crossings(("ai_accompany",), {"server", "bench", "aiortc"}) == []


@pytest.mark.parametrize("package", [*PRODUCT, "bench", "client_web"])
def test_no_module_is_over_the_line_limit(package):
    files = [*(ROOT / package).rglob("*.py"), *(ROOT / package).rglob("*.js")]
    long = {str(p.relative_to(ROOT)): n for p in files
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"split these along a seam: {long}"


def test_the_server_is_in_rooms_by_concern():
    loose = sorted(p.name for p in (ROOT / "server").glob("*.py"))
    assert loose == ["__init__.py", "errors.py"], loose
