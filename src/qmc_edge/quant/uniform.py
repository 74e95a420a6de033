"""Grouped asymmetric uniform quantization with a clipping search, shared by RTN, eMEM-naive and QMC.

The clipping search minimises the *expected* squared reconstruction error of each group. With
``moments`` from :func:`qmc_edge.memory.cells.code_error_moments` the expectation includes device read
errors, computed analytically; without them it is the ordinary MSE-optimal clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class UniformCodes:
    """Integer codes of a 2-D weight with a scale and zero point per (row, group)."""

    codes: torch.Tensor  # (out, in) uint8, values in [0, 2**bits)
    scale: torch.Tensor  # (out, n_groups) float32
    zero: torch.Tensor  # (out, n_groups) float32 (integer-valued)
    bits: int
    group_size: int  # == in_features for per-channel

    @property
    def n_groups(self) -> int:
        return self.scale.shape[1]

    def dequantize(self, codes: torch.Tensor | None = None) -> torch.Tensor:
        c = self.codes if codes is None else codes
        out, inf = c.shape
        idx = torch.arange(inf, device=c.device) // self.group_size
        return (c.float() - self.zero[:, idx]) * self.scale[:, idx]


def _grouped(w: torch.Tensor, group_size: int, fill: float) -> torch.Tensor:
    """(out, in) -> (out, n_groups, group_size), padding the last group with ``fill``."""
    out, inf = w.shape
    n_groups = -(-inf // group_size)
    pad = n_groups * group_size - inf
    if pad:
        w = torch.nn.functional.pad(w, (0, pad), value=fill)
    return w.reshape(out, n_groups, group_size)


def quantize_uniform(
    w: torch.Tensor,
    bits: int,
    group_size: int | None,
    inlier_mask: torch.Tensor | None = None,
    clip_ratios: torch.Tensor | None = None,
    moments: tuple[torch.Tensor, torch.Tensor] | None = None,
    search: str = "grid",
) -> UniformCodes:
    """Quantize ``w`` (out, in) to ``bits``-bit asymmetric codes per row and group.

    Only entries where ``inlier_mask`` is true set the range and count in the error; the others
    get the zero-point code (their value is stored elsewhere). ``clip_ratios`` shrink the
    [min, max] range (1.0 = plain min-max RTN); the best ratio is chosen per group, among all of them
    (``search="grid"``) or by a descent over the ordered ratios (``"descent"``, :func:`_descend_clip`).
    """
    if bits < 1 or bits > 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    if search not in SEARCHES:
        raise ValueError(f"clip search must be one of {', '.join(SEARCHES)}, got {search!r}")
    w = w.detach().float()
    out, inf = w.shape
    g = inf if group_size is None or group_size <= 0 or group_size >= inf else group_size
    maxq = 2**bits - 1
    mask = torch.ones_like(w, dtype=torch.bool) if inlier_mask is None else inlier_mask
    wg = _grouped(w, g, 0.0)
    inl = _grouped(mask.to(w.dtype), g, 0.0)
    ratios = torch.ones(1) if clip_ratios is None else clip_ratios
    if w.device.type != "cpu":  # the search runs where the weights are (the tables are small)
        ratios = ratios.to(w.device)
        moments = None if moments is None else (moments[0].to(w.device), moments[1].to(w.device))
    descent = search == "descent" and len(ratios) > _descent_evals(len(ratios))
    if len(ratios) > 1 and w.device.type == "cpu" and COMPILED:
        return _search_compiled(wg, inl, ratios, bits, g, inf, moments, descent)
    mg = inl.bool()
    big = torch.finfo(torch.float32).max
    xmin = torch.where(mg, wg, torch.full_like(wg, big)).amin(dim=2).clamp(max=0.0)
    xmax = torch.where(mg, wg, torch.full_like(wg, -big)).amax(dim=2).clamp(min=0.0)
    find = _descend_clip if descent else _search_clip
    best_scale = torch.empty_like(xmin)
    best_zero = torch.empty_like(xmin)
    rows = _block_rows(wg)
    for r0 in range(0, out, rows):
        sl = slice(r0, r0 + rows)
        best_scale[sl], best_zero[sl] = find(wg[sl], mg[sl], xmin[sl], xmax[sl], ratios, maxq, moments)

    q = torch.clamp(torch.round(wg / best_scale[..., None]) + best_zero[..., None], 0, maxq)
    q = torch.where(mg, q, best_zero[..., None].expand_as(q))  # non-inliers decode to exactly 0
    codes = q.reshape(out, -1)[:, :inf].to(torch.uint8)
    return UniformCodes(codes=codes, scale=best_scale, zero=best_zero, bits=bits, group_size=g)


def _block_rows(wg: torch.Tensor) -> int:
    """Rows of ``wg`` (rows, groups, size) per block of the clip search; the choices do not depend on it.

    About 256k weights on a CPU: the torch search makes ~10 passes per ratio over the block, and
    blocks this size measured fastest here (0.098 s vs 0.139 s unblocked for a 1536x576 tensor); the
    compiled search's per-ratio tables then stay a few MB (whole-tensor tables raised the peak of
    quantizing Qwen2.5-Coder-1.5B by 1.2 GB). On a GPU every pass is a kernel launch (the fixed-order
    sum adds about 20 per ratio), so blocks are 64x larger there: fewer launches, about 0.7 GB of
    temporaries at most (not timed on a GPU yet)."""
    return max(1, (1 << (18 if wg.device.type == "cpu" else 24)) // (wg.shape[1] * wg.shape[2]))


def clip_grid(n: int, lowest: float = 0.5) -> torch.Tensor:
    """``n`` clipping ratios from 1.0 down to ``lowest`` (1.0 first, so ties keep min-max)."""
    if n <= 1:
        return torch.ones(1)
    return torch.linspace(1.0, lowest, n)


SEARCHES = ("grid", "descent")
# Both searches on the CPU run compiled (:func:`_search_compiled`); False runs the torch formulation
# (:func:`_search_clip`, :func:`_descend_clip`), which the tests and benchmarks/clip_search.py compare
# it with, and which runs wherever the weights are not on the CPU.
COMPILED = True


def _grid_at(
    xmin: torch.Tensor, xmax: torch.Tensor, r: float | torch.Tensor, maxq: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero) of the groups' ranges clipped at ratio ``r`` (broadcast against xmin/xmax)."""
    lo, hi = xmin * r, xmax * r
    scale = _fp16_at_least((hi - lo) / maxq)
    return scale, torch.round(-lo / scale).clamp(0, maxq)


