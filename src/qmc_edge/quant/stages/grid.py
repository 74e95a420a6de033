"""The grid stage: the inliers' grid per row and group, its clipping, and the codes on it.

``uniform``: asymmetric min-max codes per group whose clip ratio is chosen to minimise the expected
squared error of a read, the device's read errors included when the stage is given their moments
(:func:`qmc_edge.quant.uniform.quantize_uniform`; ``n_clip`` ratios, searched as a ``grid`` or by
``descent``). The codes are those of rounding to nearest; a rounding stage may replace them on the
same grid (GPTQ).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from qmc_edge.quant.stages.kinds import register_stage
from qmc_edge.quant.uniform import UniformCodes, clip_grid, quantize_uniform


class GridFit:
    """Fits one tensor's inlier grid: :meth:`fit` returns codes, scales and zero points."""

    stage_name: ClassVar[str]

    @classmethod
    def from_spec(cls, spec: Any) -> GridFit:
        return cls()

    def fit(
        self, w: torch.Tensor, bits: int, group_size: int | None, mask: torch.Tensor, moments: tuple | None
    ) -> UniformCodes:
        """``w``'s inliers (``mask`` True) on a ``bits``-bit grid per group of ``group_size`` (None: per
        row); ``moments``: the per-code read-error moments to include (None: an error-free memory)."""
        raise NotImplementedError


@register_stage("grid", "uniform")
class UniformGrid(GridFit):
    """Uniform asymmetric grid per group, noise-aware clip search."""

    def __init__(self, n_clip: int = 20, search: str = "grid"):
        self.n_clip, self.search = n_clip, search

    @classmethod
    def from_spec(cls, spec: Any) -> UniformGrid:
        return cls(int(spec.n_clip), str(spec.clip_search))

    def fit(self, w, bits, group_size, mask, moments):
        return quantize_uniform(
            w,
            bits,
            group_size,
            inlier_mask=mask,
            clip_ratios=clip_grid(self.n_clip),
            moments=moments,
            search=self.search,
        )
