"""The clip-ratio search of QMC's inlier quantizer on a CPU as one compiled loop per group (numba):
the exhaustive grid (``clip_search=grid``, the default) and the descent (``clip_search=descent``).

Why hand-written: each candidate ratio costs, in torch, about 18 elementwise passes over every weight
(divide, round, clamp, the error, two gathers of the code-error moments, the products, the masked
sum), each reading and writing the whole block from memory; on a laptop CPU the search is bound by
that traffic, not by arithmetic (profile in BENCHMARKS.md "QMC quantization speed"). No maintained
library fuses a gather of per-code moments into a masked grouped reduction with a data-dependent
search over ratios. Here one group's weights (128 of them) stay in L1 while every candidate the
search asks for is evaluated, each at most once. The grid is the same loop with every ratio as a
start and no steps.

The arithmetic is written out so that it is the same on every machine: IEEE single precision, no
fast-math (numba's default: no reassociation, no fused multiply-add contraction), rounding half to
even, and the group's sum taken in a fixed order (eight interleaved partial sums, combined
pairwise). The choices therefore do not depend on the CPU, the thread count or the numba version's
vectoriser. They can differ from the torch formulation (:func:`qmc_edge.uniform._search_clip` and
:func:`qmc_edge.uniform._descend_clip`, whose reduction order is torch's, itself chosen per CPU) in
the last bit of a group's error, and so in the choice of a ratio where two candidates tie to within
rounding (on SmolLM2's linear weights: 3 groups of 898,560, tested: identical choices on the test
tensors).
"""

from __future__ import annotations

import numpy as np
import torch

try:  # numba is a core dependency; the import is guarded so that the error names the fix
    import numba
except ImportError:  # pragma: no cover - exercised only in a broken install
    numba = None

LANES = 8  # partial sums per group: fixed, so the order of the additions is part of the definition


def _jit(fn):
    """numba.njit when numba is installed; otherwise the function is left as is and never called
    (:func:`search_codes` refuses first, naming the install)."""
    return numba.njit(cache=True, nogil=True)(fn) if numba is not None else fn


@_jit
def _code(w, s, z, zero, top):  # pragma: no cover - compiled
    """clamp(round_half_even(w / s) + z, 0, top) as a float32; the comparisons are written out
    (min/max compiled to branches here and ran 27% slower); equal to min/max for every non-NaN w."""
    q = np.float32(np.rint(w / s)) + z
    q = q if q > zero else zero
    return q if q < top else top


@_jit
def _group_error(w, inl, s, z, maxq, m1, m2, noisy, tmp, codes, acc):  # pragma: no cover - compiled
    """Expected squared error of one group at scale ``s`` and zero ``z`` (float32 throughout): the
    sum over the group of inl x (e^2 + 2 e s m1[q] + s^2 m2[q]), e = (q - z) s - w. The terms are
    computed in one elementwise loop (``tmp``, no reduction in it, so it vectorises), then summed
    element i into partial sum i mod LANES, the partial sums pairwise: a fixed order."""
    two = np.float32(2.0)
    zero = np.float32(0.0)
    top = np.float32(maxq)
    ss = s * s
    n = w.shape[0]
    if noisy:
        for i in range(n):  # elementwise (vectorises): the codes and their rounding errors
            q = _code(w[i], s, z, zero, top)
            codes[i] = np.int32(q)
            tmp[i] = (q - z) * s - w[i]
        for i in range(n):  # the moments' gather (scalar loads)
            e = tmp[i]
            c = codes[i]
            tmp[i] = (e * e + (two * e * s * m1[c] + ss * m2[c])) * inl[i]
    else:
        for i in range(n):
            q = _code(w[i], s, z, zero, top)
            e = (q - z) * s - w[i]
            tmp[i] = (e * e) * inl[i]
    acc[:] = zero
    full = n - n % LANES
    for b in range(0, full, LANES):  # element i into partial sum i mod LANES, in increasing i
        for lane in range(LANES):  # (this shape vectorises; acc[i % LANES] += tmp[i] did not)
            acc[lane] += tmp[b + lane]
    for lane in range(n - full):
        acc[lane] += tmp[full + lane]
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


