"""GPTQ (Frantar et al., ICLR 2023) from llm-compressor (extra [gptq]), calibrated on text."""

from __future__ import annotations

from typing import Literal

from qmc_edge.methods.llmc import LLMCompressorMethod
from qmc_edge.methods.registry import register


@register
class GPTQ(LLMCompressorMethod):
    method: Literal["gptq"] = "gptq"

    summary = "GPTQ from llm-compressor (extra [gptq]), calibrated; reram=true for ReRAM"
