"""A quantized weight tensor: what is stored, where it is stored, and what a read returns.

One container for every method so that storage accounting and memory noise apply to all of them
in the same way. Memories are named ``reram`` (multi-level cells, noisy), ``mram`` (on-chip,
bit flips at a BER, default error-free) and ``dram`` (ideal off-chip memory).

Outlier index encoding (documented cost): compressed sparse rows. Each outlier stores its column
in ceil(log2(in_features)) bits and each row stores its outlier count in
ceil(log2(in_features + 1)) bits. For SmolLM2 (576 or 1536 columns) at rho = 1% that is about
0.1 + 0.02 bits per weight, far cheaper than a bitmap (1 bit per weight) or flat indices.

MRAM faults reach every field a tensor keeps in MRAM (scales, zero points, outlier codes and scale,
CSR index), optionally behind SECDED ECC whose check bits are billed as ``ecc_check_bits``: see
:mod:`qmc_edge.quant.read`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from qmc_edge.memory.cells import cells_per_code
from qmc_edge.memory.mram import ECC_MODES, check_bits_for
from qmc_edge.quant.uniform import UniformCodes

#: How outlier codes map to values: ``symmetric`` (code x scale, codes in [-(2**(b-1)-1), 2**(b-1)-1]) or
#: ``offset`` (sign + magnitude above the outlier threshold: every one of the 2**b codes is used).
OUTLIER_CODES = ("symmetric", "offset")


@dataclass
class OutlierTable:
    """Outliers kept in high precision: flat positions (sorted) and b-bit integer codes.

    ``offset`` None: the symmetric code, value = code * scale. ``offset`` t (the smallest outlier
    magnitude): the offset code, which spends no codes below the threshold every outlier lies above:
    code c >= 0 is +(t + c * scale), code c < 0 is -(t + (-c - 1) * scale), so the 2**b two's-complement
    codes cover [-amax, -t] and [t, amax] with 2**(b-1) magnitudes each."""

    index: torch.Tensor  # (k,) int64 flat positions in the (out, in) tensor, ascending
    codes: torch.Tensor  # (k,) int16 codes (see the class docstring for their range)
    scale: float
    bits: int
    offset: float | None = None

    @property
    def count(self) -> int:
        return int(self.index.numel())

    @property
    def code(self) -> str:
        return "symmetric" if self.offset is None else "offset"

    def values(self, codes: torch.Tensor | None = None, scale: float | None = None, offset: float | None = None):
        """float32 values of ``codes`` (default: the stored ones), under ``scale`` / ``offset`` when
        given (an MRAM read may have flipped them)."""
        c = (self.codes if codes is None else codes).float()
        s = self.scale if scale is None else scale
        if self.offset is None:
            return c * s
        t = self.offset if offset is None else offset
        return torch.where(c >= 0, t + c * s, -(t + (-c - 1) * s))

    def round(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest code (float) of every value in ``x`` on this table's grid (GPTQ re-rounds with it)."""
        top = 2 ** (self.bits - 1)
        if self.offset is None:
            return torch.clamp(torch.round(x / self.scale), -(top - 1), top - 1)
        mag = torch.clamp(torch.round((x.abs() - self.offset) / self.scale), 0, top - 1)
        return torch.where(x >= 0, mag, -mag - 1)


