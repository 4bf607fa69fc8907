"""The per-tick mixing kernel on the CPU (numba, parallel over listener ears, GIL released).

For every listener ``l`` and ear ``e`` the kernel forms each pair's filter on the fly from the
three interpolation neighbours of the HRTF grid,

.. math:: F_{ls}(k) = \\sum_{j=0}^{2} w_{lsj} \\, H_{i_{lsj}, e}(k),

(weights carry the pair's gain) and accumulates ``X_s(k) F_{ls}(k)`` over sources. Pairs whose
filter changed since the last tick contribute their *old* filter to ``P`` and the difference
``new − old`` to ``D``; the renderer then crossfades ``ifft(P) + ramp · ifft(D)`` so a filter
change never clicks. Real and imaginary parts are split float32 arrays so the bin loop
vectorises.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True, fastmath=True)
def _accumulate(acc_r, acc_i, xr, xi, hr, hi, e, i0, i1, i2, w0, w1, w2):
    for b in range(acc_r.shape[0]):
        fr = w0 * hr[i0, e, b] + w1 * hr[i1, e, b] + w2 * hr[i2, e, b]
        fi = w0 * hi[i0, e, b] + w1 * hi[i1, e, b] + w2 * hi[i2, e, b]
        acc_r[b] += xr[b] * fr - xi[b] * fi
        acc_i[b] += xr[b] * fi + xi[b] * fr


@njit(cache=True, nogil=True, fastmath=True)
def _accumulate_changed(pr, pi, dr, di, xr, xi, hr, hi, e,
                        o0, o1, o2, v0, v1, v2, i0, i1, i2, w0, w1, w2):
    """``P += X · F_old`` and ``D += X · (F_new − F_old)`` in one pass over the bins."""
    for b in range(pr.shape[0]):
        orr = v0 * hr[o0, e, b] + v1 * hr[o1, e, b] + v2 * hr[o2, e, b]
        oi = v0 * hi[o0, e, b] + v1 * hi[o1, e, b] + v2 * hi[o2, e, b]
        fr = w0 * hr[i0, e, b] + w1 * hr[i1, e, b] + w2 * hr[i2, e, b] - orr
        fi = w0 * hi[i0, e, b] + w1 * hi[i1, e, b] + w2 * hi[i2, e, b] - oi
        pr[b] += xr[b] * orr - xi[b] * oi
        pi[b] += xr[b] * oi + xi[b] * orr
        dr[b] += xr[b] * fr - xi[b] * fi
        di[b] += xr[b] * fi + xi[b] * fr


@njit(parallel=True, cache=True, nogil=True)
def mix(xr, xi, hr, hi, idx, w, old_idx, old_w, changed, out_p, out_d, listener_changed):
    """Accumulate listener spectra.

    Parameters
    ----------
    xr, xi : (S, B) float32
        Source spectra.
    hr, hi : (P, 2, B) float32
        HRTF grid spectra.
    idx, w, old_idx, old_w : (L, S, 3)
        This tick's and the last tick's interpolation indices and gain-folded weights.
    changed : (L, S) bool
    out_p, out_d : (L, 2, B, 2) float32
        Written: ``P`` and ``D`` as interleaved (re, im), viewable as complex64.
    listener_changed : (L,) bool
        Written: whether ``D`` is non-zero for that listener.
    """
    n_l, n_s = changed.shape
    n_b = xr.shape[1]
    for task in prange(2 * n_l):
        l = task // 2
        e = task % 2
        pr = np.zeros(n_b, np.float32)
        pi = np.zeros(n_b, np.float32)
        dr = np.zeros(n_b, np.float32)
        di = np.zeros(n_b, np.float32)
        any_change = False
        for s in range(n_s):
            if changed[l, s]:
                any_change = True
                _accumulate_changed(pr, pi, dr, di, xr[s], xi[s], hr, hi, e,
                                    old_idx[l, s, 0], old_idx[l, s, 1], old_idx[l, s, 2],
                                    old_w[l, s, 0], old_w[l, s, 1], old_w[l, s, 2],
                                    idx[l, s, 0], idx[l, s, 1], idx[l, s, 2],
                                    w[l, s, 0], w[l, s, 1], w[l, s, 2])
            elif w[l, s, 0] != 0 or w[l, s, 1] != 0 or w[l, s, 2] != 0:
                _accumulate(pr, pi, xr[s], xi[s], hr, hi, e,
                            idx[l, s, 0], idx[l, s, 1], idx[l, s, 2],
                            w[l, s, 0], w[l, s, 1], w[l, s, 2])
        for b in range(n_b):
            out_p[l, e, b, 0] = pr[b]
            out_p[l, e, b, 1] = pi[b]
            out_d[l, e, b, 0] = dr[b]
            out_d[l, e, b, 1] = di[b]
        listener_changed[l] = any_change  # the same for both ears: no race


class CpuMixer:
    """Mixing backend on the CPU; holds the HRTF spectra for one FFT size."""

    name = "cpu"

    def __init__(self, hr: np.ndarray, hi: np.ndarray) -> None:
        self.hr = hr
        self.hi = hi

    def mix(self, xr, xi, idx, w, old_idx, old_w, changed):
        """Return ``(P, D, listener_changed)``; ``P``, ``D`` complex64 ``(L, 2, B)``."""
        n_l = changed.shape[0]
        n_b = xr.shape[1]
        out_p = np.empty((n_l, 2, n_b, 2), np.float32)
        out_d = np.empty((n_l, 2, n_b, 2), np.float32)
        listener_changed = np.zeros(n_l, np.bool_)
        mix(xr, xi, self.hr, self.hi, idx, w, old_idx, old_w, changed, out_p, out_d,
            listener_changed)
        return out_p.view(np.complex64)[..., 0], out_d.view(np.complex64)[..., 0], listener_changed