@_jit
def _search(
    wg, mg, scales, zeros, maxq, m1, m2, noisy, starts, steps, out_scale, out_zero, out_codes
):  # pragma: no cover
    """Per (row, group): the search over the ratios whose (scale, zero) are ``scales[r, g, j]``,
    ``zeros[r, g, j]``: the ``starts``, then per step the best index -+ step (the descent of
    :func:`qmc_edge.uniform._descend_clip`; with every ratio a start and no steps, the grid of
    :func:`qmc_edge.uniform._search_clip`); ties keep the larger ratio (lower j). Then the group's
    codes at the chosen (scale, zero), as :func:`qmc_edge.uniform.quantize_uniform` computes them:
    clamp(round(w / s) + z, 0, maxq) for inliers, the zero-point code for the rest."""
    rows, groups, n = scales.shape
    errs = np.empty(n, dtype=np.float32)
    tmp = np.empty(wg.shape[2], dtype=np.float32)
    codes = np.empty(wg.shape[2], dtype=np.int32)
    acc = np.zeros(LANES, dtype=np.float32)
    seen = np.zeros(n, dtype=np.bool_)
    zero = np.float32(0.0)
    top = np.float32(maxq)
    centre = 0
    for r in range(rows):
        for g in range(groups):
            w = wg[r, g]
            inl = mg[r, g]
            seen[:] = False
            best_j = -1
            best_e = np.float32(0.0)
            for k in range(starts.shape[0] + 2 * steps.shape[0]):
                if k < starts.shape[0]:
                    j = starts[k]
                else:
                    step = steps[(k - starts.shape[0]) // 2]
                    if (k - starts.shape[0]) % 2 == 0:
                        centre = best_j  # both neighbours of a step are taken around the same centre
                        j = centre - step
                    else:
                        j = centre + step
                    j = min(max(j, 0), n - 1)
                if not seen[j]:
                    errs[j] = _group_error(
                        w, inl, scales[r, g, j], zeros[r, g, j], maxq, m1, m2, noisy, tmp, codes, acc
                    )
                    seen[j] = True
                e = errs[j]
                if best_j < 0 or e < best_e or (e == best_e and j < best_j):
                    best_j, best_e = j, e
            sc = scales[r, g, best_j]
            zc = zeros[r, g, best_j]
            out_scale[r, g] = sc
            out_zero[r, g] = zc
            for i in range(w.shape[0]):
                q = _code(w[i], sc, zc, zero, top)
                out_codes[r, g, i] = np.uint8(q if inl[i] != 0 else zc)


@_jit
def _ranges(wg, mg, xmin, xmax):  # pragma: no cover - compiled
    """Per (row, group): min(0, least inlier) and max(0, largest inlier), exact (order-free)."""
    big = np.float32(3.4028234663852886e38)
    for r in range(wg.shape[0]):
        for g in range(wg.shape[1]):
            lo, hi = big, -big
            for i in range(wg.shape[2]):
                if mg[r, g, i] != 0:
                    x = wg[r, g, i]
                    lo = min(lo, x)
                    hi = max(hi, x)
            xmin[r, g] = min(lo, np.float32(0.0))
            xmax[r, g] = max(hi, np.float32(0.0))


def _need_numba() -> None:
    if numba is None:
        raise ImportError("QMC's clip search needs numba (a dependency of qmc-edge): pip install 'numba>=0.60'")


def inlier_ranges(wg: torch.Tensor, mg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(xmin, xmax) per (row, group) of the inliers (``mg`` nonzero), clamped to include 0."""
    _need_numba()
    xmin = np.empty(wg.shape[:2], dtype=np.float32)
    xmax = np.empty(wg.shape[:2], dtype=np.float32)
    _ranges(np.ascontiguousarray(wg.numpy()), np.ascontiguousarray(mg.numpy()), xmin, xmax)
    return torch.from_numpy(xmin), torch.from_numpy(xmax)


def search_codes(
    wg: torch.Tensor,
    mg: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    maxq: int,
    moments: tuple[torch.Tensor, torch.Tensor] | None,
    starts: list[int],
    steps: list[int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes (rows, groups, group size) uint8, scale, zero per (row, group)) chosen by the search
    (:func:`_search`; ``starts`` = every ratio and no ``steps``: the grid); ``scales``/``zeros`` are
    (rows, groups, n) per ratio, computed by the caller exactly as one candidate pass computes them;
    ``mg`` is the inlier mask as 0/1 float32. CPU tensors."""
    _need_numba()
    rows, groups, _ = scales.shape
    out_c = np.empty(wg.shape, dtype=np.uint8)
    out_s = np.empty((rows, groups), dtype=np.float32)
    out_z = np.empty((rows, groups), dtype=np.float32)
    if moments is None:
        m1 = m2 = np.zeros(maxq + 1, dtype=np.float32)
    else:
        m1 = np.ascontiguousarray(moments[0].float().numpy())
        m2 = np.ascontiguousarray(moments[1].float().numpy())
    _search(
        np.ascontiguousarray(wg.numpy()),
        np.ascontiguousarray(mg.numpy()),
        np.ascontiguousarray(scales.numpy()),
        np.ascontiguousarray(zeros.numpy()),
        maxq,
        m1,
        m2,
        moments is not None,
        np.asarray(starts, dtype=np.int64),
        np.asarray(steps, dtype=np.int64),
        out_s,
        out_z,
        out_c,
    )
    return torch.from_numpy(out_c), torch.from_numpy(out_s), torch.from_numpy(out_z)
