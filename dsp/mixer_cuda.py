"""The mixing kernel on an NVIDIA GPU (numba-cuda), mirroring :mod:`dsp.mixer_cpu`.

One thread per (listener, ear, bin) loops over the sources, forming each pair's filter from its
three HRTF neighbours exactly as the CPU kernel does. The HRTF spectra stay on the device; each
tick copies the source spectra and the pair weights in and the listener spectra out. The FFTs
stay on the CPU (numba-cuda has none), which at 100 × 100 moves about 1.6 MB per tick each way.

Tests run this kernel under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) where no GPU exists.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

THREADS_PER_BLOCK = 128


@cuda.jit(device=True, inline=True)
def _filter(hr, hi, e, b, i0, i1, i2, w0, w1, w2):
    fr = w0 * hr[i0, e, b] + w1 * hr[i1, e, b] + w2 * hr[i2, e, b]
    fi = w0 * hi[i0, e, b] + w1 * hi[i1, e, b] + w2 * hi[i2, e, b]
    return fr, fi


@cuda.jit(cache=True)
def _mix_kernel(xr, xi, hr, hi, idx, w, old_idx, old_w, changed, pr_out, pi_out, dr_out, di_out):
    b = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    task = cuda.blockIdx.y
    n_b = xr.shape[1]
    if b >= n_b:
        return
    l = task // 2
    e = task % 2
    n_s = changed.shape[1]
    pr = np.float32(0.0)
    pi = np.float32(0.0)
    dr = np.float32(0.0)
    di = np.float32(0.0)
    for s in range(n_s):
        x_r = xr[s, b]
        x_i = xi[s, b]
        nr, ni = _filter(hr, hi, e, b, idx[l, s, 0], idx[l, s, 1], idx[l, s, 2],
                         w[l, s, 0], w[l, s, 1], w[l, s, 2])
        if changed[l, s]:
            orr, oi = _filter(hr, hi, e, b, old_idx[l, s, 0], old_idx[l, s, 1],
                              old_idx[l, s, 2], old_w[l, s, 0], old_w[l, s, 1], old_w[l, s, 2])
            pr += x_r * orr - x_i * oi
            pi += x_r * oi + x_i * orr
            fr = nr - orr
            fi = ni - oi
            dr += x_r * fr - x_i * fi
            di += x_r * fi + x_i * fr
        else:
            pr += x_r * nr - x_i * ni
            pi += x_r * ni + x_i * nr
    pr_out[l, e, b] = pr
    pi_out[l, e, b] = pi
    dr_out[l, e, b] = dr
    di_out[l, e, b] = di


class CudaMixer:
    """Mixing backend on the GPU; same contract as :class:`dsp.mixer_cpu.CpuMixer`."""

    name = "cuda"

    def __init__(self, hr: np.ndarray, hi: np.ndarray) -> None:
        if not cuda.is_available():
            raise RuntimeError("no CUDA device is available (install the 'gpu' extra on a "
                               "machine with an NVIDIA GPU, or use --device cpu)")
        self.hr = cuda.to_device(hr)
        self.hi = cuda.to_device(hi)

    def mix(self, xr, xi, idx, w, old_idx, old_w, changed):
        n_l = changed.shape[0]
        n_b = xr.shape[1]
        shape = (n_l, 2, n_b)
        outs = [cuda.device_array(shape, np.float32) for _ in range(4)]
        grid = ((n_b + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK, 2 * n_l)
        if n_l:
            _mix_kernel[grid, THREADS_PER_BLOCK](
                cuda.to_device(xr), cuda.to_device(xi), self.hr, self.hi,
                cuda.to_device(idx), cuda.to_device(w), cuda.to_device(old_idx),
                cuda.to_device(old_w), cuda.to_device(changed), *outs)
        pr, pi, dr, di = (o.copy_to_host() for o in outs)
        p = (pr + 1j * pi).astype(np.complex64)
        d = (dr + 1j * di).astype(np.complex64)
        return p, d, changed.any(axis=1)
