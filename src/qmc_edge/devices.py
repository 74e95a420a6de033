"""Device models for the memories that hold quantized weights.

Written by hand because no maintained library models multi-level ReRAM *read-out errors of
stored levels* in a form a quantizer can use: NVMExplorer ships the level table but no API, and
IBM aihwkit models continuous analog noise for in-memory compute, not digital level storage.

Every model answers two questions through one small interface:

* ``transition_matrix()``: P[i, j] = probability that a cell programmed to level i reads back as
  level j. The noise-aware quantizer uses it analytically (expected error, no sampling).
* ``read(levels, generator)``: one sampled read of many cells. The default samples from the
  transition matrix; a continuous model (e.g. conductance drift) may override it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtr

# Gaussian level model of multi-level ReRAM, normalised conductance (0 = lowest, 1 = highest).
# Source: NVMExplorer (lpentecost/NVMExplorer, MIT), nvmexplorer_src/nvmFI/nvm_data/mlc_rram_args.p,
# as tabulated in ../shared/reference/devices.md. 1 bit/cell uses the two extreme states of the
# 2-bit table (near-ideal, as the reference says).
RERAM_LEVELS: dict[int, tuple[tuple[float, float], ...]] = {
    1: ((0.000, 0.0086), (1.000, 0.0034)),
    2: ((0.000, 0.0086), (0.385, 0.0335), (0.722, 0.0274), (1.000, 0.0034)),
    3: (
        (0.000, 0.0086),
        (0.078, 0.013),
        (0.204, 0.030),
        (0.385, 0.034),
        (0.542, 0.025),
        (0.722, 0.027),
        (0.886, 0.037),
        (1.000, 0.0034),
    ),
}
RERAM_SOURCE = "NVMExplorer mlc_rram_args.p (Gaussian levels), via shared/reference/devices.md"


class DeviceModel(ABC):
    """A memory whose cells each store one of ``2**bits_per_cell`` levels."""

    bits_per_cell: int
    name: str

    @property
    def levels(self) -> int:
        return 2**self.bits_per_cell

    @abstractmethod
    def transition_matrix(self) -> np.ndarray:
        """(L, L) row-stochastic matrix of programmed level -> read level probabilities."""

    @property
    def is_ideal(self) -> bool:
        return bool(np.allclose(self.transition_matrix(), np.eye(self.levels), atol=0, rtol=0))

    def read(self, levels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Sample one read of every cell in ``levels`` (integer tensor of any shape)."""
        if self.is_ideal or levels.numel() == 0:
            return levels.clone()
        cdf = torch.from_numpy(np.cumsum(self.transition_matrix(), axis=1)).to(torch.float64)
        cdf[:, -1] = 1.0  # guard against rounding: every draw lands somewhere
        flat = levels.reshape(-1).long()
        u = torch.rand(flat.shape, generator=generator, dtype=torch.float64)
        out = torch.empty_like(flat)
        # Chunked so that the (n, L) comparison never needs more than ~64 MB at once.
        step = max(1, (1 << 23) // self.levels)
        for start in range(0, flat.numel(), step):
            sl = slice(start, start + step)
            out[sl] = (u[sl, None] > cdf[flat[sl]]).sum(dim=1)
        return out.reshape(levels.shape).to(levels.dtype)

    def describe(self) -> dict:
        t = self.transition_matrix()
        return {
            "name": self.name,
            "bits_per_cell": self.bits_per_cell,
            "mean_cell_error_rate": float(1.0 - np.mean(np.diag(t))),
            "worst_level_error_rate": float(1.0 - np.min(np.diag(t))),
        }


@dataclass
class IdealDevice(DeviceModel):
    """Error-free storage (SRAM, DRAM, or ECC-protected memory)."""

    bits_per_cell: int = 1
    name: str = "ideal"

    def transition_matrix(self) -> np.ndarray:
        return np.eye(self.levels)


def _gaussian_intersection(m0: float, s0: float, m1: float, s1: float) -> float:
    """Point between m0 < m1 where the two normal densities are equal (the ML read threshold)."""
    if abs(s0 - s1) < 1e-15:
        return 0.5 * (m0 + m1)
    # Equal log-densities: quadratic a x^2 + b x + c = 0.
    a = 1.0 / (2 * s1**2) - 1.0 / (2 * s0**2)
    b = m0 / s0**2 - m1 / s1**2
    c = m1**2 / (2 * s1**2) - m0**2 / (2 * s0**2) + np.log(s1 / s0)
    roots = np.roots([a, b, c])
    roots = roots[np.isreal(roots)].real
    inside = [r for r in roots if m0 <= r <= m1]
    if not inside:  # cannot happen for well-separated levels; fall back to the midpoint
        return 0.5 * (m0 + m1)
    return float(inside[0])


@dataclass
class GaussianLevelReRAM(DeviceModel):
    """Multi-level ReRAM: each level is a Gaussian in conductance; reads threshold at the
    intersections of neighbouring Gaussians, so a read past a threshold returns a neighbour."""

    bits_per_cell: int = 3
    level_table: tuple[tuple[float, float], ...] | None = None
    name: str = "reram-mlc"

    def __post_init__(self) -> None:
        if self.level_table is None:
            if self.bits_per_cell not in RERAM_LEVELS:
                raise ValueError(
                    f"no ReRAM level table for {self.bits_per_cell} bits/cell; use 1, 2 or 3 or pass level_table"
                )
            self.level_table = RERAM_LEVELS[self.bits_per_cell]
        if len(self.level_table) != self.levels:
            raise ValueError(
                f"level table has {len(self.level_table)} levels, {self.bits_per_cell} bits/cell needs {self.levels}"
            )
        self.name = f"reram-{self.bits_per_cell}b/cell"
        self._matrix = self._compute_matrix()

    def thresholds(self) -> np.ndarray:
        tab = self.level_table
        return np.array([_gaussian_intersection(*tab[i], *tab[i + 1]) for i in range(len(tab) - 1)], dtype=np.float64)

    def _compute_matrix(self) -> np.ndarray:
        mu = np.array([m for m, _ in self.level_table])[:, None]
        sd = np.array([s for _, s in self.level_table])[:, None]
        edges = np.concatenate([[-np.inf], self.thresholds(), [np.inf]])[None, :]
        cdf = ndtr((edges - mu) / sd)
        return np.diff(cdf, axis=1)

    def transition_matrix(self) -> np.ndarray:
        return self._matrix


@dataclass
class MRAMBitFlips:
    """STT-MRAM outlier store: independent bit flips at ``ber`` per stored bit per read.

    Default 0: with ECC, MRAM bits are usually treated as error-free (Intel 22FFL, ISSCC 2019; see
    shared/reference/devices.md); 1e-9..1e-6 is the sensitivity range the reference suggests.
    """

    ber: float = 0.0

    def flip(self, codes: torch.Tensor, bits: int, generator: torch.Generator) -> torch.Tensor:
        """Flip bits of two's-complement ``bits``-bit integer codes."""
        if self.ber <= 0 or codes.numel() == 0:
            return codes.clone()
        mask_bits = torch.rand((codes.numel(), bits), generator=generator) < self.ber
        weights = (1 << torch.arange(bits)).to(torch.int64)
        xor = (mask_bits.to(torch.int64) * weights).sum(dim=1).reshape(codes.shape)
        unsigned = codes.to(torch.int64) & ((1 << bits) - 1)
        flipped = unsigned ^ xor
        signed = torch.where(flipped >= (1 << (bits - 1)), flipped - (1 << bits), flipped)
        return signed.to(codes.dtype)


def reram(bits_per_cell: int, ideal: bool = False) -> DeviceModel:
    """The ReRAM model for ``bits_per_cell``; ``ideal`` swaps in error-free cells of the same size."""
    if bits_per_cell not in (1, 2, 3):
        raise ValueError(f"bits per cell must be 1, 2 or 3, got {bits_per_cell}")
    if ideal:
        return IdealDevice(bits_per_cell=bits_per_cell, name=f"ideal-{bits_per_cell}b/cell")
    return GaussianLevelReRAM(bits_per_cell=bits_per_cell)