def _descent_starts(n: int) -> list[int]:
    """The descent's two starting ratios: a quarter and three quarters along the ``n`` ordered ones."""
    return sorted({round((n - 1) * 0.25), round((n - 1) * 0.75)})


def _candidate(
    wg: torch.Tensor,
    inl: torch.Tensor,
    xmin: torch.Tensor,
    xmax: torch.Tensor,
    r: float | torch.Tensor,
    maxq: int,
    moments: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(expected squared error, scale, zero) of every group clipped at ratio ``r`` (a number, or one
    per group)."""
    scale, zero = _grid_at(xmin, xmax, r, maxq)
    return group_error(wg, inl, scale, zero, maxq, moments), scale, zero


def group_error(
    wg: torch.Tensor,
    inl: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    maxq: int,
    moments: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    """Expected squared error per group of ``wg`` (rows, groups, size) at one (scale, zero) per group:
    the sum over the inliers of e^2 + 2 e s m1[q] + s^2 m2[q], e = (q - z) s - w, each operation as
    the compiled kernel writes it (:func:`qmc_edge.quant.clip_kernel._group_error`), summed in its order."""
    s3, z3 = scale[..., None], zero[..., None]
    q = torch.clamp(torch.round(wg / s3) + z3, 0, maxq)
    e = (q - z3) * s3 - wg
    sq = e * e
    if moments is not None:
        # A flat index_select with int32 indices: the same values as moments[0][q.long()], at a
        # fifth of the time (advanced indexing and the int64 copy were 45% of the whole search).
        qi = q.int().reshape(-1)
        m1 = moments[0].index_select(0, qi).reshape(q.shape)
        m2 = moments[1].index_select(0, qi).reshape(q.shape)
        sq += 2 * e * s3 * m1 + s3 * s3 * m2
    return _lane_sum(sq * inl)


def _lane_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over the last dimension in the compiled kernel's fixed order (:mod:`qmc_edge.quant.clip_kernel`):
    element i into partial sum i mod LANES, in increasing i, then the partial sums pairwise.

    Why not ``t.sum(-1)``: torch picks its reduction order per device and CPU (vector width, threads),
    so the same weights could choose another clip ratio where two tie to within rounding, on a GPU
    or on another CPU. Written as elementwise adds, every device rounds each step the same way (IEEE
    single precision), so the torch formulation, the compiled loop and a GPU choose the same ratios."""
    from qmc_edge.quant.clip_kernel import LANES

    pad = -t.shape[-1] % LANES
    if pad:  # zeros leave every partial sum unchanged
        t = torch.nn.functional.pad(t, (0, pad))
    v = t.reshape(*t.shape[:-1], -1, LANES)
    acc = v[..., 0, :]
    for k in range(1, v.shape[-2]):
        acc = acc + v[..., k, :]
    a = acc.unbind(-1)
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


def _descent_steps(n: int) -> list[int]:
    """The step sizes of the descent over ``n`` ordered ratios: about n/5, halving down to 1."""
    steps, s = [], max(1, round(n / 5))
    while s >= 1:
        steps.append(s)
        s //= 2
    return steps


def _descent_evals(n: int) -> int:
    """Candidates the descent evaluates per group (two starts, two per step)."""
    return 2 + 2 * len(_descent_steps(n))


def _descend_clip(
    wg: torch.Tensor,
    mg: torch.Tensor,
    xmin: torch.Tensor,
    xmax: torch.Tensor,
    ratios: torch.Tensor,
    maxq: int,
    moments: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group, a local minimum of the expected error over the ordered ratios, in
    :func:`_descent_evals` candidates instead of all of them.

    Why: the error is close to unimodal in the ratio, and every candidate costs a pass over all the
    weights. The search starts from the ratios at a quarter and three quarters of the grid, then per
    group tries the best index +-s for s = n/5, n/10, ..., 1 (8 candidates for 20 ratios). On
    SmolLM2's linear weights (2b/3b/4b, fresh and 1-day cells, ideal memory) it found the grid's
    minimum in 97-99% of groups and its total expected error was 0.02-0.10% above the exhaustive
    search's (measured, see BENCHMARKS.md "QMC quantization speed"). Ties keep the larger ratio, as
    the exhaustive search does."""
    n = len(ratios)
    inl = mg.to(wg.dtype)
    best: tuple[torch.Tensor, ...] = ()  # per group: index, expected error, scale, zero

    def consider(j: torch.Tensor) -> None:
        nonlocal best
        cand = (j, *_candidate(wg, inl, xmin, xmax, ratios[j], maxq, moments))
        if not best:
            best = cand
            return
        better = (cand[1] < best[1]) | ((cand[1] == best[1]) & (j < best[0]))  # ties: the larger ratio
        best = tuple(torch.where(better, c, b) for c, b in zip(cand, best, strict=True))

    for i in _descent_starts(n):
        consider(torch.full(xmin.shape, i, device=xmin.device))
    for s in _descent_steps(n):
        centre = best[0]
        for d in (-s, s):
            consider((centre + d).clamp(0, n - 1))
    return best[2], best[3]


def _search_compiled(
    wg: torch.Tensor,
    inl: torch.Tensor,
    ratios: torch.Tensor,
    bits: int,
    g: int,
    inf: int,
    moments: tuple[torch.Tensor, torch.Tensor] | None,
    descent: bool,
) -> UniformCodes:
    """:func:`_search_clip` (or :func:`_descend_clip`) and the codes on the CPU as compiled loops
    (:mod:`qmc_edge.quant.clip_kernel`).

    The (scale, zero) of every ratio are computed here by the same torch operations as a candidate
    pass (they are per group, a 128th of the weights); the kernel then evaluates, per group, the
    ratios the search visits (all of them for the grid), with the group's weights in cache, and
    writes the codes."""
    from qmc_edge.quant.clip_kernel import inlier_ranges, search_codes

    maxq = 2**bits - 1
    n = len(ratios)
    starts, steps = (_descent_starts(n), _descent_steps(n)) if descent else (list(range(n)), [])
    rows, groups, _ = wg.shape
    q = torch.empty(wg.shape, dtype=torch.uint8)
    scale = torch.empty((rows, groups))
    zero = torch.empty((rows, groups))
    r32 = ratios.to(torch.float32)
    block = _block_rows(wg)
    for r0 in range(0, rows, block):
        sl = slice(r0, r0 + block)
        xmin, xmax = inlier_ranges(wg[sl], inl[sl])
        scales, zeros = _grid_at(xmin[..., None], xmax[..., None], r32, maxq)
        search_codes(wg[sl], inl[sl], scales, zeros, maxq, moments, starts, steps, out=(q[sl], scale[sl], zero[sl]))
    codes = q.reshape(rows, -1)[:, :inf].contiguous()
    return UniformCodes(codes=codes, scale=scale, zero=zero, bits=bits, group_size=g)


def _search_clip(
    wg: torch.Tensor,
    mg: torch.Tensor,
    xmin: torch.Tensor,
    xmax: torch.Tensor,
    ratios: torch.Tensor,
    maxq: int,
    moments: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group, the (scale, zero) among the clip ratios with the least expected squared error."""
    best_err = torch.full(xmin.shape, float("inf"), device=xmin.device)
    best_scale = torch.ones_like(xmin)
    best_zero = torch.zeros_like(xmin)
    inl = mg.to(wg.dtype)
    for r in ratios.tolist():
        err, scale, zero = _candidate(wg, inl, xmin, xmax, r, maxq, moments)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = torch.where(better, zero, best_zero)
    return best_scale, best_zero


def _fp16_at_least(scale: torch.Tensor) -> torch.Tensor:
    """The smallest fp16 value >= ``scale`` (as float32).

    Scales are kept exactly as fp16, which is what the storage report counts and what an exported
    artifact stores. Rounding to nearest could shrink a scale so that the codes no longer span the
    group's range and its extreme weight is clipped by more than half a step; rounding up never
    does. The clamp keeps tiny ranges from becoming a zero scale.
    """
    s = scale.clamp(min=2**-24, max=65504.0)
    h = s.half()
    h = torch.where(h.float() < s, torch.nextafter(h, torch.full_like(h, float("inf"))), h)
    return h.float()
