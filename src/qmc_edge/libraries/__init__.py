"""Baselines produced by their maintained libraries: GPTQ and AWQ (llm-compressor), HQQ (hqq).

Each result is turned into the project's own :class:`~qmc_edge.quant.qtensor.QuantizedTensor` (integer
codes, scale and zero point per row and group) so that the storage accounting, the ReRAM/MRAM
device models and the evaluation apply to them exactly as to RTN and QMC. The libraries are
optional extras; a missing one is reported in one line that names the extra to install.

May import :mod:`qmc_edge.quant`, :mod:`qmc_edge.memory` and the package root.
"""

from __future__ import annotations

import importlib

from qmc_edge.errors import QMCError

# method -> (import name, pip extra)
EXTRAS: dict[str, tuple[str, str]] = {
    "gptq": ("llmcompressor", "gptq"),
    "awq": ("llmcompressor", "awq"),
    "hqq": ("hqq", "hqq"),
}


def require(method: str) -> None:
    """Import the library behind ``method`` or raise a :class:`QMCError` naming the extra."""
    module, extra = EXTRAS[method]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise QMCError(f"{method.upper()} needs the optional extra: pip install 'qmc-edge[{extra}]'") from None
        raise QMCError(f"{module} is installed but cannot import {exc.name}; pip install 'qmc-edge[{extra}]'") from None
    except ImportError as exc:  # a version mismatch inside the library, e.g. with transformers
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise QMCError(
            f"{module} is installed but fails to import ({first}); pip install 'qmc-edge[{extra}]'"
        ) from None
