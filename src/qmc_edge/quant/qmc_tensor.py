"""The QMC quantizer: outlier-aware dual precision mapped onto ReRAM + MRAM.

Per weight tensor, without retraining or calibration data:

1. Partition by magnitude: exactly round(rho * numel) weights of largest |w| are outliers (ties at
   the threshold go to the lower flat index), the rest are inliers.
2. Inliers: asymmetric b_in-bit codes per row and group whose clipping is chosen to minimise the
   expected squared error *including* ReRAM read errors (analytic, from the device's transition
   probabilities through the cell mapping; see :mod:`qmc_edge.memory.cells`). Removing the outliers first
   narrows every group's range, which is where most of the gain comes from.
3. Outliers: b_out-bit symmetric codes with one per-tensor scale, stored with their positions in
   on-chip MRAM; their slots in the dense ReRAM code array hold the zero-point code.
"""

from __future__ import annotations

import numpy as np
import torch

from qmc_edge.memory.cells import code_error_moments, code_transition_matrix
from qmc_edge.memory.models import DeviceModel
from qmc_edge.quant import level_map as lm
from qmc_edge.quant.qtensor import OUTLIER_CODES, OutlierTable, QuantizedTensor
from qmc_edge.quant.uniform import clip_grid, quantize_uniform


def outlier_positions(w: torch.Tensor, rho: float, scores: torch.Tensor | None = None) -> torch.Tensor:
    """Sorted flat indices of the round(rho * numel) largest-magnitude entries (deterministic ties), or
    of the largest ``scores`` when given (same shape as ``w``)."""
    if not 0.0 <= rho <= 0.5:
        raise ValueError(f"rho must be in [0, 0.5], got {rho}")
    k = round(rho * w.numel())
    if k == 0:
        return torch.empty(0, dtype=torch.int64)
    a = (w.detach().abs() if scores is None else scores.detach().float()).reshape(-1)
    # topk finds the threshold fast; ties at the threshold are then taken in index order, which
    # is what a stable descending sort would pick, at a tenth of its cost.
    cand = _candidates(a, k)
    c = a if cand is None else a[cand]
    thr = torch.topk(c, k, sorted=False).values.min()
    above = torch.nonzero(c > thr).squeeze(1)
    at = torch.nonzero(c == thr).squeeze(1)[: k - above.numel()]
    pos = torch.sort(torch.cat([above, at])).values
    return pos if cand is None else cand[pos]


