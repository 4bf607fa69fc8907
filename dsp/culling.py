"""Mix culling under overload: each listener keeps only its most audible sources.

When a tick cannot finish in time, big spatial-audio mixers stop rendering what a listener would
hear least. The audibility of source ``s`` for listener ``l`` is estimated as

.. math:: a_{ls} = g_{ls} \\cdot \\mathrm{rms}_s / \\max(d_{ls}, 1\\,\\mathrm{m}),

(the pair's gain, the source's level in this frame, the inverse distance law); every listener
keeps its ``max_sources`` most audible sources and the others' gains are set to 0. The
renderer's crossfade fades culled sources out (and back in) over a frame, without a click.
"""

from __future__ import annotations

import numpy as np

from dsp.geometry import Scene


def cull_quietest(scene: Scene, source_rms: np.ndarray, max_sources: int) -> int:
    """Keep each listener's ``max_sources`` most audible sources; returns pairs culled.

    Changes ``scene.pair_gain`` in place.
    """
    gain = scene.pair_gain
    heard = gain > 0
    if max_sources <= 0 or heard.sum(axis=1).max(initial=0) <= max_sources:
        return 0
    rel = scene.source_positions_per_pair() - scene.listener_position[:, None, :]
    distance = np.maximum(np.linalg.norm(rel, axis=-1), 1.0)
    audibility = np.where(heard, gain * source_rms[None, :] / distance, -1.0)
    # Everything ranked below the max_sources-th most audible source of its row is culled.
    order = np.argsort(-audibility, axis=1, kind="stable")
    culled = np.zeros_like(heard)
    np.put_along_axis(culled, order[:, max_sources:], True, axis=1)
    culled &= heard
    gain[culled] = 0.0
    return int(culled.sum())
