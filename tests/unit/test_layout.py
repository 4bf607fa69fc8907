"""The test suite's layout: every test module in a tier folder (unit: no servers, no sockets, no
child processes; integration: real servers, aiortc bots, Redis, child processes; e2e: real
Chromium), shared code in tests/helpers/ and fixtures in conftest.py files, and no module under
tests/ importing a test module or a conftest."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
TIERS = ("unit", "integration", "e2e")
#: What a unit test module may not import: the means of talking to a server or starting one.
NOT_IN_UNIT = ("subprocess", "socket", "websockets", "aiohttp", "urllib.request", "http.client",
               "multiprocessing", "redis", "playwright", "bench.serverproc", "bench.bot",
               "bench.botproc", "bench.lightbot", "tests.helpers.live", "tests.helpers.browser",
               "tests.helpers.hostile")


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, by its absolute name (``from a import b`` gives a and a.b)."""
    names = set()
    package = ".".join(path.relative_to(TESTS.parent).parent.parts)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_every_test_module_is_in_a_tier_folder():
    stray = [str(p.relative_to(TESTS)) for p in TESTS.rglob("test_*.py")
             if p.relative_to(TESTS).parts[0] not in TIERS]
    assert stray == [], "test modules belong in tests/unit, tests/integration or tests/e2e"


def test_no_module_under_tests_imports_a_test_module_or_a_conftest():
    offenders = {}
    for path in sorted(TESTS.rglob("*.py")):
        bad = sorted(name for name in imports(path) if name.startswith("tests.")
                     and name.rsplit(".", 1)[-1].startswith(("test_", "conftest")))
        if bad:
            offenders[str(path.relative_to(TESTS))] = bad
    assert offenders == {}, "shared code goes into tests/helpers/, fixtures into a conftest.py"


def test_unit_test_modules_start_no_server_and_open_no_socket():
    offenders = {}
    for path in sorted((TESTS / "unit").rglob("*.py")):
        bad = sorted(name for name in imports(path)
                     if any(name == banned or name.startswith(banned + ".")
                            for banned in NOT_IN_UNIT))
        if bad:
            offenders[path.name] = bad
    assert offenders == {}, "a test that needs these belongs in tests/integration"
