"""The config stage: each tensor's configuration (inlier bits, bits per cell, outlier share), or FP16.

``fixed``: every tensor takes the method's own options. ``budget``: per tensor, the option of least
sensitivity-weighted expected error under a whole-model bit budget (:mod:`qmc_edge.quant.budget`),
embeddings and head included; a tensor may stay at FP16.

A plan also carries the Fisher diagonal the outliers stage ranks by, when it needs one, and what
the report's entry says once the tensors exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from qmc_edge.quant.budget import OPTIONS, budget_info, choose_budget
from qmc_edge.quant.sensitivity import sensitivity_for
from qmc_edge.quant.stages.kinds import register_stage, stage_class


@dataclass
class Plan:
    """What the config stage decided, for the rounding stage."""

    #: per tensor name, the spec (a ``QMC`` of one fixed configuration) to quantize it with; None: FP16
    options: dict[str, Any | None]
    #: per tensor name, its Fisher diagonal (empty when nothing weighs by it)
    sensitivity: dict[str, torch.Tensor] = field(default_factory=dict)
    #: whether tensors outside the decoder blocks (embeddings, head) take nearest rounding under a
    #: rounding that needs a block's inputs (GPTQ); else such a tensor is an error
    nearest_outside_blocks: bool = False
    #: progress: steps the plan itself counted, and the whole run's steps
    steps_done: int = 0
    steps_total: int = 0
    #: the report's entries once the tensors exist: finish(model, tensors) -> dict
    finish: Callable[[torch.nn.Module, dict], dict] = lambda _model, _tensors: {}


def needs_sensitivity(spec: Any) -> bool:
    """Whether the spec's outliers stage ranks by the Fisher diagonal."""
    return bool(stage_class("outliers", spec.outliers_by).needs_sensitivity)


class ConfigStage:
    stage_name: ClassVar[str]

    def plan(self, spec: Any, model: torch.nn.Module, names: list[str], tokenizer, progress) -> Plan:
        raise NotImplementedError


@register_stage("config", "fixed")
class Fixed(ConfigStage):
    """Every tensor with the method's own options."""

    def plan(self, spec, model, names, tokenizer, progress):
        sens = sensitivity_for(spec, model, names, tokenizer) if needs_sensitivity(spec) else {}
        return Plan({n: spec for n in names}, sens, steps_total=len(names))


@register_stage("config", "budget")
class Budget(ConfigStage):
    """Per tensor the option of least weighted expected error under ``spec.budget`` bits per parameter."""

    def plan(self, spec, model, names, tokenizer, progress):
        choice = choose_budget(spec, model, names, tokenizer, progress)  # counts the search's steps
        specs = {o: spec.for_option(o) for o in OPTIONS}
        search = len(names) * len(OPTIONS)
        return Plan(
            {n: None if o is None else specs[o] for n, o in choice.options.items()},
            choice.sensitivity,
            nearest_outside_blocks=True,
            steps_done=search,
            steps_total=search + len(names),
            finish=lambda model, tensors: budget_info(choice, model, tensors),
        )
