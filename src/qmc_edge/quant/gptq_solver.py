"""QMC with GPTQ rounding of the inliers ("QMC+GPTQ"): QMC's outlier split and its noise-aware group
ranges, then GPTQ's rounding (Frantar et al., ICLR 2023, arXiv:2210.17323) instead of round-to-nearest.

GPTQ rounds a layer's weight one input column at a time and spreads each column's rounding error over
the columns not yet rounded, weighted by the inverse Hessian ``H = 2 X Xᵀ`` of the layer's inputs, so
that the layer's *output* on calibration text stays close rather than each weight. Here the outliers
take part in that as what they are: entries rounded to their own 8-bit MRAM grid (nearly exact), whose
small error is compensated like any other; the inliers are rounded on the (row, group) grid that QMC's
clipping search chose on the original weights (static groups, as llm-compressor's default).

The method itself (split, grid, then this rounding) is :class:`qmc_edge.methods.qmc.QMC` with
``rounding=gptq`` (the rounding stage :mod:`qmc_edge.quant.stages.rounding`); this module is the
solver, one weight at a time, and knows nothing of QMC or of the model; the block-by-block pipeline
is :mod:`qmc_edge.quant.gptq_blocks`.

Why it is written here rather than taken from a library: the GPTQ implementations people use
(llm-compressor, GPTQModel, AutoGPTQ) round every entry of a column on one grid; none keeps a chosen
set of entries in a second precision or takes externally chosen ranges. The solver follows
llm-compressor 0.14's (float32, columns in order of decreasing input energy with static groups, lazy
updates in blocks of 128 columns, dampening by 1% of the mean Hessian diagonal, inputs that never fire
zeroed, round-to-nearest where the Hessian is not positive definite). Inputs are collected block by
block with the earlier blocks already quantized, as the library's sequential pipeline does, on the
library baselines' calibration windows (:mod:`qmc_edge.quant.calibration`). Run with no outliers
on the library's min-max grid, the whole pipeline gives llm-compressor's GPTQ codes exactly
(tests/test_external.py).
"""

from __future__ import annotations

import torch

from qmc_edge.quant.qtensor import OutlierTable
from qmc_edge.quant.uniform import UniformCodes

BLOCK = 128  # columns per lazy update (llm-compressor's and the GPTQ paper's default)
DAMP = 0.01  # dampening, share of the mean Hessian diagonal


def inverse_hessian_factor(h: torch.Tensor, w: torch.Tensor, damp: float = DAMP) -> tuple[torch.Tensor, bool]:
    """(upper Cholesky factor of the dampened inverse Hessian, whether it exists). Columns whose input
    never fires are zeroed in ``w`` (in place); without a factor the caller rounds to nearest."""
    h = h.clone().float()
    diag = h.diagonal()
    dead = diag == 0
    diag[dead] = 1.0
    w[:, dead] = 0.0
    diag += damp * diag.mean()
    chol, info = torch.linalg.cholesky_ex(h)
    if int(info) != 0:
        return torch.eye(h.shape[0]), False
    return torch.linalg.cholesky(torch.cholesky_inverse(chol), upper=True), True


class RowOutliers:
    """The outlier grids of several tensors stacked by rows, so GPTQ rounds them in one pass: each row
    keeps its own tensor's scale and offset (the same arithmetic as :class:`OutlierTable`, with a
    per-row float32 tensor where the table has one float)."""

    def __init__(self, tables: list[OutlierTable], rows: list[int]):
        codes = {t.code for t in tables}
        bits = {t.bits for t in tables}
        if len(codes) != 1 or len(bits) != 1:
            raise ValueError("stacked outlier grids must share their code and bits")
        self.bits = bits.pop()
        self.offset_code = codes.pop() == "offset"
        self.scale = torch.cat(
            [torch.full((r,), t.scale, dtype=torch.float32) for t, r in zip(tables, rows, strict=True)]
        )
        self.offset = (
            torch.cat([torch.full((r,), t.offset, dtype=torch.float32) for t, r in zip(tables, rows, strict=True)])
            if self.offset_code
            else None
        )

    def values(self, codes: torch.Tensor) -> torch.Tensor:
        c = codes.float()
        if not self.offset_code:
            return c * self.scale
        return torch.where(c >= 0, self.offset + c * self.scale, -(self.offset + (-c - 1) * self.scale))

    def round(self, x: torch.Tensor) -> torch.Tensor:
        top = 2 ** (self.bits - 1)
        if not self.offset_code:
            return torch.clamp(torch.round(x / self.scale), -(top - 1), top - 1)
        mag = torch.clamp(torch.round((x.abs() - self.offset) / self.scale), 0, top - 1)
        return torch.where(x >= 0, mag, -mag - 1)


