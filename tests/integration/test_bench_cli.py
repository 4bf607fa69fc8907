"""``spatialjam bench …`` as a command other packages add: each bench declares its options in
its own module, found through the ``spatialjam.commands`` entry point, loaded only when chosen,
and nothing outside ``bench/`` imports ``bench``."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import BENCHES
from server.cli.main import NO_PLUGINS, build_parser, main

ROOT = Path(__file__).resolve().parents[2]
#: The packages of the product, which must not import bench/.
PRODUCT = ("server", "dsp", "hrtf", "signaling", "ai_accompany", "client_web")


def bench_imports(path: Path) -> list[int]:
    """The lines of the module at ``path`` that import ``bench`` (or a name under it) or name
    one in a string (``"bench.x:run"``, for ``importlib``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        if any(n == "bench" or n.startswith(("bench.", "bench:")) for n in names):
            found.append(node.lineno)
    return found


def test_nothing_outside_bench_imports_it():
    found = [f"{path.relative_to(ROOT)}:{line}" for package in PRODUCT
             for path in sorted((ROOT / package).rglob("*.py")) for line in bench_imports(path)]
    assert found == []


def test_the_import_check_finds_imports_and_strings_naming_bench(tmp_path):
    module = tmp_path / "probe.py"
    module.write_text('import bench.soak\nfrom bench import cli\nRUN = "bench.room:run"\n'
                      'import benchmark\nTEXT = "bench results"\n')
    assert bench_imports(module) == [1, 2, 3]


@pytest.mark.parametrize("name", list(BENCHES))
def test_each_bench_declares_its_options_and_runner_in_its_own_module(name):
    module = importlib.import_module(BENCHES[name][0])
    args = build_parser().parse_args(["bench", name])
    assert args.run is getattr(module, f"run_{name}_bench")
    assert args.run.__module__ == module.__name__ == f"bench.{name}"
    assert "json" in vars(args)  # every bench can print its report as JSON


def test_a_bench_module_is_imported_only_when_its_bench_is_chosen():
    probe = ("import json, sys\n"
             "from server.cli.main import build_parser\n"
             "seen = {}\n"
             "for argv in (['serve'], ['bench', 'room', '--bots', '3']):\n"
             "    build_parser().parse_args(argv)\n"
             "    seen[argv[0]] = sorted(m for m in sys.modules if m.split('.')[0] == 'bench')\n"
             "print(json.dumps(seen))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout)
    assert seen["serve"] == ["bench", "bench.cli"]
    assert "bench.room" in seen["bench"]
    assert not {"bench.mixer", "bench.soak", "bench.capacity"} & set(seen["bench"])


def test_without_the_entry_points_bench_is_refused_with_how_to_install(monkeypatch, capsys):
    monkeypatch.setattr(sys.modules["server.cli.main"], "entry_points", lambda group: [])
    with pytest.raises(SystemExit) as stop:
        main(["bench", "mixer"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'bench'" in err and err.rstrip().endswith(NO_PLUGINS)
    assert "make test" in NO_PLUGINS
