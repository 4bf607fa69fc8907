"""spatialjam: dsp.

The engine's parallel kernels (numba ``parallel=True``) run on its OpenMP threading layer.
libgomp's workers spin while they wait for the next parallel region unless told otherwise, and
on a busy machine a spinning thread and a descheduled one wait on each other for a scheduler
time slice: a 3 × 4 room's tick took 16–40 ms on this two-core machine under load instead of
0.6 ms, and a 20 × 20 room burned about four times the CPU it renders with (issue 17: a 5 ms
room ticks 200 times a second). So the workers sleep between regions unless the operator says
otherwise (``OMP_WAIT_POLICY=ACTIVE``). libgomp reads the variable when it loads, at the first
parallel kernel, and every such kernel lives in this package, so setting it here is in time.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
