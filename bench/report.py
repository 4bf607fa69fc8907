"""Where scenario benchmarks write their results: JSON, a markdown table and a PNG plot under
one time-stamped name (``bench/results/`` by default, git-ignored)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path


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


def save_figure(fig, axes, path: Path, legend_size: float | None = None) -> None:
    """Grid and legend on each of ``axes``, then ``fig`` to ``path`` and closed."""
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)


def print_report(report: dict, as_json: bool, paths: list[Path],
                 summary_lines: Callable[[dict], list[str]],
                 table: Callable[[dict], list[str]]) -> None:
    """A scenario's report on stdout: as JSON, or its summary and table and the files written."""
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join([*summary_lines(report), "", *table(report), "",
                         "wrote " + ", ".join(str(p) for p in paths)]))
