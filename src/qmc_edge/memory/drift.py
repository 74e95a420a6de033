"""How a ReRAM cell's conductance moves after programming: level-independent log-time relaxation
(:class:`Relaxation`) and per-read noise (:class:`ReadNoiseModel`), each built from a cell-model
file's ``retention`` and ``read_noise`` sections, in normalised conductance. The read model that
applies them is :class:`qmc_edge.memory.models.GaussianLevelReRAM`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from qmc_edge.memory.files import CellModelFile


@dataclass(frozen=True)
class Relaxation:
    """Level-independent conductance relaxation after programming, in normalised conductance.

    For t > t0 (the time at which the fresh level table holds)::

        mean_i(t)    = mean_i(t0) + mean_shift_per_ln_s * ln(t / t0)
        s(t)         = sigma_at_1s + sigma_per_ln_s * ln(t)
        sigma_i(t)^2 = sigma_i(t0)^2 + s(t)^2 - s(t0)^2

    and nothing changes for t <= t0. Built from a cell-model file's ``retention`` section by
    :meth:`from_file` (figures in uS divided by the conductance window)."""

    t0_s: float
    mean_shift_per_ln_s: float
    sigma_at_1s: float
    sigma_per_ln_s: float
    measured_to_s: float = math.inf

    @classmethod
    def from_file(cls, spec: CellModelFile) -> Relaxation | None:
        r = spec.retention
        if r is None:
            return None
        g = spec.conductance.range_uS
        return cls(
            t0_s=r.fresh_at_s.value,
            mean_shift_per_ln_s=r.mean_shift_uS_per_ln_s.value / g,
            sigma_at_1s=r.sigma_uS_at_1s.value / g,
            sigma_per_ln_s=r.sigma_uS_per_ln_s.value / g,
            measured_to_s=r.measured_to_s.value,
        )

    def spread(self, t_s: float) -> float:
        """Relaxation spread s(t) (normalised), for t >= t0."""
        return self.sigma_at_1s + self.sigma_per_ln_s * math.log(max(t_s, self.t0_s))

    def shift(self, t_s: float) -> float:
        """Mean shift of every level at age t (normalised; 0 for t <= t0)."""
        return self.mean_shift_per_ln_s * math.log(max(t_s, self.t0_s) / self.t0_s)

    def extra_variance(self, t_s: float) -> float:
        """Variance added to every level's programmed sigma by age t (0 for t <= t0)."""
        return self.spread(t_s) ** 2 - self.spread(self.t0_s) ** 2


@dataclass(frozen=True)
class ReadNoiseModel:
    """Per-read Gaussian noise on the conductance (aihwkit ReRamCMONoiseModel, Lombardo et al. DRC 2024)::

        sigma_read(g, t) = k * log10(g / 1 uS) * sqrt(ln((t + t_read) / (2 t_read)))   [uS]

    with g = g_min + window * (normalised conductance), divided by the window to reach the normalised
    scale; t is the time since programming (at least the fresh time)."""

    k_uS: float
    t_read_s: float
    g_min_uS: float
    g_range_uS: float

    @classmethod
    def from_file(cls, spec: CellModelFile) -> ReadNoiseModel | None:
        r = spec.read_noise
        if r is None:
            return None
        c = spec.conductance
        return cls(k_uS=r.k_uS.value, t_read_s=r.t_read_s.value, g_min_uS=c.g_min_uS.value, g_range_uS=c.range_uS)

    def sigma(self, g_norm: np.ndarray | torch.Tensor, t_s: float):
        """Read sigma (normalised) at normalised conductance(s) ``g_norm`` and age ``t_s``."""
        lib = torch if isinstance(g_norm, torch.Tensor) else np
        g_uS = lib.clip(self.g_min_uS + self.g_range_uS * g_norm, 1.0, None)
        window = math.sqrt(max(0.0, math.log((t_s + self.t_read_s) / (2 * self.t_read_s))))
        return self.k_uS * lib.log10(g_uS) * window / self.g_range_uS
