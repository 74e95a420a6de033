"""The outliers stage: which weights of a tensor are kept as outliers (high-precision codes in MRAM,
with their positions), and how their values are coded.

Selection: exactly round(rho * numel) weights, the largest by a score; ties at the threshold go to
the lower flat index, so the split is deterministic. ``magnitude`` scores by |w| (the paper);
``fisher`` by F w^2, F the diagonal Fisher information (:mod:`qmc_edge.quant.sensitivity`), so the
weights whose errors cost most stay exact. A new rule is one class here or in a module of its own.

Coding: ``symmetric`` (code x scale over [-max, max]) or ``offset`` (sign + magnitude above the
smallest outlier's magnitude), :func:`outlier_table`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from qmc_edge.errors import QMCError
from qmc_edge.quant.qtensor import OUTLIER_CODES, OutlierTable
from qmc_edge.quant.stages.kinds import register_stage


class OutlierSelection:
    """Chooses the outliers of one tensor: :meth:`select` returns their sorted flat indices."""

    stage_name: ClassVar[str]
    #: Whether :meth:`select` needs the tensor's Fisher diagonal (the method computes it first).
    needs_sensitivity: ClassVar[bool] = False

    @classmethod
    def from_spec(cls, spec: Any) -> OutlierSelection:
        return cls()

    def scores(self, w: torch.Tensor, sensitivity: torch.Tensor | None) -> torch.Tensor | None:
        """Per-weight scores to rank by (None: magnitude)."""
        raise NotImplementedError

    def select(self, w: torch.Tensor, rho: float, sensitivity: torch.Tensor | None = None) -> torch.Tensor:
        return outlier_positions(w, rho, self.scores(w, sensitivity))


@register_stage("outliers", "magnitude")
class ByMagnitude(OutlierSelection):
    """The largest |w| (the paper's split)."""

    def scores(self, w, sensitivity):
        return None


@register_stage("outliers", "fisher")
class ByFisher(OutlierSelection):
    """The largest F w^2: the weights whose error raises the loss most."""

    needs_sensitivity = True

    def scores(self, w, sensitivity):
        if sensitivity is None:
            raise QMCError("outliers_by=fisher ranks outliers by the Fisher diagonal; quantize the whole model")
        return sensitivity * w.detach().float() ** 2


class GivenScores(OutlierSelection):
    """Outliers by scores the caller computed (not registered: for :func:`quantize_qmc`'s argument)."""

    def __init__(self, scores: torch.Tensor | None):
        self._scores = scores

    def scores(self, w, sensitivity):
        return self._scores


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
