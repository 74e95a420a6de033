"""The rounding stage: how a plan's tensors become codes.

``nearest``: every tensor on its own (outliers, grid and levels stages; round to nearest on the
grid), several at once (:mod:`qmc_edge.parallel`). ``gptq`` ("QMC+GPTQ"): each tensor's split and
grid as with nearest rounding, then every entry re-rounded by GPTQ's error compensation on
calibration text, outliers on their own MRAM grid (:mod:`qmc_edge.quant.gptq_solver`), decoder block
by decoder block (:mod:`qmc_edge.quant.gptq_blocks`); modules that read the same input are stacked
into one solve, per configuration. Both keep the storage format, so storage accounting, artifacts,
noise and the deployment model apply unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from qmc_edge.errors import QMCError
from qmc_edge.memory.cells import code_error_moments
from qmc_edge.parallel import map_tensors
from qmc_edge.quant.gptq_blocks import decoder_layers, quantize_model_gptq
from qmc_edge.quant.gptq_solver import RowOutliers, gptq_round
from qmc_edge.quant.qtensor import QuantizedTensor
from qmc_edge.quant.stages.config import Plan
from qmc_edge.quant.stages.kinds import register_stage, stage_class
from qmc_edge.quant.uniform import UniformCodes
from qmc_edge.torch_device import model_device


class RoundingStage:
    stage_name: ClassVar[str]
    #: whether the stage reads calibration text (and so needs the tokenizer)
    calibrated: ClassVar[bool] = False

    def prepare(self, spec: Any, model: torch.nn.Module, tokenizer, calib=None) -> Any:
        """Before any work: what the stage needs from outside (calibration text), checked."""
        return None

    def round(
        self, spec: Any, plan: Plan, model: torch.nn.Module, names: list[str], prepared: Any, progress
    ) -> tuple[dict[str, QuantizedTensor], dict]:
        """(tensors in the model's order, the report's entries)."""
        raise NotImplementedError


def _nearest(plan: Plan, params: dict, name: str) -> QuantizedTensor:
    return plan.options[name].quantize_tensor(params[name].detach().cpu(), plan.sensitivity.get(name))


@register_stage("rounding", "nearest")
class Nearest(RoundingStage):
    def round(self, spec, plan, model, names, prepared, progress):
        params = dict(model.named_parameters(remove_duplicate=False))
        # Largest tensors first: the embedding alone is a fifth of a small model, and the rest then
        # spreads over the workers instead of queueing behind it. Each tensor's codes are its own.
        keep = sorted((n for n in names if plan.options[n] is not None), key=lambda n: -params[n].numel())
        done = (lambda i: progress(plan.steps_done + i + 1, plan.steps_total)) if progress else None
        out = dict(zip(keep, map_tensors(lambda n: _nearest(plan, params, n), keep, done), strict=True))
        if progress:
            progress(plan.steps_total, plan.steps_total)
        return {n: spec.tag_mram(out[n]) for n in names if n in out}, {}


# ---------------------------------------------------------------------------------------- GPTQ
def calibration_for(spec: Any, model: torch.nn.Module, tokenizer, calib=None):
    """``calib``, or the default calibration set read with ``tokenizer``; GPTQ runs on the CPU here."""
    from qmc_edge.quant.calibration import calibration_set

    if model_device(model).type != "cpu":
        raise QMCError(f"{spec.name} runs its calibration on the CPU here; load the model with --device cpu")
    if calib is None:
        if tokenizer is None:
            raise QMCError(f"{spec.name} calibrates on text and needs the model's tokenizer (tokenizer=...)")
        calib = calibration_set(tokenizer, spec.calib_samples, spec.calib_len)
    return calib


def _moments(spec: Any):
    """The code-error moments noise-aware GPTQ rounds with (None: plain GPTQ). With a level map the
    moments are the identity assignment's: the map is chosen after the rounding."""
    if not spec.gptq_noise:
        return None
    dev = spec.cells(for_search=True)
    return None if dev.is_ideal else code_error_moments(spec.bits, dev, spec.layout, None)


def _reassign_levels(spec: Any, w: torch.Tensor, qt: QuantizedTensor) -> None:
    """After GPTQ has re-rounded the codes: the levels stage's choice for the codes it chose."""
    stage_class("levels", spec.stages()["levels"]).from_spec(spec).reassign(w, qt, spec.cells(for_search=True))


def _mask(qt: QuantizedTensor) -> torch.Tensor:
    m = torch.zeros(qt.shape, dtype=torch.bool)
    m.view(-1)[qt.outliers.index] = True
    return m


