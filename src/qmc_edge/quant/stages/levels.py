"""The levels stage: which cell level pattern each code is written as.

``identity``: code q is written as level pattern q (the plain assignment; no table stored).
``best``: per tensor, the permutation of least expected read error, from the tensor's code histogram
and the cells' transition matrix (:mod:`qmc_edge.quant.level_map`), chosen jointly with the grid: the
best permutation for the codes of the plain search, the grid fitted again under that permutation's
moments (when the grid is noise-aware), and the best permutation for its codes; the candidate of
least expected error (deterministic + read) wins, so it is never worse than the identity. Its table
(2^b x b bits) is billed in MRAM. On an error-free memory the identity is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from qmc_edge.memory.cells import code_transition_matrix
from qmc_edge.memory.models import CellModel
from qmc_edge.quant import level_map as lm
from qmc_edge.quant.qtensor import QuantizedTensor
from qmc_edge.quant.stages.kinds import register_stage
from qmc_edge.quant.uniform import UniformCodes

#: Fits the grid again under other read-error moments (None: the grid is not noise-aware).
Refit = Callable[[tuple], UniformCodes] | None


class LevelAssignment:
    """Chooses one tensor's code-to-level permutation (None: the identity, no table)."""

    stage_name: ClassVar[str]

    @classmethod
    def from_spec(cls, spec: Any) -> LevelAssignment:
        return cls()

    def assign(
        self, w: torch.Tensor, inl: UniformCodes, mask: torch.Tensor, cell_model: CellModel, layout: str, refit: Refit
    ) -> tuple[UniformCodes, torch.Tensor | None]:
        """(the grid, the permutation) for the inliers ``inl`` of ``w`` (``mask`` True)."""
        raise NotImplementedError

    def reassign(self, w: torch.Tensor, qt: QuantizedTensor, cell_model: CellModel) -> None:
        """Choose ``qt``'s permutation again for codes a rounding stage changed (GPTQ)."""


@register_stage("levels", "identity")
class Identity(LevelAssignment):
    def assign(self, w, inl, mask, cell_model, layout, refit):
        return inl, None


def _stats(w, inl, mask):
    return lm.code_weights(w, inl.codes, inl.scale, inl.zero, inl.group_size, mask, 2**inl.bits)


@register_stage("levels", "best")
class BestMap(LevelAssignment):
    def assign(self, w, inl, mask, cell_model, layout, refit):
        if cell_model.is_ideal:
            return inl, None
        p = code_transition_matrix(inl.bits, cell_model, layout, None)
        ident = np.arange(2**inl.bits)
        st = _stats(w, inl, mask)
        perm = lm.best_level_map(p, *st)
        cands = [(inl, ident, st), (inl, perm, st)]
        if refit is not None and not np.array_equal(perm, ident):
            inl2 = refit(lm.moments(p, perm))
            st2 = _stats(w, inl2, mask)
            cands += [(inl2, perm, st2), (inl2, lm.best_level_map(p, *st2), st2)]
        # least total expected error (deterministic + reads); min keeps the first, the identity, on ties
        best = min(cands, key=lambda c: c[2][2] + lm.noise_cost(p, c[1], c[2][0], c[2][1]))
        if np.array_equal(best[1], ident):
            return best[0], None  # the plain assignment: no table to store
        return best[0], torch.from_numpy(best[1].astype(np.uint8))

    def reassign(self, w, qt, cell_model):
        if cell_model.is_ideal or qt.code_memory != "reram":
            return
        inl = qt.inliers
        mask = torch.ones(qt.numel, dtype=torch.bool)
        if qt.outliers is not None:
            mask[qt.outliers.index] = False
        mask = mask.reshape(qt.shape)
        p = code_transition_matrix(inl.bits, cell_model, qt.cell_layout, None)
        perm = lm.best_level_map(p, *_stats(w.detach().float(), inl, mask))
        best = None if np.array_equal(perm, np.arange(2**inl.bits)) else torch.from_numpy(perm.astype(np.uint8))
        qt.level_map = best
