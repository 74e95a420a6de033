"""AWQ (Lin et al., MLSys 2024) from llm-compressor (extra [awq]), calibrated on text."""

from __future__ import annotations

from typing import Literal

from qmc_edge.methods.llmc import LLMCompressorMethod
from qmc_edge.methods.registry import register


@register
class AWQ(LLMCompressorMethod):
    method: Literal["awq"] = "awq"

    summary = "AWQ from llm-compressor (extra [awq]), activation-only scale search; reram=true for ReRAM"
