"""The simple grids the baselines use, in the same container as QMC: RTN (min-max per group),
MXINT4 (blocks of 32 sharing a power-of-two scale) and eMEM-naive (RTN codes in ReRAM cells). The
baselines produced by maintained libraries are :mod:`qmc_edge.libraries`."""

from __future__ import annotations

import torch

from qmc_edge.memory.models import CellModel
from qmc_edge.quant.qtensor import QuantizedTensor
from qmc_edge.quant.uniform import UniformCodes, quantize_uniform


def quantize_rtn(w: torch.Tensor, bits: int, group_size: int | None = 128) -> QuantizedTensor:
    """Round-to-nearest, asymmetric min-max per row and group, kept in ideal (DRAM) memory."""
    inl = quantize_uniform(w, bits, group_size)
    return QuantizedTensor(shape=tuple(w.shape), inliers=inl)


def quantize_emem_naive(
    w: torch.Tensor, bits: int, cell_model: CellModel, group_size: int | None = 128
) -> QuantizedTensor:
    """RTN codes of the whole tensor (no outlier split, no noise awareness) stored in multi-level
    ReRAM; scales and zero points in MRAM, as a plain emerging-memory deployment would."""
    q = quantize_rtn(w, bits, group_size)
    q.code_memory, q.cell_bits, q.meta_memory = "reram", cell_model.bits_per_cell, "mram"
    return q


def quantize_mxint4(w: torch.Tensor, block: int = 32) -> QuantizedTensor:
    """MXINT4: blocks of 32 along the input dimension share a power-of-two (E8M0) scale; elements
    are 4-bit two's complement in [-8, 7].

    Following the OCP MX convention, the shared exponent is floor(log2(amax)) minus the element
    format's largest exponent, so the step is 2**(floor(log2 amax) - 2) and the block maximum
    may saturate at 7 steps. Codes are stored offset by 8 (a fixed zero point, costing no bits).
    """
    w = w.detach().float()
    out, inf = w.shape
    n_blocks = -(-inf // block)
    pad = n_blocks * block - inf
    wp = torch.nn.functional.pad(w, (0, pad)) if pad else w
    wb = wp.reshape(out, n_blocks, block)
    amax = wb.abs().amax(dim=2)
    exp = torch.floor(torch.log2(amax.clamp(min=2.0**-126))) - 2
    scale = torch.pow(2.0, exp)
    q = torch.clamp(torch.round(wb / scale[..., None]), -8, 7) + 8
    codes = q.reshape(out, -1)[:, :inf].to(torch.uint8)
    inl = UniformCodes(codes=codes, scale=scale, zero=torch.full_like(scale, 8.0), bits=4, group_size=block)
    return QuantizedTensor(shape=(out, inf), inliers=inl, scale_bits=8, zero_bits=0)
