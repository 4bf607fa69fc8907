"""How scenario benchmarks run from the command line (:func:`run_bench`: failures in one line,
the report as JSON or text) and where they write their results: JSON, a markdown table and a
PNG plot under one time-stamped name (``bench/results/`` by default, git-ignored)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from server.errors import CliError


def result_paths(out_dir: Path, name: str) -> list[Path]:
    """``[json, md, png]`` paths named ``NAME-YYYYmmdd-HHMMSS`` in ``out_dir`` (created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = out_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return [base.with_suffix(".json"), base.with_suffix(".md"), base.with_suffix(".png")]


def pyplot():
    """matplotlib's pyplot on the file-only backend (no display here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cdf(ax, values, label: str) -> None:
    """The empirical distribution of ``values`` on ``ax``: a step per value, rising to 1."""
    d = np.sort(values)
    ax.step(d, np.arange(1, len(d) + 1) / len(d), where="post", label=label)


def save_figure(fig, axes, path: Path, legend_size: float | None = None) -> None:
    """Grid and legend on each of ``axes``, then ``fig`` to ``path`` and closed."""
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)


def run_bench(measure: Callable[[], dict], lines: Callable[[dict], list[str]], as_json: bool,
              write: Callable[[dict], list[Path]] | None = None,
              errors: tuple[type[Exception], ...] = (RuntimeError,)) -> dict:
    """A scenario benchmark run for the command line, the same way for each; returns its report.

    ``measure()`` runs it, and a failure of one of ``errors`` ends the command in one line
    (:class:`~server.errors.CliError`). ``write(report)`` writes the result files, if the bench
    has any, and returns their paths. Then the report goes to stdout: as JSON with
    ``as_json``, else as ``lines(report)`` followed, after a blank line, by the files written.
    """
    try:
        report = measure()
    except errors as exc:
        raise CliError(str(exc)) from None
    paths = write(report) if write else []
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        wrote = ["", "wrote " + ", ".join(str(p) for p in paths)] if paths else []
        print("\n".join([*lines(report), *wrote]))
    return report
