"""Quantization methods: one module per method behind one interface, registered by name.

A spec is written on the command line as ``name`` or ``name:key=value,key=value`` (e.g.
``qmc:bits=2,cell_bits=2,rho=0.01``); presets give the rows people usually compare. Each method's
options are validated by its own class (:mod:`qmc_edge.methods.base`, shared options in
:mod:`qmc_edge.methods.options`); unknown or inapplicable keys are refused with the list of valid
ones. :mod:`qmc_edge.methods.whole_model` quantizes a model's target weights and reports storage.

May import :mod:`qmc_edge.libraries`, :mod:`qmc_edge.quant`, :mod:`qmc_edge.memory` and the root.
"""

from qmc_edge.methods import awq, emem, fp, gptq, hqq, mxint4, qmc, rtn  # noqa: F401  (registers the built-in methods)
from qmc_edge.methods.base import MethodSpec, TensorMethod
from qmc_edge.methods.registry import (
    PRESETS,
    method_class,
    options,
    parse_method,
    register,
    registered,
    spec_from_dict,
    unregister,
)

__all__ = [
    "PRESETS",
    "MethodSpec",
    "TensorMethod",
    "method_class",
    "options",
    "parse_method",
    "register",
    "registered",
    "spec_from_dict",
    "unregister",
]