@dataclass
class StorageBits:
    """Bits of one tensor by component; each component lives in one memory."""

    components: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (memory, bits)
    reram_cells: int = 0

    def by_memory(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for mem, bits in self.components.values():
            out[mem] = out.get(mem, 0) + bits
        return out

    @property
    def total(self) -> int:
        return sum(b for _, b in self.components.values())


@dataclass
class QuantizedTensor:
    """Inlier codes (+ optional outlier table) of one 2-D weight, and where each part is stored."""

    shape: tuple[int, int]
    inliers: UniformCodes
    code_memory: str = "dram"  # "reram" or "dram"
    cell_bits: int = 0  # bits per ReRAM cell when code_memory == "reram"
    meta_memory: str = "dram"  # scales, zero points, outliers: "mram" or "dram"
    scale_bits: int = 16  # fp16 scales; 8 for E8M0 power-of-two scales
    zero_bits: int | None = None  # None: same as code bits; 0: fixed zero point (symmetric formats)
    outliers: OutlierTable | None = None
    # How a partial last ReRAM cell holds its bits: "left" (low edge of the level range) or "spread"
    # (the device-independent even spread over the range, see qmc_edge.memory.cells).
    cell_layout: str = "left"
    mram_ecc: str = "none"  # "secded": Hamming(72,64) per 64-bit word of each MRAM field (qmc_edge.quant.read)
    # Code-to-level permutation (qmc_edge.quant.level_map): logical code q is stored as physical code
    # level_map[q]; None = the plain assignment. Kept in MRAM beside the scales.
    level_map: torch.Tensor | None = None

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    def dequantize(self) -> torch.Tensor:
        """The weight as stored, read without error (a noisy read: :func:`qmc_edge.quant.read.read_tensor`)."""
        w = self.inliers.dequantize(self.inliers.codes)
        if self.outliers is not None and self.outliers.count:
            w.view(-1)[self.outliers.index] = self.outliers.values()
        return w

    def storage(self) -> StorageBits:
        out_f, in_f = self.shape
        b = self.inliers.bits
        s = StorageBits()
        if self.code_memory == "reram":
            k = cells_per_code(b, self.cell_bits)
            s.reram_cells = self.numel * k
            # Physical capacity used: k cells of c bits per code (a 3-bit code in 2-bit cells uses 4).
            s.components["codes"] = ("reram", self.numel * k * self.cell_bits)
        else:
            s.components["codes"] = ("dram", self.numel * b)
        n_meta = out_f * self.inliers.n_groups
        s.components["scales"] = (self.meta_memory, n_meta * self.scale_bits)
        zb = b if self.zero_bits is None else self.zero_bits
        if zb:
            s.components["zero_points"] = (self.meta_memory, n_meta * zb)
        if self.outliers is not None and self.outliers.count:
            k = self.outliers.count
            # codes, the fp16 scale and, for the offset code, the fp16 threshold
            extra = 16 if self.outliers.offset is None else 32
            s.components["outlier_values"] = (self.meta_memory, k * self.outliers.bits + extra)
            col_bits = max(1, math.ceil(math.log2(in_f)))
            cnt_bits = max(1, math.ceil(math.log2(in_f + 1)))
            s.components["outlier_index"] = (self.meta_memory, k * col_bits + out_f * cnt_bits)
        if self.level_map is not None:
            s.components["level_map"] = (self.meta_memory, self.level_map.numel() * b)
        if self.mram_ecc not in ECC_MODES:
            raise ValueError(f"mram_ecc must be one of {', '.join(ECC_MODES)}, got {self.mram_ecc!r}")
        if self.meta_memory == "mram" and self.mram_ecc != "none":
            # SECDED check bits, 8 per 64 data bits of each MRAM field (qmc_edge.quant.read).
            s.components["ecc_check_bits"] = ("mram", ecc_check_bits(self))
        return s


def col_bits(in_features: int) -> int:
    """Bits per outlier column in the CSR index (as qtensor.py counts them)."""
    return max(1, math.ceil(math.log2(in_features)))


def count_bits(in_features: int) -> int:
    """Bits per row count in the CSR index (as qtensor.py counts them)."""
    return max(1, math.ceil(math.log2(in_features + 1)))


def mram_layout(qt: QuantizedTensor) -> dict[str, tuple[int, int]]:
    """Field name -> (elements, bits per element) of what ``qt`` keeps in MRAM, in draw order."""
    if qt.meta_memory != "mram":
        return {}
    out_f, in_f = qt.shape
    n_meta = out_f * qt.inliers.n_groups
    f = {"scales": (n_meta, qt.scale_bits)}
    zb = qt.inliers.bits if qt.zero_bits is None else qt.zero_bits
    if zb:
        f["zero_points"] = (n_meta, zb)
    o = qt.outliers
    if o is not None and o.count:
        f["outlier_codes"] = (o.count, o.bits)
        f["outlier_scale"] = (1, 16)
        if o.offset is not None:
            f["outlier_offset"] = (1, 16)
        f["outlier_cols"] = (o.count, col_bits(in_f))
        f["outlier_counts"] = (out_f, count_bits(in_f))
    if qt.level_map is not None:  # the decoder's table, physical code -> logical code (qmc_edge.quant.level_map)
        f["level_map"] = (qt.level_map.numel(), qt.inliers.bits)
    return {k: v for k, v in f.items() if v[0] * v[1] > 0}


def mram_fields(qt: QuantizedTensor) -> dict[str, int]:
    """Stored data bits per MRAM field of ``qt`` (empty when its metadata is not in MRAM). Their
    sum plus :func:`ecc_check_bits` is the MRAM total of ``qt.storage()``."""
    return {name: n * w for name, (n, w) in mram_layout(qt).items()}


def ecc_check_bits(qt: QuantizedTensor, ecc: str | None = None) -> int:
    """MRAM check bits of ``qt`` under ``ecc`` (default: the tensor's ``mram_ecc``)."""
    mode = qt.mram_ecc if ecc is None else ecc
    return sum(check_bits_for(b, mode) for b in mram_fields(qt).values())
