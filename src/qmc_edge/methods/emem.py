"""eMEM-naive: RTN codes of the whole tensor (no outlier split) stored in multi-level ReRAM."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import model_validator

from qmc_edge.methods.base import TensorMethod
from qmc_edge.methods.options import (
    ReRAMOptions,
    bits_field,
    cell_field,
    check_bits,
    check_cells,
    check_group,
    check_mram,
    embeddings_field,
    group_field,
    ideal_field,
    mram_ber_field,
    mram_ecc_field,
)
from qmc_edge.methods.registry import register
from qmc_edge.methods.rtn import group_label
from qmc_edge.quant.grids import quantize_emem_naive


@register
class EMEM(ReRAMOptions, TensorMethod):
    method: Literal["emem"] = "emem"
    bits: int = bits_field()
    group_size: int = group_field()
    cell_bits: int = cell_field()
    ideal_memory: bool = ideal_field()
    mram_ber: float = mram_ber_field()
    mram_ecc: Literal["none", "secded"] = mram_ecc_field()
    quantize_embeddings: bool = embeddings_field()

    summary = "RTN codes of the whole tensor, no outlier split, in multi-level ReRAM"
    stored_in = "ReRAM, scales in MRAM"
    shown = frozenset({"bits", "group_size", "cell_bits", "ideal_memory"})

    @model_validator(mode="after")
    def _check(self) -> EMEM:
        check_bits(self.bits, (2, 3, 4, 8), "emem")
        check_group(self.group_size)
        check_cells(self.cell_bits)
        check_mram(self.mram_ber)
        return self

    @property
    def uses_reram(self) -> bool:
        return True

    def base_name(self) -> str:
        ideal = " ideal" if self.ideal_memory else ""
        return f"eMEM-naive {self.bits}b {group_label(self.group_size)} @{self.cell_bits}b/cell{ideal}"

    def quantize_tensor(self, w: torch.Tensor):
        return self.tag_mram(quantize_emem_naive(w, self.bits, self.cells(for_search=True), self.group_size or None))
