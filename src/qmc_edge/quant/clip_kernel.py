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
vectoriser. The torch formulation (:func:`qmc_edge.quant.uniform.group_error`, what runs on a GPU) does
the same operations and sums in the same order (:func:`qmc_edge.quant.uniform._lane_sum`), so both choose
the same ratios in every group (tested; on SmolLM2's 898,560 groups at 3 bits, all equal). Before
2026-12-03 the torch formulation summed in torch's own order, and chose another ratio than today's
in 3 of those groups, where two candidates tie to within rounding.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

try:  # numba is a core dependency; the import is guarded so that the error names the fix
    import numba
except ImportError:  # pragma: no cover - exercised only in a broken install
    numba = None

LANES = 8  # partial sums per group: fixed, so the order of the additions is part of the definition


def _writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (made if missing): tried, not guessed from modes."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def cache_folder(package: Path, home_cache: Path, temp: Path, preset: str | None) -> Path | None:
    """Where numba may keep the compiled kernel: None for its default (``__pycache__`` beside this
    file, or the folder ``NUMBA_CACHE_DIR`` names), else the first writable of a user cache and a
    per-user temporary folder; raises OSError when none is writable (then the kernel is compiled in
    memory in every process). Why: an installed read-only package with no writable HOME (a container,
    a shared install) made every QMC quantization fail with numba's "no locator available"."""
    if preset or _writable(package / "__pycache__"):
        return None
    for folder in (home_cache, temp):
        if _writable(folder):
            return folder
    raise OSError("no writable folder for numba's cache")


def _cache() -> bool:
    """Point numba's cache at a writable folder; False when there is none (compile in memory)."""
    if numba is None:
        return False
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qmc-edge" / "numba"
    temp = Path(tempfile.gettempdir()) / f"qmc-edge-numba-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    try:
        folder = cache_folder(Path(__file__).parent, home, temp, os.environ.get("NUMBA_CACHE_DIR"))
    except OSError:
        return False
    if folder is not None:
        numba.config.CACHE_DIR = str(folder)
    return True


CACHE = _cache()


def _jit(fn):
    """numba.njit when numba is installed; otherwise the function is left as is and never called
    (:func:`search_codes` refuses first, naming the install)."""
    return numba.njit(cache=CACHE, nogil=True)(fn) if numba is not None else fn


@_jit
def padded_scratch(n):  # pragma: no cover - compiled
    """The terms' scratch of :func:`_group_error` for groups of ``n``: zeros, rounded up to LANES."""
    return np.zeros(n + (-n % LANES), dtype=np.float32)


@_jit
def _code(w, s, z, zero, top):  # pragma: no cover - compiled
    """clamp(round_half_even(w / s) + z, 0, top) as a float32; the comparisons are written out
    (min/max compiled to branches here and ran 27% slower); equal to min/max for every non-NaN w."""
    q = np.float32(np.rint(w / s)) + z
    q = q if q > zero else zero
    return q if q < top else top


def _jit_inline(fn):
    """As :func:`_jit`, inlined into its callers by numba (a table lookup in a vectorised loop)."""
    return numba.njit(cache=CACHE, nogil=True, inline="always")(fn) if numba is not None else fn


@_jit_inline
def _pick(c, t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15):  # pragma: no cover
    """t[c] for a code c in 0..15, as a tree of selects on c's bits: the same value as the load, but
    it vectorises (an indexed load from a numba array does not: the array might alias the output)."""
    b0, b1, b2, b3 = (c & 1) != 0, (c & 2) != 0, (c & 4) != 0, (c & 8) != 0
    x0, x1, x2, x3 = (t1 if b0 else t0), (t3 if b0 else t2), (t5 if b0 else t4), (t7 if b0 else t6)
    x4, x5, x6, x7 = (t9 if b0 else t8), (t11 if b0 else t10), (t13 if b0 else t12), (t15 if b0 else t14)
    y0, y1, y2, y3 = (x1 if b1 else x0), (x3 if b1 else x2), (x5 if b1 else x4), (x7 if b1 else x6)
    z0, z1 = (y1 if b2 else y0), (y3 if b2 else y2)
    return z1 if b3 else z0


@_jit_inline
def _group_error(w, inl, s, z, maxq, m1, m2, noisy, tmp, codes):  # pragma: no cover - compiled
    """Expected squared error of one group at scale ``s`` and zero ``z`` (float32 throughout): the
    sum over the group of inl x (e^2 + 2 e s m1[q] + s^2 m2[q]), e = (q - z) s - w. The terms are
    computed in one elementwise loop (``tmp``, no reduction in it, so it vectorises), then summed
    element i into partial sum i mod LANES, the partial sums pairwise: a fixed order. ``tmp`` holds
    at least n rounded up to LANES entries, zero past n (:func:`padded_scratch`). For codes of at
    most 4 bits the moments are looked up by :func:`_pick` (``m1``/``m2`` padded to 16 entries),
    wider ones by an indexed load; both give the same numbers."""
    two = np.float32(2.0)
    zero = np.float32(0.0)
    top = np.float32(maxq)
    ss = s * s
    n = w.shape[0]
    if noisy and maxq <= 15:
        a0, a1, a2, a3, a4, a5, a6, a7 = m1[0], m1[1], m1[2], m1[3], m1[4], m1[5], m1[6], m1[7]
        a8, a9, a10, a11, a12, a13, a14, a15 = m1[8], m1[9], m1[10], m1[11], m1[12], m1[13], m1[14], m1[15]
        b0, b1, b2, b3, b4, b5, b6, b7 = m2[0], m2[1], m2[2], m2[3], m2[4], m2[5], m2[6], m2[7]
        b8, b9, b10, b11, b12, b13, b14, b15 = m2[8], m2[9], m2[10], m2[11], m2[12], m2[13], m2[14], m2[15]
        for i in range(n):  # one vectorised loop: codes, rounding errors, moments, terms
            q = _code(w[i], s, z, zero, top)
            e = (q - z) * s - w[i]
            c = np.int32(q)
            u1 = _pick(c, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15)
            u2 = _pick(c, b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15)
            tmp[i] = (e * e + (two * e * s * u1 + ss * u2)) * inl[i]
    elif noisy:
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
    # element i into partial sum i mod LANES (= 8), in increasing i; locals, not an array, so that
    # nothing in the loop is stored (an accumulator array ran 15% slower). tmp's zero padding past n
    # completes the last row of 8: adding +0.0 leaves every partial sum as it was.
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = zero
    for b in range(0, n + (-n % LANES), LANES):
        c0 += tmp[b]
        c1 += tmp[b + 1]
        c2 += tmp[b + 2]
        c3 += tmp[b + 3]
        c4 += tmp[b + 4]
        c5 += tmp[b + 5]
        c6 += tmp[b + 6]
        c7 += tmp[b + 7]
    return ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7))


