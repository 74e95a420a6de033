"""A quantized weight tensor: what is stored, where it is stored, and what a read returns.

One container for every method so that storage accounting and device noise apply to all of them
in the same way. Memories are named ``reram`` (multi-level cells, noisy), ``mram`` (on-chip,
bit flips at a BER, default error-free) and ``dram`` (ideal off-chip memory).

Outlier index encoding (documented cost): compressed sparse rows. Each outlier stores its column
in ceil(log2(in_features)) bits and each row stores its outlier count in
ceil(log2(in_features + 1)) bits. For SmolLM2 (576 or 1536 columns) at rho = 1% that is about
0.1 + 0.02 bits per weight, far cheaper than a bitmap (1 bit per weight) or flat indices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .cells import cells_per_code, read_codes
from .devices import DeviceModel, MRAMBitFlips
from .uniform import UniformCodes


@dataclass
class OutlierTable:
    """Outliers kept in high precision: flat positions (sorted) and symmetric integer codes."""

    index: torch.Tensor  # (k,) int64 flat positions in the (out, in) tensor, ascending
    codes: torch.Tensor  # (k,) int16 symmetric codes in [-(2**(b-1)-1), 2**(b-1)-1]
    scale: float
    bits: int

    @property
    def count(self) -> int:
        return int(self.index.numel())

    def values(self, codes: torch.Tensor | None = None) -> torch.Tensor:
        return (self.codes if codes is None else codes).float() * self.scale


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

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    def dequantize(
        self,
        device: DeviceModel | None = None,
        mram: MRAMBitFlips | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The weight as the accelerator would see it after one read (noise-free without a device)."""
        codes = self.inliers.codes
        if device is not None and self.code_memory == "reram" and not device.is_ideal:
            codes = read_codes(codes, self.inliers.bits, device, generator)
        w = self.inliers.dequantize(codes)
        if self.outliers is not None and self.outliers.count:
            ocodes = self.outliers.codes
            if mram is not None and mram.ber > 0:
                ocodes = mram.flip(ocodes, self.outliers.bits, generator)
            w.view(-1)[self.outliers.index] = self.outliers.values(ocodes)
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
            s.components["outlier_values"] = (self.meta_memory, k * self.outliers.bits + 16)
            col_bits = max(1, math.ceil(math.log2(in_f)))
            cnt_bits = max(1, math.ceil(math.log2(in_f + 1)))
            s.components["outlier_index"] = (self.meta_memory, k * col_bits + out_f * cnt_bits)
        return s
