"""GPTQ's block-by-block pipeline: calibration inputs collected one decoder block at a time, with the
earlier blocks already quantized (as llm-compressor's sequential pipeline does), each block's Linear
weights handed to a rounding solver (:mod:`qmc_edge.quant.gptq_solver` for QMC+GPTQ) with the Hessian
of their input, and the block's outputs recomputed with the quantized weights for the next block.

Kept apart from the solver: the pipeline knows the model (its decoder blocks, their hooks) and
nothing of the rounding; the solver knows one weight and its Hessian and nothing of the model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from qmc_edge.errors import QMCError
from qmc_edge.quant.qtensor import QuantizedTensor


class _Stop(Exception):
    pass


def decoder_layers(model: torch.nn.Module, names: list[str]) -> tuple[str, torch.nn.ModuleList]:
    """(prefix, the ModuleList of decoder blocks) that holds every weight in ``names``."""
    best: tuple[str, torch.nn.ModuleList] | None = None
    for mname, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) and (best is None or len(mod) > len(best[1])):
            best = (mname, mod)
    if best is None:
        raise QMCError("QMC+GPTQ needs a model with a list of decoder blocks (model.layers); none found")
    outside = [n for n in names if not n.startswith(best[0] + ".")]
    if outside:
        raise QMCError(f"QMC+GPTQ quantizes decoder-block Linear layers only; {outside[0]} is outside {best[0]}")
    return best


def _first_block_inputs(model, first: torch.nn.Module, samples) -> list[tuple[torch.Tensor, dict]]:
    """(hidden states, keyword arguments) with which the model calls its first block, per sample."""
    caught: list[tuple[torch.Tensor, dict]] = []

    def hook(_mod, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        caught.append((hidden.detach(), {k: v for k, v in kwargs.items() if k != "hidden_states"}))
        raise _Stop

    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for s in samples:
            try:
                model(input_ids=torch.tensor([s]), use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    return caught


def _run_block(block: torch.nn.Module, inputs) -> list[tuple[torch.Tensor, dict]]:
    out = []
    for hidden, kw in inputs:
        h = block(hidden, **kw)
        out.append((h[0] if isinstance(h, tuple) else h, kw))
    return out


def _quantize_block(block, inputs, mine, params, modules, quantize_group, n_samples):
    """Collect the Hessian of every Linear in ``mine`` over one pass of ``block`` (weights as they are),
    then quantize them, the modules that read the same input (q, k and v; gate and up) together in
    one call of ``quantize_group(names, weights, hessian)``; yields (name, tensor, info)."""
    sums: dict[str, torch.Tensor] = {}
    shares: dict[str, str] = {}  # module -> the first module that read the same input, in the first pass
    hooks = []
    # Modules that read the same input tensor share its X^T X: computed once for the first of them in
    # each forward pass and reused, the same numbers at a third of the cost.
    last: dict[str, object] = {"x": None, "xtx": None, "first": None}
    for n in mine:

        def acc(_m, args, _out, n=n):
            x0 = args[0]
            if last["x"] is not x0:  # holding x0 keeps its id from being reused by another tensor
                x = x0.reshape(-1, x0.shape[-1]).float()
                last["x"], last["xtx"], last["first"] = x0, x.T @ x, n
            shares.setdefault(n, last["first"])
            sums[n] = sums.get(n, 0) + last["xtx"]

        hooks.append(modules[n.removesuffix(".weight")].register_forward_hook(acc))
    try:
        _run_block(block, inputs)
    finally:
        for h in hooks:
            h.remove()
        last.clear()
    groups: dict[str, list[str]] = {}
    for n in mine:
        if n in sums:
            groups.setdefault(shares[n], []).append(n)
    for lead, names in groups.items():
        hessian = 2 * sums[lead] / n_samples  # every module of the group summed the same X^T X
        results = quantize_group(names, [params[n].detach() for n in names], hessian)
        for n, (qt, info) in zip(names, results, strict=True):
            yield n, qt, info


def quantize_model_gptq(
    model: torch.nn.Module,
    names: list[str],
    quantize_group: Callable[[list[str], list[torch.Tensor], torch.Tensor], list[tuple[QuantizedTensor, dict]]],
    samples,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, QuantizedTensor], dict]:
    """Quantize ``names`` block by block: each block's Linear inputs are collected with the earlier
    blocks already quantized, its weights quantized with ``quantize_group(names, weights, hessian)``
    (modules that read one input share it), and its
    outputs recomputed with the quantized weights for the next block. ``model`` is unchanged after."""
    prefix, blocks = decoder_layers(model, names)
    params = dict(model.named_parameters(remove_duplicate=False))
    modules = dict(model.named_modules())
    tensors: dict[str, QuantizedTensor] = {}
    losses: dict[str, float] = {}
    fallback: list[str] = []
    with torch.no_grad():
        inputs = _first_block_inputs(model, blocks[0], samples)
        for b, block in enumerate(blocks):
            mine = [n for n in names if n.startswith(f"{prefix}.{b}.")]
            saved = {n: params[n].detach().clone() for n in mine}  # one block at a time: memory stays small
            try:
                for n, qt, info in _quantize_block(block, inputs, mine, params, modules, quantize_group, len(samples)):
                    tensors[n] = qt
                    losses[n] = info["gptq_loss"]
                    if not info["hessian_ok"]:
                        fallback.append(n)
                    params[n].copy_(qt.dequantize().to(params[n].dtype))
                    if progress:
                        progress(len(tensors), len(names))
                inputs = _run_block(block, inputs)  # the next block sees this one quantized
            finally:
                for n, w in saved.items():
                    params[n].copy_(w)
    missing = [n for n in names if n not in tensors]
    if missing:
        raise QMCError(f"QMC+GPTQ saw no input for {missing[0]}; is it used in its block's forward pass?")
    return {n: tensors[n] for n in names}, {"gptq_loss": losses, "nearest_rounding_fallback": fallback}
