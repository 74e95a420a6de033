"""The reference: the loaded weights, unquantized."""

from __future__ import annotations

from typing import Literal

from qmc_edge.methods.base import MethodSpec
from qmc_edge.methods.registry import register


@register
class FP(MethodSpec):
    method: Literal["fp"] = "fp"

    summary = "the loaded weights (no quantization)"
    stored_in = "-"

    def base_name(self) -> str:
        return "FP (reference)"

    def quantize(self, model, names, tokenizer=None, progress=None) -> None:
        return None
