"""QMC: the method's options, and which pipeline stages they choose.

The algorithm is :mod:`qmc_edge.quant.stages`: a config stage (``fixed``, or ``budget`` when a whole-model
bit budget is given), a rounding stage (``rounding=nearest`` or ``gptq``, "QMC+GPTQ"), and per tensor
an outliers stage (``outliers_by``), the grid (uniform, noise-aware clip search) and a levels stage
(``level_map``). This class validates the options, names the stages (:meth:`QMC.stages`) and hands
the model to the pipeline; every combination of stages runs through the same two calls, and the
storage format is the same for all, so storage accounting, artifacts, noise and the deployment model
apply unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator

from qmc_edge.methods.base import TensorMethod
from qmc_edge.methods.options import (
    CALIB_LEN,
    CALIB_SAMPLES,
    TARGET_AGE_HELP,
    ReRAMOptions,
    c_len,
    c_samples,
    cell_field,
    check_bits,
    check_calibration,
    check_cells,
    check_group,
    check_mram,
    embeddings_field,
    fill_calibration,
    group_field,
    ideal_field,
    mram_ber_field,
    mram_ecc_field,
)
from qmc_edge.methods.registry import register
from qmc_edge.methods.rtn import group_label
from qmc_edge.quant.qmodel import QuantizedModel
from qmc_edge.quant.qtensor import QuantizedTensor
from qmc_edge.quant.stages import pipeline
from qmc_edge.quant.stages.kinds import check_stage, stage_class


@register
class QMC(ReRAMOptions, TensorMethod):
    method: Literal["qmc"] = "qmc"
    bits: int = Field(3, description="inlier bits: 2, 3 or 4")
    group_size: int = group_field()
    cell_bits: int = cell_field()
    rho: float = Field(0.01, description="outlier share per tensor, in [0, 0.5]")
    outlier_bits: int = Field(8, description="bits per outlier code in MRAM, 2..16")
    outlier_code: Literal["symmetric", "offset"] = Field(
        "symmetric", description="outlier codes: symmetric (x scale), or offset (sign + magnitude above the threshold)"
    )
    n_clip: int = Field(20, description="clipping ratios searched per group (>= 1; 1 = min-max)")
    noise_aware: bool = Field(True, description="include ReRAM read errors in the clip search")
    clip_search: Literal["grid", "descent"] = Field(
        "grid", description="clip ratios per group: all of them (grid), or a descent over them (~2.5x fewer)"
    )
    level_map: bool = Field(
        False, description="per tensor, the code-to-cell-level permutation of least expected read error"
    )
    rounding: str = Field(
        "nearest",
        description="rounding stage: nearest, gptq (error compensation on calibration text), or any registered one",
    )
    gptq_noise: bool = Field(
        False, description="rounding=gptq: choose codes and compensate errors by the expected ReRAM read"
    )
    budget: float | None = Field(
        None,
        description="whole-model bits per parameter (embeddings included): per tensor bits, cells, rho or FP16",
    )
    sensitivity: Literal["self", "calibration", "uniform"] = Field(
        "self", description="Fisher for budget and outliers_by=fisher: on self-generated or calibration text; uniform"
    )
    outliers_by: str = Field(
        "magnitude",
        description="outliers stage: magnitude (largest |w|, the paper), fisher (largest F w^2, F: the "
        "sensitivity's Fisher), or any registered one",
    )
    ideal_memory: bool = ideal_field()
    mram_ber: float = mram_ber_field()
    mram_ecc: Literal["none", "secded"] = mram_ecc_field()
    quantize_embeddings: bool = embeddings_field()
    target_age: str | float | None = Field(None, description=TARGET_AGE_HELP)
    calib_samples: int | None = c_samples
    calib_len: int | None = c_len

    summary = "outlier split + noise-aware clipping; rounding=gptq for QMC+GPTQ (calibrated)"
    stored_in = "inliers in ReRAM, outliers/scales in MRAM"
    shown = frozenset({"bits", "group_size", "rho", "cell_bits", "noise_aware", "rounding", "ideal_memory", "budget"})
    implied = {"calib_samples": CALIB_SAMPLES, "calib_len": CALIB_LEN}

    @field_validator("outliers_by")
    @classmethod
    def _outliers_stage(cls, v: str) -> str:
        return check_stage("outliers", v)

    @field_validator("rounding")
    @classmethod
    def _rounding_stage(cls, v: str) -> str:
        return check_stage("rounding", v)

    @model_validator(mode="before")
    @classmethod
    def _calibration(cls, data: Any) -> Any:
        applies = isinstance(data, dict) and (
            _registered("rounding", data.get("rounding", "nearest"), "calibrated")
            or (
                (
                    data.get("budget") is not None
                    or _registered("outliers", data.get("outliers_by"), "needs_sensitivity")
                )
                and data.get("sensitivity") == "calibration"
            )
        )
        return fill_calibration(data, applies, "qmc with rounding=gptq")

    @model_validator(mode="after")
    def _check(self) -> QMC:
        check_bits(self.bits, (2, 3, 4), "qmc")
        check_group(self.group_size)
        check_cells(self.cell_bits)
        if not 0.0 <= self.rho <= 0.5:
            raise ValueError(f"rho must be in [0, 0.5], got {self.rho}")
        if not 2 <= self.outlier_bits <= 16:
            raise ValueError(f"outlier_bits must be in 2..16, got {self.outlier_bits}")
        if not 1 <= self.n_clip <= 1000:
            raise ValueError(f"n_clip must be in 1..1000 (1 = plain min-max), got {self.n_clip}")
        check_mram(self.mram_ber)
        if self.gptq_noise and self.rounding != "gptq":
            raise ValueError("gptq_noise applies to rounding=gptq")
        if self._rounds_by_blocks and self.quantize_embeddings:
            raise ValueError("rounding=gptq quantizes decoder Linear layers only; drop quantize_embeddings")
        check_calibration(self.calib_samples, self.calib_len)
        if self.budget is not None:
            if not 1.0 <= self.budget <= 16.0:
                raise ValueError(f"budget is whole-model bits per parameter, in [1, 16]; got {self.budget:g}")
            fields = type(self).model_fields
            chosen = [k for k in ("bits", "cell_bits", "rho") if getattr(self, k) != fields[k].default]
            if chosen:
                raise ValueError(
                    f"a budget chooses bits, cell_bits and rho per tensor; drop {', '.join(chosen)} "
                    "(it would be ignored)"
                )
        elif self.sensitivity != "self" and not self._outliers_need_fisher:
            raise ValueError("sensitivity weights the budget search and outliers_by=fisher; it needs one of them")
        if self._outliers_need_fisher and self.sensitivity == "uniform":
            raise ValueError(f"outliers_by={self.outliers_by} needs a Fisher: sensitivity=self or calibration")
        return self

    @property
    def _outliers_need_fisher(self) -> bool:
        return bool(stage_class("outliers", self.outliers_by).needs_sensitivity)

    @property
    def _rounds_by_blocks(self) -> bool:
        return bool(stage_class("rounding", self.rounding).calibrated)

    def stages(self) -> dict[str, str]:
        """The pipeline stage of each kind that these options choose (:mod:`qmc_edge.quant.stages`)."""
        return {
            "config": "fixed" if self.budget is None else "budget",
            "rounding": self.rounding,
            "outliers": self.outliers_by,
            "grid": "uniform",
            "levels": "best" if self.level_map else "identity",
        }

    @property
    def quantizes_embeddings(self) -> bool:
        """A budget counts every parameter, so the embeddings and head are candidates too."""
        return self.quantize_embeddings or self.budget is not None

    def for_option(self, opt: Any) -> QMC:
        """This spec with one tensor's budget option (bits, bits per cell, rho) and no budget."""
        return self.model_copy(update={"bits": opt.bits, "cell_bits": opt.cell_bits, "rho": opt.rho, "budget": None})

    def base_name(self) -> str:
        na = "" if self.noise_aware else " no-NA"
        if self.budget is not None:
            ideal = " ideal" if self.ideal_memory else ""
            qmc = "QMC+GPTQ" if self.rounding == "gptq" else "QMC"
            return f"{qmc} budget={self.budget:g}b {group_label(self.group_size)} ({self.sensitivity}){na}{ideal}"
        ideal = " ideal" if self.ideal_memory else ""
        qmc = "QMC+GPTQ" if self.rounding == "gptq" else "QMC"
        g = group_label(self.group_size)
        sens = f" sensitivity={self.sensitivity}" if self.sensitivity != "self" else ""
        return f"{qmc} {self.bits}b {g} rho={self.rho:g} @{self.cell_bits}b/cell{na}{ideal}{sens}"

    @property
    def uses_reram(self) -> bool:
        return True

    def quantize_tensor(self, w: torch.Tensor, sensitivity: torch.Tensor | None = None) -> QuantizedTensor:
        """One tensor through this spec's per-tensor stages; ``sensitivity`` (the weight's Fisher
        diagonal) for an outliers stage that ranks by it."""
        qt = pipeline.quantize_tensor(
            w,
            pipeline.tensor_stages(self),
            self.bits,
            self.cells(for_search=True),
            rho=self.rho,
            group_size=self.group_size or None,
            outlier_bits=self.outlier_bits,
            outlier_code=self.outlier_code,
            noise_aware=self.noise_aware,
            cell_layout=self.layout,
            sensitivity=sensitivity,
        )
        return self.tag_mram(qt)

    def expected_layout(self, shape: tuple[int, int]) -> dict[str, object]:
        if self.budget is not None:  # bits, cells and outliers are each tensor's own (in its entry)
            lay = super().expected_layout(shape)
            for key in ("bits", "cell_bits", "outlier_bits", "outlier_code"):
                lay.pop(key, None)
            return lay
        k = round(self.rho * shape[0] * shape[1])
        return {
            **super().expected_layout(shape),
            "outlier_bits": self.outlier_bits if k else None,
            "outlier_code": self.outlier_code if k else None,
            "outliers": k,
        }

    @property
    def calibrated(self) -> bool:
        uses_fisher = self.budget is not None or self._outliers_need_fisher
        return self._rounds_by_blocks or (uses_fisher and self.sensitivity == "calibration")

    def quantize(self, model, names, tokenizer=None, progress=None) -> QuantizedModel:
        return pipeline.run_stages(self, model, names, tokenizer, progress)


def _registered(kind: str, name: object, flag: str) -> bool:
    """Whether stage ``name`` of ``kind`` is registered and has ``flag`` set (False for a bad name,
    which the field's own validator then reports)."""
    try:
        return isinstance(name, str) and bool(getattr(stage_class(kind, name), flag))
    except ValueError:
        return False
