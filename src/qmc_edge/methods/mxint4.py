"""MXINT4 (OCP microscaling): blocks of 32 share a power-of-two scale, 4-bit signed elements."""

from __future__ import annotations

from typing import Literal

import torch

from qmc_edge.methods.base import TensorMethod
from qmc_edge.methods.options import embeddings_field
from qmc_edge.methods.registry import register
from qmc_edge.quant.grids import quantize_mxint4


@register
class MXINT4(TensorMethod):
    method: Literal["mxint4"] = "mxint4"
    quantize_embeddings: bool = embeddings_field()

    summary = "blocks of 32 sharing a power-of-two (E8M0) scale, 4-bit signed elements"

    def base_name(self) -> str:
        return "MXINT4"

    @property
    def nominal_bits(self) -> int:
        return 4

    def expected_layout(self, shape: tuple[int, int]) -> dict[str, object]:
        return {**super().expected_layout(shape), "bits": 4, "group_size": min(32, shape[1]), "scale_bits": 8}

    def quantize_tensor(self, w: torch.Tensor):
        return quantize_mxint4(w)
