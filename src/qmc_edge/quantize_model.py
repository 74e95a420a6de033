"""Whole-model quantization: which tensors are quantized, one noise realisation per seed, and the
storage report over the whole model."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .errors import QMCError
from .methods import MethodSpec
from .model_io import model_device
from .qtensor import QuantizedTensor

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


def seed_for(seed: int, index: int) -> int:
    """Independent, order-free stream per (seed, tensor): reordering tensors changes nothing."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass
class QuantizedModel:
    """The quantized tensors of one model under one method, with the reference weights to restore."""

    spec: MethodSpec
    tensors: dict[str, QuantizedTensor]
    quantize_seconds: float
    reference: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    # Unquantized parameters the method changed (AWQ folds its scales into the norms): written by
    # realise, restored from ``reference`` like the quantized ones.
    overrides: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    info: dict = field(default_factory=dict)  # provenance of library baselines (versions, calibration)

    def realise(self, model: torch.nn.Module, seed: int | None = 0) -> None:
        """Write one read of every quantized tensor into ``model`` (noise drawn with ``seed``)."""
        params = dict(model.named_parameters(remove_duplicate=False))
        device = self.spec.device() if self.spec.uses_reram else None
        mram = self.spec.mram()
        with torch.no_grad():
            for i, (name, qt) in enumerate(self.tensors.items()):
                gen = torch.Generator().manual_seed(seed_for(seed or 0, i))
                w = qt.dequantize(device if self.spec.noisy else None, mram, gen)
                params[name].copy_(w.to(params[name].dtype))
            for name, w in self.overrides.items():
                params[name].copy_(w)

    def restore(self, model: torch.nn.Module) -> None:
        params = dict(model.named_parameters(remove_duplicate=False))
        with torch.no_grad():
            for name, w in self.reference.items():
                params[name].copy_(w)


def quantize_model(
    model: torch.nn.Module,
    spec: MethodSpec,
    progress: Callable[[int, int], None] | None = None,
    tokenizer: object | None = None,
) -> QuantizedModel | None:
    """Quantize the target tensors (the model itself is left unchanged); None for the FP reference.

    GPTQ and AWQ quantize the whole model at once from calibration text, so they need ``tokenizer``.
    """
    if spec.method == "fp":
        return None
    params = dict(model.named_parameters(remove_duplicate=False))
    names = target_weights(model, spec.quantize_embeddings)
    if spec.calibrated:
        if model_device(model).type != "cpu":
            raise QMCError(f"{spec.name} runs its calibration on the CPU here; load the model with --device cpu")
        if spec.method == "qmc":
            return _quantize_qmc_gptq(model, spec, names, progress, tokenizer)
        return _quantize_calibrated(model, spec, names, progress, tokenizer)
    t0 = time.perf_counter()
    tensors: dict[str, QuantizedTensor] = {}
    reference: dict[str, torch.Tensor] = {}
    for i, name in enumerate(names):
        w = params[name].detach().cpu()  # quantizers and noise draws are defined on the CPU
        reference[name] = w.clone()
        tensors[name] = spec.quantize_tensor(w)
        if progress:
            progress(i + 1, len(names))
    return QuantizedModel(spec, tensors, time.perf_counter() - t0, reference)


def _quantize_calibrated(model, spec, names, progress, tokenizer) -> QuantizedModel:
    from .external.llmc import quantize_llmc

    tensors, overrides, seconds, info = quantize_llmc(
        model, names, spec.method, spec.bits, spec.group_size, tokenizer, spec.calib_samples, spec.calib_len, progress
    )
    params = dict(model.named_parameters(remove_duplicate=False))
    placed = {n: spec.place(replace(qt)) for n, qt in tensors.items()}  # shallow copies: the cache stays ideal
    reference = {n: params[n].detach().clone() for n in [*names, *overrides]}
    return QuantizedModel(spec, placed, seconds, reference, overrides, info)


def _quantize_qmc_gptq(model, spec, names, progress, tokenizer, calib=None) -> QuantizedModel:
    from .external.calibration import calibration_set
    from .gptq import quantize_model_gptq, quantize_qmc_gptq_tensor

    if calib is None:
        if tokenizer is None:
            raise QMCError(f"{spec.name} calibrates on text and needs the model's tokenizer (tokenizer=...)")
        calib = calibration_set(tokenizer, spec.calib_samples, spec.calib_len)
    device = spec.device()

    def one(w: torch.Tensor, hessian: torch.Tensor):
        g = spec.group_size or None
        return quantize_qmc_gptq_tensor(
            w, hessian, spec.bits, device, spec.rho, g, spec.outlier_bits, spec.n_clip, spec.noise_aware
        )

    params = dict(model.named_parameters(remove_duplicate=False))
    reference = {n: params[n].detach().clone() for n in names}
    t0 = time.perf_counter()
    tensors, info = quantize_model_gptq(model, names, one, calib.samples, progress)
    info["calibration"] = calib.describe()
    return QuantizedModel(spec, tensors, time.perf_counter() - t0, reference, info=info)


def storage_report(model: torch.nn.Module, spec: MethodSpec, qm: QuantizedModel | None) -> dict:
    """Bits per quantized weight (all metadata included), bits per memory, and compression vs FP16.

    Unquantized parameters are counted at FP16 in off-chip memory; tied weights count once.
    """
    unique: dict[int, tuple[str, int]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        unique.setdefault(id(p), (n, p.numel()))
    total_params = sum(c for _, c in unique.values())
    qnames = set(target_weights(model, spec.quantize_embeddings))
    components: dict[str, int] = {}
    memory: dict[str, int] = {}
    cells = 0
    if qm is None:
        q_params = sum(c for n, c in unique.values() if n in qnames)
        components["weights_fp16"] = q_params * FP16_BITS
        memory["dram"] = q_params * FP16_BITS
    else:
        q_params = sum(qt.numel for qt in qm.tensors.values())
        for qt in qm.tensors.values():
            s = qt.storage()
            cells += s.reram_cells
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
        "reram_bits_per_cell": spec.cell_bits if spec.uses_reram else None,
        "outliers": sum(qt.outliers.count for qt in qm.tensors.values() if qt.outliers) if qm else 0,
        "quantized_layers_MB": q_bits / 8e6,
        "model_MB": total_bits / 8e6,
        "compression_quantized_layers": FP16_BITS / eff if q_params else 1.0,
        "compression_whole_model": total_params * FP16_BITS / total_bits,
    }
