"""Whole-model quantization: which tensors a method quantizes, the call into the method, and the
storage report over the whole model (the quantized model itself is :mod:`qmc_edge.quant.qmodel`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from qmc_edge.memory.cells import cells_per_code
from qmc_edge.methods import MethodSpec
from qmc_edge.quant.qmodel import QuantizedModel, seed_for

__all__ = ["QuantizedModel", "quantize_model", "seed_for", "storage_report", "target_weights"]

FP16_BITS = 16


def target_weights(model: torch.nn.Module, include_embeddings: bool = False) -> list[str]:
    """Parameter names to quantize: every Linear weight in the decoder blocks (attention q/k/v/o,
    MLP gate/up/down, or whatever the architecture calls them), plus embeddings/head on request."""
    head = model.get_output_embeddings()
    emb = model.get_input_embeddings()
    names = []
    for mname, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and mod is not head:
            names.append(f"{mname}.weight")
    if include_embeddings:
        names.append(_param_name(model, emb.weight))
        if head is not None and head.weight is not emb.weight:
            names.append(_param_name(model, head.weight))
    return names


def _param_name(model: torch.nn.Module, p: torch.Tensor) -> str:
    for n, q in model.named_parameters(remove_duplicate=False):
        if q is p:
            return n
    raise KeyError("parameter not in model")


def quantize_model(
    model: torch.nn.Module,
    spec: MethodSpec,
    progress: Callable[[int, int], None] | None = None,
    tokenizer: object | None = None,
) -> QuantizedModel | None:
    """Quantize the target tensors with ``spec`` (the model itself is left unchanged); None for the
    FP reference. Calibrated methods (GPTQ, AWQ, QMC+GPTQ) read text and so need ``tokenizer``."""
    names = target_weights(model, spec.quantizes_embeddings)
    return spec.quantize(model, names, tokenizer, progress)


def storage_report(model: torch.nn.Module, spec: MethodSpec, qm: QuantizedModel | None) -> dict:
    """Bits per quantized weight (all metadata included), bits per memory, and compression vs FP16.

    Unquantized parameters are counted at FP16 in off-chip memory; tied weights count once.
    """
    unique: dict[int, tuple[str, int]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        unique.setdefault(id(p), (n, p.numel()))
    total_params = sum(c for _, c in unique.values())
    qnames = set(target_weights(model, spec.quantizes_embeddings))
    components: dict[str, int] = {}
    memory: dict[str, int] = {}
    cells = 0
    under = 0
    if qm is None:
        q_params = sum(c for n, c in unique.values() if n in qnames)
        components["weights_fp16"] = q_params * FP16_BITS
        memory["dram"] = q_params * FP16_BITS
    else:
        q_params = sum(qt.numel for qt in qm.tensors.values())
        for qt in qm.tensors.values():
            s = qt.storage()
            cells += s.reram_cells
            if qt.code_memory == "reram" and qt.outliers is not None and qt.outliers.count:
                # The dense cell array keeps a slot (the zero-point code) under every outlier: those
                # cells are billed in the codes' capacity although their value lives in MRAM.
                under += qt.outliers.count * cells_per_code(qt.inliers.bits, qt.cell_bits)
            for comp, (mem, bits) in s.components.items():
                components[comp] = components.get(comp, 0) + bits
                memory[mem] = memory.get(mem, 0) + bits
    q_bits = sum(components.values())
    rest_params = total_params - q_params
    rest_bits = rest_params * FP16_BITS
    total_bits = q_bits + rest_bits
    eff = q_bits / q_params if q_params else float("nan")
    return {
        "quantized_params": q_params,
        "unquantized_params": rest_params,
        "effective_bits": eff,
        "bits_by_component": components,
        "bits_by_memory": {**memory, "unquantized_fp16_dram": rest_bits},
        "reram_cells": cells,
        "reram_cells_under_outliers": under,
        "reram_bits_per_cell": _bits_per_cell(spec, qm, memory.get("reram", 0), cells),
        "outliers": sum(qt.outliers.count for qt in qm.tensors.values() if qt.outliers) if qm else 0,
        "quantized_layers_MB": q_bits / 8e6,
        "model_MB": total_bits / 8e6,
        "compression_quantized_layers": FP16_BITS / eff if q_params else 1.0,
        "compression_whole_model": total_params * FP16_BITS / total_bits,
    }


def _bits_per_cell(spec: MethodSpec, qm: QuantizedModel | None, reram_bits: int, cells: int) -> float | int | None:
    """The spec's bits per cell, or, when tensors use cells of different sizes (a budget), the mean
    over cells (ReRAM bits / cells), which is what the area of the array divides by."""
    sizes = {qt.cell_bits for qt in qm.tensors.values() if qt.code_memory == "reram"} if qm else set()
    if len(sizes) <= 1:
        return next(iter(sizes)) if sizes else spec.cell_bits_used
    return reram_bits / cells
