"""The CUDA kernels match the plain time-domain reference on random, moving scenes, run under
Numba's CUDA simulator (no GPU needed). The simulator is chosen by an environment variable read
when Numba is imported, so each case runs in a child Python process of its own. The CPU kernels
against the same reference: tests/unit/test_renderer_equivalence.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.render import RTOL

ROOT = Path(__file__).resolve().parents[2]


CUDASIM_SCRIPT = """
import json, sys
from hrtf.library import load_hrtf
from tests.helpers.render import compare
errors = compare(load_hrtf(sys.argv[1]), "cuda", listeners=2, sources=3, ticks=3, seed=5,
                 frame=int(sys.argv[2]))
print(json.dumps(errors))
"""


@pytest.mark.parametrize(("hrtf", "frame"), [("kemar", 960), ("spherical-head", 960),
                                             ("kemar", 240)])
def test_numba_cuda_kernels_match_reference_under_the_simulator(hrtf, frame):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run([sys.executable, "-c", CUDASIM_SCRIPT, hrtf, str(frame)], cwd=ROOT,
                          env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(errors) == 3
    assert max(errors) < RTOL, errors