def gptq_round(
    w: torch.Tensor,
    hessian: torch.Tensor,
    grid: UniformCodes,
    outlier_mask: torch.Tensor | None = None,
    outlier_scale: float = 1.0,
    outlier_bits: int = 8,
    block: int = BLOCK,
    damp: float = DAMP,
    act_order: bool = True,
    outliers: OutlierTable | RowOutliers | None = None,
    moments: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Round ``w`` (out, in) with GPTQ on ``grid``'s scales and zero points.

    Entries in ``outlier_mask`` are rounded on ``outliers``' grid when given (its code, scale and
    offset), else to symmetric ``outlier_bits`` codes of ``outlier_scale``.
    ``act_order``: columns are rounded in order of decreasing input energy (the Hessian's diagonal),
    each still on its own group's grid (llm-compressor's default, "static" ordering).

    ``moments`` (the code-error moments m1, m2 of the cells that will hold the codes, as the clip search
    uses them): noise-aware GPTQ. Each inlier takes the one of its two neighbouring grid points of
    least expected loss (:func:`_expected_round`), and the error spread to the later columns is that
    of the expected read, x - (q - z + m1[q]) s: the mean of a read's error can be compensated, its
    variance cannot and is only avoided by the choice of code. Without ``moments``: plain GPTQ
    (nearest code), bit for bit as before.

    Returns (inlier codes, uint8, outlier slots holding the zero-point code; outlier codes, int16,
    (out, in), zero elsewhere; info with the GPTQ loss (in all and per row) and whether the Hessian was
    usable).
    """
    rows, cols = w.shape
    W = w.detach().clone().float()
    H = hessian.float()
    gidx = torch.arange(cols) // grid.group_size
    out_m = torch.zeros(rows, cols, dtype=torch.bool) if outlier_mask is None else outlier_mask
    perm = torch.argsort(H.diagonal(), descending=True) if act_order else torch.arange(cols)
    W, H, gidx, out_m = W[:, perm], H[perm][:, perm], gidx[perm], out_m[:, perm]
    hdiag = H.diagonal().clone()  # input energy per (permuted) column: what a read's variance costs
    U, ok = inverse_hessian_factor(H, W, damp)
    maxq = 2**grid.bits - 1
    if outliers is None:
        outliers = OutlierTable(torch.zeros(0, dtype=torch.int64), torch.zeros(0), outlier_scale, outlier_bits)
    scale, zero = grid.scale[:, gidx], grid.zero[:, gidx]  # (out, in), per (permuted) column
    codes = torch.empty(rows, cols)
    ocodes = torch.zeros(rows, cols)
    loss = torch.zeros(rows)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for j in range(i2 - i1):
            c = i1 + j
            x = W1[:, j]
            s, z = scale[:, c], zero[:, c]
            # The library's order of operations (clamp(round(x / s + z))), so ties round alike.
            if moments is None:
                q = torch.clamp(torch.round(x / s + z), 0, maxq)
                deq = (q - z) * s
            else:
                q, deq = _expected_round(x, s, z, maxq, moments, 1 / float(U1[j, j]) ** 2, float(hdiag[c]))
            o = outliers.round(x)
            m = out_m[:, c]
            qv = torch.where(m, outliers.values(o), deq)
            codes[:, c] = torch.where(m, z, q)
            ocodes[:, c] = torch.where(m, o, 0.0)
            err = (x - qv) / U1[j, j]
            loss += err * err / 2
            W1[:, j:] -= err[:, None] * U1[j, j:][None, :]
            Err1[:, j] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    info = {"gptq_loss": float(loss.sum()), "hessian_ok": ok, "row_loss": loss}
    inv = torch.argsort(perm)
    return codes[:, inv].to(torch.uint8), ocodes[:, inv].to(torch.int16), info


def _expected_round(x, s, z, maxq, moments, w_mean: float, w_var: float):
    """Noise-aware rounding of one column: (codes, expected read values); see :func:`gptq_round`.
    Of the two grid points around each weight, the one of least GPTQ loss in expectation: the
    expected read's error, weighted as GPTQ weighs a rounding error (1 / [H^-1]_jj, it will be
    compensated), plus the read's variance, weighted by the column's input energy H_jj (it cannot
    be)."""
    m1, m2 = moments
    lo = torch.clamp(torch.floor(x / s + z), 0, maxq)
    hi = torch.clamp(lo + 1, 0, maxq)

    def cost(q):
        qi = q.long()
        mean = (q - z + m1[qi]) * s
        return w_mean * (x - mean) ** 2 + w_var * s * s * (m2[qi] - m1[qi] ** 2)

    q = torch.where(cost(hi) < cost(lo), hi, lo)
    return q, (q - z + m1[q.long()]) * s
