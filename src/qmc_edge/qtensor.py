"""A quantized weight tensor: what is stored, where it is stored, and what a read returns.

One container for every method so that storage accounting and device noise apply to all of them
in the same way. Memories are named ``reram`` (multi-level cells, noisy), ``mram`` (on-chip,
bit flips at a BER, default error-free) and ``dram`` (ideal off-chip memory).

Outlier index encoding (documented cost): compressed sparse rows. Each outlier stores its column
in ceil(log2(in_features)) bits and each row stores its outlier count in
ceil(log2(in_features + 1)) bits. For SmolLM2 (576 or 1536 columns) at rho = 1% that is about
0.1 + 0.02 bits per weight, far cheaper than a bitmap (1 bit per weight) or flat indices.

MRAM faults reach every field a tensor keeps in MRAM (scales, zero points, outlier codes and scale,
CSR index), optionally behind SECDED ECC whose check bits are billed as ``ecc_check_bits``: see
:mod:`qmc_edge.mram`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from .cells import cells_per_code, read_codes
from .devices import DeviceModel, MRAMBitFlips
from .level_map import inverse
from .mram import ECC_MODES, ecc_check_bits, effective_ecc, read_mram
from .uniform import UniformCodes

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
    # (the device-independent even spread over the range, see qmc_edge.cells).
    cell_layout: str = "left"
    mram_ecc: str = "none"  # "secded": Hamming(72,64) per 64-bit word of each MRAM field (qmc_edge.mram)
    # Code-to-level permutation (qmc_edge.level_map): logical code q is stored as physical code
    # level_map[q]; None = the plain assignment. Kept in MRAM beside the scales.
    level_map: torch.Tensor | None = None

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    def dequantize(
        self,
        device: DeviceModel | None = None,
        mram: MRAMBitFlips | None = None,
        generator: torch.Generator | None = None,
        read_generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The weight as the accelerator would see it after one read (noise-free without a device).

        ``generator`` draws the chip: the programming error of the cells and the MRAM faults, the
        same for every read of that chip; ``read_generator`` draws the per-read noise of a device that
        :attr:`~qmc_edge.devices.DeviceModel.rereads` (none: the whole error comes from ``generator``).

        ``mram`` (an :class:`qmc_edge.mram.MRAMFaults`, or a plain ``MRAMBitFlips``) flips bits in
        every MRAM field when the metadata is in MRAM, decoded through the tensor's ``mram_ecc``
        (see :mod:`qmc_edge.mram`). ReRAM reads are drawn first, then MRAM faults; with
        ``mram.ber == 0`` nothing is drawn and nothing changes.
        """
        codes = self.inliers.codes
        lmap = None if self.level_map is None else self.level_map.long()
        phys = None  # the physical codes a ReRAM read returned, still to decode through the table
        if device is not None and self.code_memory == "reram" and not device.is_ideal:
            phys = codes if lmap is None else lmap[codes.long()].to(codes.dtype)
            phys = read_codes(phys, self.inliers.bits, device, generator, self.cell_layout, None, read_generator)
        in_mram = mram is not None and self.meta_memory == "mram"
        if in_mram:
            effective_ecc(self, mram)  # a mismatched ECC is a bug even when nothing flips
        if in_mram and mram.ber > 0:
            r = read_mram(self, mram, generator)
            if r.level_inverse is not None:  # every read decodes through the (possibly faulty) table
                phys = lmap[codes.long()] if phys is None else phys
                codes = r.level_inverse[phys.long()].to(codes.dtype)
            elif phys is not None:
                codes = phys
            w = replace(self.inliers, scale=r.scale, zero=r.zero).dequantize(codes)
            if r.outlier_index is not None:
                w.view(-1)[r.outlier_index] = r.outlier_values
            return w
        if phys is not None:
            codes = phys if lmap is None else inverse(lmap)[phys.long()].to(codes.dtype)
        w = self.inliers.dequantize(codes)
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
            # SECDED check bits, 8 per 64 data bits of each MRAM field (qmc_edge.mram).
            s.components["ecc_check_bits"] = ("mram", ecc_check_bits(self))
        return s
