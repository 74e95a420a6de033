"""HQQ (Half-Quadratic Quantization, Badri & Shaji 2023) through the ``hqq`` package, calibration-free.

HQQ keeps min-max initial scales and optimises the zero point of each group with a half-quadratic
solver of an l_p<1 reconstruction loss; its zero point is therefore a real number, stored by the
library in the compute precision. We count it as fp16 (``zero_bits=16``), which is why HQQ costs
more bits per weight than RTN at the same group size.

Layout: the library groups ``group_size`` consecutive elements of the flattened tensor
(``axis=1``). That equals per-row groups along the input dimension only when ``in_features`` is a
multiple of the group size (SmolLM2's 576 is not a multiple of 128), so the full groups and the
last partial group of every row are quantized in two library calls; the groups are independent in
HQQ's solver, so this is the same result as a group-aware call and the same layout as RTN here.
"""

from __future__ import annotations

import torch

from qmc_edge.libraries import require
from qmc_edge.quant.qtensor import QuantizedTensor
from qmc_edge.quant.uniform import UniformCodes


def _library_quantize(w: torch.Tensor, bits: int, group_size: int) -> tuple[torch.Tensor, dict]:
    from hqq.core.quantize import Quantizer  # type: ignore[import-not-found]

    codes, meta = Quantizer.quantize(
        w,
        nbits=bits,
        channel_wise=True,
        group_size=group_size,
        optimize=True,  # the HQQ solver; False would be plain min-max RTN
        round_zero=False,
        axis=1,
        bitpack=False,
        compute_dtype=torch.float32,
        device="cpu",
    )
    meta["compute_dtype"] = torch.float32
    return codes, meta


def hqq_reference(w: torch.Tensor, bits: int, group_size: int | None = 128) -> torch.Tensor:
    """The library's own dequantized weight (``Quantizer.dequantize``), piece by piece as quantized."""
    from hqq.core.quantize import Quantizer  # type: ignore[import-not-found]

    out = []
    for piece, g in _pieces(w.detach().float(), group_size):
        codes, meta = _library_quantize(piece, bits, g)
        out.append(Quantizer.dequantize(codes, meta))
    return torch.cat(out, dim=1)


def _pieces(w: torch.Tensor, group_size: int | None) -> list[tuple[torch.Tensor, int]]:
    """Column blocks that each hold whole groups: the full groups, then the partial last group."""
    inf = w.shape[1]
    g = inf if not group_size or group_size >= inf else group_size
    full = (inf // g) * g
    pieces = [(w[:, :full].contiguous(), g)]
    if full < inf:
        pieces.append((w[:, full:].contiguous(), inf - full))
    return pieces


def quantize_hqq(w: torch.Tensor, bits: int, group_size: int | None = 128) -> QuantizedTensor:
    """HQQ codes of one (out, in) weight with per-row groups of ``group_size`` (None/0: per channel)."""
    require("hqq")
    w = w.detach().float()
    out, inf = w.shape
    codes, scales, zeros = [], [], []
    for piece, g in _pieces(w, group_size):
        q, meta = _library_quantize(piece, bits, g)
        n_groups = piece.shape[1] // g
        codes.append(q.reshape(out, piece.shape[1]))
        # meta scale/zero have one entry per group, in flattened (row-major) order
        scales.append(meta["scale"].reshape(out, n_groups))
        zeros.append(meta["zero"].reshape(out, n_groups))
    g = inf if not group_size or group_size >= inf else group_size
    inl = UniformCodes(
        codes=torch.cat(codes, dim=1).round().to(torch.uint8),
        scale=torch.cat(scales, dim=1).float(),
        zero=torch.cat(zeros, dim=1).float(),
        bits=bits,
        group_size=g,
    )
    return QuantizedTensor(shape=(out, inf), inliers=inl, zero_bits=16)
