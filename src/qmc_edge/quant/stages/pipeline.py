"""QMC as a pipeline of stages (:mod:`qmc_edge.quant.stages.kinds`).

Per tensor (:func:`quantize_tensor`): the **outliers** stage picks the weights kept in MRAM; the
**grid** stage fits the inliers' grid per row and group, its clipping chosen to minimise the
expected error of a read *including* the ReRAM read errors (analytic, from the device's transition
probabilities through the cell mapping, :mod:`qmc_edge.memory.cells`; removing the outliers first
narrows every group's range, which is where most of the gain comes from); the **levels** stage maps
codes onto cell levels. The outliers become 8-bit (by default) codes in MRAM with their positions;
their slots in the dense ReRAM array hold the zero-point code.

Per model (:func:`quantize_model`): the **config** stage plans each tensor's configuration, the
**rounding** stage turns the plan into codes, each tensor through the per-tensor pipeline.

The stages are chosen by name from a method's options (:meth:`qmc_edge.methods.qmc.QMC.stages`), so
a new stage composes with the others without a branch here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from qmc_edge.memory.cells import code_error_moments
from qmc_edge.memory.models import CellModel
from qmc_edge.quant.qmodel import QuantizedModel
from qmc_edge.quant.qtensor import QuantizedTensor
from qmc_edge.quant.stages.grid import GridFit, UniformGrid
from qmc_edge.quant.stages.kinds import stage_class
from qmc_edge.quant.stages.levels import BestMap, Identity, LevelAssignment
from qmc_edge.quant.stages.outliers import GivenScores, OutlierSelection, outlier_table


@dataclass(frozen=True)
class TensorStages:
    """The per-tensor stages of one configuration."""

    outliers: OutlierSelection
    grid: GridFit
    levels: LevelAssignment


def quantize_tensor(
    w: torch.Tensor,
    stages: TensorStages,
    bits: int,
    cell_model: CellModel,
    *,
    rho: float = 0.01,
    group_size: int | None = 128,
    outlier_bits: int = 8,
    outlier_code: str = "symmetric",
    noise_aware: bool = True,
    cell_layout: str = "left",
    sensitivity: torch.Tensor | None = None,
) -> QuantizedTensor:
    """One 2-D weight through the per-tensor stages. ``cell_model`` is the ReRAM model that will hold the
    inliers (the grid minimises the expected error of its reads when ``noise_aware``), ``cell_layout``
    how a partial last cell holds its bits; ``sensitivity``: the weight's Fisher diagonal, for an
    outliers stage that ranks by it."""
    w = w.detach().float()
    idx = stages.outliers.select(w, rho, sensitivity)
    flat = torch.ones(w.numel(), dtype=torch.bool)
    flat[idx] = False
    mask = flat.reshape(w.shape)
    moments = (
        code_error_moments(bits, cell_model, cell_layout, None) if noise_aware and not cell_model.is_ideal else None
    )
    inl = stages.grid.fit(w, bits, group_size, mask, moments)
    refit = (lambda m, g=inl.group_size: stages.grid.fit(w, bits, g, mask, m)) if noise_aware else None
    inl, perm = stages.levels.assign(w, inl, mask, cell_model, cell_layout, refit)
    return QuantizedTensor(
        shape=tuple(w.shape),
        inliers=inl,
        code_memory="reram",
        cell_bits=cell_model.bits_per_cell,
        meta_memory="mram",
        cell_layout=cell_layout,
        outliers=outlier_table(idx, w.reshape(-1)[idx], outlier_bits, outlier_code),
        level_map=perm,
    )


def quantize_qmc(
    w: torch.Tensor,
    bits: int,
    cell_model: CellModel,
    rho: float = 0.01,
    group_size: int | None = 128,
    outlier_bits: int = 8,
    n_clip: int = 20,
    noise_aware: bool = True,
    cell_layout: str = "left",
    outlier_code: str = "symmetric",
    level_map: bool = False,
    outlier_scores: torch.Tensor | None = None,
    clip_search: str = "grid",
) -> QuantizedTensor:
    """The per-tensor pipeline in one call with the built-in stages: outliers by magnitude (or by
    ``outlier_scores``), the uniform grid with ``n_clip`` clip ratios searched as ``clip_search``, and
    the identity or, with ``level_map``, the best code-to-level map (on an ideal device the identity
    is kept and no table is stored)."""
    stages = TensorStages(
        GivenScores(outlier_scores), UniformGrid(n_clip, clip_search), BestMap() if level_map else Identity()
    )
    return quantize_tensor(
        w,
        stages,
        bits,
        cell_model,
        rho=rho,
        group_size=group_size,
        outlier_bits=outlier_bits,
        outlier_code=outlier_code,
        noise_aware=noise_aware,
        cell_layout=cell_layout,
    )


def tensor_stages(spec: Any) -> TensorStages:
    """The per-tensor stages a spec's options name (:meth:`qmc_edge.methods.qmc.QMC.stages`)."""
    names = spec.stages()
    return TensorStages(*(stage_class(kind, names[kind]).from_spec(spec) for kind in ("outliers", "grid", "levels")))


def run_stages(
    spec: Any, model: torch.nn.Module, names: list[str], tokenizer=None, progress=None, calib=None
) -> QuantizedModel:
    """The parameters ``names`` of ``model`` (left unchanged) through the spec's config and rounding
    stages; ``calib``: a calibration set to use instead of the default (calibrated roundings)."""
    chosen = spec.stages()
    config = stage_class("config", chosen["config"])()
    rounding = stage_class("rounding", chosen["rounding"])()
    prepared = rounding.prepare(spec, model, tokenizer, calib)  # checked before any work
    t0 = time.perf_counter()
    plan = config.plan(spec, model, names, tokenizer, progress)
    tensors, info = rounding.round(spec, plan, model, names, prepared, progress)
    info = {**plan.finish(model, tensors), **info}
    # No copy of the weights here: the model is unchanged, and realise() keeps each original the
    # first time it overwrites it (a copy now would double the peak memory of quantization).
    return QuantizedModel(spec, tensors, time.perf_counter() - t0, info=info)
