"""Round-to-nearest: asymmetric min-max codes per row and group, in ideal memory."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import model_validator

from qmc_edge.methods.base import TensorMethod
from qmc_edge.methods.options import bits_field, check_bits, check_group, embeddings_field, group_field
from qmc_edge.methods.registry import register
from qmc_edge.quant.grids import quantize_rtn


def group_label(group_size: int) -> str:
    return "pc" if group_size == 0 else f"g{group_size}"


@register
class RTN(TensorMethod):
    method: Literal["rtn"] = "rtn"
    bits: int = bits_field()
    group_size: int = group_field()
    quantize_embeddings: bool = embeddings_field()

    summary = "round-to-nearest, asymmetric min-max, per group (default 128) or channel (group_size=0)"
    shown = frozenset({"bits", "group_size"})
    hints = {k: "use emem for RTN codes in ReRAM" for k in ("reram", "cell_bits", "ideal_memory")}

    @model_validator(mode="after")
    def _check(self) -> RTN:
        check_bits(self.bits, (2, 3, 4, 8), "rtn")
        check_group(self.group_size)
        return self

    def base_name(self) -> str:
        return f"RTN-INT{self.bits} {group_label(self.group_size)}"

    def quantize_tensor(self, w: torch.Tensor):
        return quantize_rtn(w, self.bits, self.group_size or None)