@_jit
def _search(
    wg, mg, scales, zeros, maxq, m1, m2, noisy, starts, steps, out_scale, out_zero, out_codes
):  # pragma: no cover
    """Per (row, group): the search over the ratios whose (scale, zero) are ``scales[r, g, j]``,
    ``zeros[r, g, j]``: the ``starts``, then per step the best index -+ step (the descent of
    :func:`qmc_edge.quant.uniform._descend_clip`; with every ratio a start and no steps, the grid of
    :func:`qmc_edge.quant.uniform._search_clip`); ties keep the larger ratio (lower j). Then the group's
    codes at the chosen (scale, zero), as :func:`qmc_edge.quant.uniform.quantize_uniform` computes them:
    clamp(round(w / s) + z, 0, maxq) for inliers, the zero-point code for the rest."""
    rows, groups, n = scales.shape
    errs = np.empty(n, dtype=np.float32)
    tmp = padded_scratch(wg.shape[2])
    codes = np.empty(wg.shape[2], dtype=np.int32)
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
                    errs[j] = _group_error(w, inl, scales[r, g, j], zeros[r, g, j], maxq, m1, m2, noisy, tmp, codes)
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
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> None:
    """Codes (rows, groups, group size) uint8, scale and zero per (row, group) chosen by the search
    (:func:`_search`; ``starts`` = every ratio and no ``steps``: the grid), written into ``out``
    (contiguous CPU tensors of those shapes: the caller works in row blocks); ``scales``/``zeros`` are
    (rows, groups, n) per ratio, computed by the caller exactly as one candidate pass computes them;
    ``mg`` is the inlier mask as 0/1 float32. CPU tensors."""
    _need_numba()
    if not all(t.is_contiguous() for t in out):
        raise ValueError("search_codes: out tensors must be contiguous")
    out_c, out_s, out_z = (t.numpy() for t in out)
    m1 = np.zeros(max(16, maxq + 1), dtype=np.float32)  # padded for _pick (codes never reach the padding)
    m2 = np.zeros_like(m1)
    if moments is not None:
        m1[: maxq + 1] = moments[0].float().numpy()
        m2[: maxq + 1] = moments[1].float().numpy()
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
