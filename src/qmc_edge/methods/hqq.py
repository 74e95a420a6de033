"""HQQ (Badri & Shaji 2023) from the ``hqq`` package: calibration-free, fp16 zero points."""

from __future__ import annotations

from typing import Literal

import torch

from qmc_edge.methods.base import TensorMethod
from qmc_edge.methods.library import LibraryMethod
from qmc_edge.methods.options import embeddings_field
from qmc_edge.methods.registry import register


@register
class HQQ(LibraryMethod, TensorMethod):
    method: Literal["hqq"] = "hqq"
    quantize_embeddings: bool = embeddings_field()

    summary = "HQQ from the hqq package (extra [hqq]), calibration-free, fp16 zero points; reram=true for ReRAM"
    stored_in = "ideal memory (reram=true: ReRAM)"

    def quantize_tensor(self, w: torch.Tensor):
        from qmc_edge.libraries.hqq_adapter import quantize_hqq

        return self.place(quantize_hqq(w, self.bits, self.group_size or None))