def _candidates(a: torch.Tensor, k: int, stride: int = 16) -> torch.Tensor | None:
    """Sorted flat indices of a superset of ``a``'s k largest entries, ties included, or None (use all).

    Why: topk over a whole tensor was a tenth of QMC's time. A bound t from every ``stride``-th
    entry (the sample's 2k/stride + 32 largest) keeps only the entries >= t; when at least k remain,
    the k-th largest of the whole tensor is >= t, so it, every entry above it and every tie at it are
    among them and the selection made on them is exactly the one made on the whole tensor."""
    n = a.numel()
    if k * stride * 2 > n:
        return None
    sample = a[::stride]
    t = torch.topk(sample, min(sample.numel(), 2 * k // stride + 32), sorted=False).values.min()
    cand = torch.nonzero(a >= t).squeeze(1)
    return cand if cand.numel() >= k else None


def quantize_outliers(values: torch.Tensor, bits: int) -> tuple[torch.Tensor, float]:
    """Symmetric ``bits``-bit codes with one scale; error at most half a step (scale / 2)."""
    qmax = 2 ** (bits - 1) - 1
    amax = float(values.abs().max()) if values.numel() else 0.0
    scale = amax / qmax if amax > 0 else 1.0
    codes = torch.clamp(torch.round(values / scale), -qmax, qmax).to(torch.int16)
    return codes, scale


def outlier_table(index: torch.Tensor, values: torch.Tensor, bits: int, code: str = "symmetric") -> OutlierTable:
    """The outlier table of ``values`` (at flat positions ``index``) in ``bits``-bit codes.

    ``symmetric``: code x scale over [-amax, amax]. ``offset``: sign + magnitude above the smallest
    outlier magnitude t, 2**(b-1) magnitudes over [t, amax] per sign (see :class:`OutlierTable`):
    every outlier lies above t, so the symmetric code's codes below t are never used, and the offset
    code's step is (amax - t) / (2**(b-1) - 1) against amax / (2**(b-1) - 1)."""
    if code == "symmetric":
        codes, scale = quantize_outliers(values, bits)
        return OutlierTable(index=index, codes=codes, scale=scale, bits=bits)
    if code not in OUTLIER_CODES:
        raise ValueError(f"outlier code must be one of {', '.join(OUTLIER_CODES)}, got {code!r}")
    mags = values.abs()
    t = float(mags.min()) if values.numel() else 0.0
    span = float(mags.max()) - t if values.numel() else 0.0
    scale = span / (2 ** (bits - 1) - 1) if span > 0 else 1.0
    table = OutlierTable(index=index, codes=torch.zeros(0, dtype=torch.int16), scale=scale, bits=bits, offset=t)
    table.codes = table.round(values).to(torch.int16)
    return table


def quantize_qmc(
    w: torch.Tensor,
    bits: int,
    device: DeviceModel,
    rho: float = 0.01,
    group_size: int | None = 128,
    outlier_bits: int = 8,
    n_clip: int = 20,
    noise_aware: bool = True,
    cell_layout: str = "left",
    outlier_code: str = "symmetric",
    level_map: bool = False,
    outlier_scores: torch.Tensor | None = None,
    clip_search: str = "grid",
) -> QuantizedTensor:
    """Quantize one 2-D weight with QMC; ``device`` is the ReRAM model that will hold the inliers (the
        clip search minimises the expected error of its reads), ``cell_layout`` how a partial last cell
        holds its bits (:mod:`qmc_edge.memory.cells`). ``level_map``: also choose the code-to-level permutation of
    least expected read error (:mod:`qmc_edge.quant.level_map`) jointly with the clip search (see
    :func:`_with_level_map`); on an ideal device the identity is kept and no table is stored.
    ``outlier_scores``: choose the outliers by these scores instead of by magnitude. ``clip_search``:
    every clip ratio per group (``grid``) or a descent over them (``descent``, about 2.5x fewer
    candidates; :func:`qmc_edge.quant.uniform.quantize_uniform`)."""
    w = w.detach().float()
    idx = outlier_positions(w, rho, outlier_scores)
    mask = torch.ones(w.numel(), dtype=torch.bool)
    mask[idx] = False
    moments = code_error_moments(bits, device, cell_layout, None) if noise_aware and not device.is_ideal else None
    inl = quantize_uniform(
        w,
        bits,
        group_size,
        inlier_mask=mask.reshape(w.shape),
        clip_ratios=clip_grid(n_clip),
        moments=moments,
        search=clip_search,
    )
    perm = None
    if level_map and not device.is_ideal:
        inl, perm = _with_level_map(
            w, inl, mask.reshape(w.shape), device, cell_layout, n_clip, noise_aware, clip_search
        )
    return QuantizedTensor(
        shape=tuple(w.shape),
        inliers=inl,
        code_memory="reram",
        cell_bits=device.bits_per_cell,
        meta_memory="mram",
        cell_layout=cell_layout,
        outliers=outlier_table(idx, w.reshape(-1)[idx], outlier_bits, outlier_code),
        level_map=perm,
    )


def _stats(w, inl, mask):
    return lm.code_weights(w, inl.codes, inl.scale, inl.zero, inl.group_size, mask, 2**inl.bits)


def _with_level_map(w, inl, mask, device, cell_layout, n_clip, noise_aware, clip_search="grid"):
    """The code-to-level permutation and the grid chosen together: the best permutation for the codes
    of the plain search, the clip search again under that permutation's moments (with
    ``noise_aware``), and the best permutation for its codes; the candidate of least expected error
    (deterministic + read) wins, so the result is never worse than the identity assignment."""
    p = code_transition_matrix(inl.bits, device, cell_layout, None)
    ident = np.arange(2**inl.bits)
    st = _stats(w, inl, mask)
    perm = lm.best_level_map(p, *st)
    cands = [(inl, ident, st), (inl, perm, st)]
    if noise_aware and not np.array_equal(perm, ident):
        inl2 = quantize_uniform(
            w,
            inl.bits,
            inl.group_size,
            inlier_mask=mask,
            clip_ratios=clip_grid(n_clip),
            moments=lm.moments(p, perm),
            search=clip_search,
        )
        st2 = _stats(w, inl2, mask)
        cands += [(inl2, perm, st2), (inl2, lm.best_level_map(p, *st2), st2)]
    # least total expected error (deterministic + reads); min keeps the first, the identity, on ties
    best = min(cands, key=lambda c: c[2][2] + lm.noise_cost(p, c[1], c[2][0], c[2][1]))
    if np.array_equal(best[1], ident):
        return best[0], None  # the plain assignment: no table to store
    return best[0], torch.from_numpy(best[1].astype(np.uint8))


def refit_level_map(w: torch.Tensor, qt: QuantizedTensor, device: DeviceModel) -> None:
    """Choose ``qt``'s code-to-level permutation again for its current codes and grid (after a
    rounding that changed the codes, e.g. GPTQ); the identity when nothing beats it."""
    if device.is_ideal or qt.code_memory != "reram":
        return
    inl = qt.inliers
    mask = torch.ones(qt.numel, dtype=torch.bool)
    if qt.outliers is not None:
        mask[qt.outliers.index] = False
    mask = mask.reshape(qt.shape)
    p = code_transition_matrix(inl.bits, device, qt.cell_layout, None)
    perm = lm.best_level_map(p, *_stats(w.detach().float(), inl, mask))
    qt.level_map = None if np.array_equal(perm, np.arange(2**inl.bits)) else torch.from_numpy(perm.astype(np.uint8))
