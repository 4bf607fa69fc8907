"""``spatialjam bench …``: the scenario benchmarks, added to the ``spatialjam`` command.

pyproject.toml names :func:`register` in the ``spatialjam.commands`` entry points, which the
``spatialjam`` command reads (:mod:`server.cli.main`), so nothing outside ``bench/`` imports it.
Each bench declares its options beside its runner, in its own module: ``add_arguments(parser)``
adds them and sets the runner as the parser's ``run`` default. A bench's module loads what it
measures (the engine, aiortc, numpy: seconds), so it is imported only when its bench is the one
chosen (:class:`BenchParser`); until then a bench is its name and its help line here.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

#: Each bench: the module that declares and runs it, and its line in ``spatialjam bench --help``.
BENCHES = {
    "mixer": ("bench.mixer", "time the renderer's tick against a naive per-pair convolution"),
    "acoustics": ("bench.acoustics",
                  "the renderer's and the room tick's cost with room acoustics and without"),
    "room": ("bench.room",
             "a live room of aiortc bots: tick time and one-way delay through the server"),
    "latency": ("bench.latency", "mouth-to-ear through the server beside peer-to-peer baselines"),
    "network": ("bench.network",
                "delay, concealment and recovery under loss, jitter and reordering"),
    "capacity": ("bench.capacity",
                 "ramp bots into one room, then into many rooms, until real time fails"),
    "browser": ("bench.browser",
                "round trip in Chromium on the low-latency transport and the media track"),
    "soak": ("bench.soak",
             "bots join, play, move, drop and rejoin for minutes: does the server leak?"),
}


class BenchParser(argparse.ArgumentParser):
    """One bench's parser: its module adds the options when the bench is parsed (chosen on the
    command line, ``--help`` included), not before."""

    def __init__(self, *, module: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.module = module
        self._declared = False

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None):
        if not self._declared:
            importlib.import_module(self.module).add_arguments(self)
            self._declared = True
        return super().parse_known_args(args, namespace)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``bench`` and its benches to ``commands``, the ``spatialjam`` command's."""
    bench = commands.add_parser("bench", help="benchmarks")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH",
                                   parser_class=BenchParser)
    for name, (module, help_line) in BENCHES.items():
        benches.add_parser(name, help=help_line, module=module)