def gptq_tensor(
    spec: Any, w: torch.Tensor, hessian: torch.Tensor, sensitivity: torch.Tensor | None = None
) -> tuple[QuantizedTensor, dict]:
    """One weight with GPTQ rounding: ``spec``'s split and grid (nearest rounding's result), then every
    entry re-rounded by GPTQ on that grid, outliers on their own MRAM grid."""
    qt = spec.quantize_tensor(w, sensitivity)
    ot = qt.outliers
    codes, ocodes, info = gptq_round(
        w.detach().float(), hessian, qt.inliers, _mask(qt), outliers=ot, moments=_moments(spec)
    )
    info.pop("row_loss")
    qt.inliers.codes, ot.codes = codes, ocodes.reshape(-1)[ot.index]
    _reassign_levels(spec, w, qt)
    return qt, info


def gptq_tensors(
    spec: Any, ws: list[torch.Tensor], hessian: torch.Tensor, sens: list[torch.Tensor | None] | None = None
) -> list[tuple[QuantizedTensor, dict]]:
    """:func:`gptq_tensor` for weights that share one Hessian (they read the same input): each its own
    split and grid, then one GPTQ pass over their rows stacked. GPTQ treats rows independently, so
    each tensor gets the codes it would get alone (tests/test_gptq.py), with a third of the
    per-column work for q, k and v."""
    sens = sens or [None] * len(ws)
    if len(ws) == 1:
        return [gptq_tensor(spec, ws[0], hessian, sens[0])]
    qts = [spec.quantize_tensor(w, s) for w, s in zip(ws, sens, strict=True)]
    rows = [qt.shape[0] for qt in qts]
    g0 = qts[0].inliers
    grid = UniformCodes(
        codes=torch.cat([qt.inliers.codes for qt in qts]),
        scale=torch.cat([qt.inliers.scale for qt in qts]),
        zero=torch.cat([qt.inliers.zero for qt in qts]),
        bits=g0.bits,
        group_size=g0.group_size,
    )
    w = torch.cat([w.detach().float() for w in ws])
    table = RowOutliers([qt.outliers for qt in qts], rows)
    masks = torch.cat([_mask(qt) for qt in qts])
    codes, ocodes, info = gptq_round(w, hessian, grid, masks, outliers=table, moments=_moments(spec))
    row_loss = info.pop("row_loss")
    out = []
    for qt, c, oc, lo in zip(qts, codes.split(rows), ocodes.split(rows), row_loss.split(rows), strict=True):
        qt.inliers.codes, qt.outliers.codes = c.contiguous(), oc.reshape(-1)[qt.outliers.index]
        _reassign_levels(spec, ws[len(out)], qt)
        out.append((qt, {**info, "gptq_loss": float(lo.sum())}))
    return out


@register_stage("rounding", "gptq")
class GPTQ(RoundingStage):
    calibrated = True

    def prepare(self, spec, model, tokenizer, calib=None):
        return calibration_for(spec, model, tokenizer, calib)

    def round(self, spec, plan, model, names, prepared, progress):
        params = dict(model.named_parameters(remove_duplicate=False))
        kept = [n for n in names if plan.options[n] is not None]
        inside = kept
        if plan.nearest_outside_blocks:  # GPTQ needs a Linear layer's inputs: the rest rounds to nearest
            prefix = decoder_layers(model, [])[0] + "."
            inside = [n for n in kept if n.startswith(prefix)]

        def group(gnames, ws, hessian):
            """Weights that share one input, stacked per configuration (the same grid shape and bits)."""
            out: list = [None] * len(gnames)
            by_config: dict[int, list[int]] = {}
            for i, n in enumerate(gnames):
                by_config.setdefault(id(plan.options[n]), []).append(i)
            for idx in by_config.values():
                s = plan.options[gnames[idx[0]]]
                got = gptq_tensors(s, [ws[i] for i in idx], hessian, [plan.sensitivity.get(gnames[i]) for i in idx])
                for i, r in zip(idx, got, strict=True):
                    out[i] = r
            return out

        done = (lambda i, _n: progress(plan.steps_done + i, plan.steps_total)) if progress else None
        rounded, info = quantize_model_gptq(model, inside, group, prepared.samples, done) if inside else ({}, {})
        tensors = {}
        for n in kept:  # the model's order; outside the blocks, nearest rounding
            qt = rounded.get(n)
            tensors[n] = spec.tag_mram(qt if qt is not None else _nearest(plan, params, n))
        if progress:
            progress(plan.steps_total, plan.steps_total)
        return tensors, {**info, "calibration": prepared.describe()}
