"""QMC: outlier split, noise-aware clipping of the inliers, and a rounding strategy for the inliers.

The split and the group ranges are :func:`qmc_edge.quant.qmc_tensor.quantize_qmc` (the algorithm); how the inliers
are then rounded is a strategy the method composes: to nearest (no calibration), or GPTQ's error
compensation on calibration text (:mod:`qmc_edge.quant.gptq_solver`, "QMC+GPTQ"), which keeps the same storage
format so storage accounting, artifacts and the deployment model apply unchanged.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from qmc_edge.errors import QMCError
from qmc_edge.memory.cells import code_error_moments
from qmc_edge.methods.base import (
    DEVICE_HELP,
    ReRAMOptions,
    TensorMethod,
    cell_field,
    check_bits,
    check_cells,
    check_group,
    check_mram,
    embeddings_field,
    group_field,
    ideal_field,
    mram_ber_field,
    mram_ecc_field,
)
from qmc_edge.methods.registry import register
from qmc_edge.methods.rtn import group_label
from qmc_edge.quant.qmc_tensor import quantize_qmc, refit_level_map
from qmc_edge.quant.qmodel import QuantizedModel
from qmc_edge.quant.qtensor import QuantizedTensor
from qmc_edge.quant.uniform import UniformCodes
from qmc_edge.torch_device import model_device

CALIB_SAMPLES, CALIB_LEN = 64, 512


def calib_fields() -> tuple[Any, Any]:
    return (
        Field(None, description="calibration windows (default 64; calibrated methods only)"),
        Field(None, description="tokens per calibration window (default 512; calibrated methods only)"),
    )


def fill_calibration(data: Any, applies: bool, what: str) -> Any:
    """Before validation: refuse calibration options where they do nothing, fill their defaults where
    they apply (so a dump of the spec names the calibration actually used)."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for key, default in (("calib_samples", CALIB_SAMPLES), ("calib_len", CALIB_LEN)):
        if applies:
            if data.get(key) is None:
                data[key] = default
        elif data.get(key) is not None:
            raise ValueError(f"{key} applies only to calibrated methods ({what})")
    return data


def check_calibration(samples: int | None, length: int | None) -> None:
    if samples is not None and samples < 1:
        raise ValueError(f"calib_samples must be >= 1, got {samples}")
    if length is not None and length < 2:
        raise ValueError(f"calib_len must be >= 2, got {length}")


c_samples, c_len = calib_fields()


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
    noise_aware: bool = Field(True, description="include device read errors in the clip search")
    clip_search: Literal["grid", "descent"] = Field(
        "grid", description="clip ratios per group: all of them (grid), or a descent over them (~2.5x fewer)"
    )
    level_map: bool = Field(
        False, description="per tensor, the code-to-cell-level permutation of least expected read error"
    )
    rounding: Literal["nearest", "gptq"] = Field(
        "nearest", description="inlier rounding: nearest, or gptq (error compensation on calibration text)"
    )
    gptq_noise: bool = Field(
        False, description="rounding=gptq: choose codes and compensate errors by the expected device read"
    )
    budget: float | None = Field(
        None,
        description="whole-model bits per parameter (embeddings included): per tensor bits, cells, rho or FP16",
    )
    sensitivity: Literal["self", "calibration", "uniform"] = Field(
        "self", description="Fisher for budget and outliers_by=fisher: on self-generated or calibration text; uniform"
    )
    outliers_by: Literal["magnitude", "fisher"] = Field(
        "magnitude", description="outliers: largest |w| (the paper), or largest F w^2 (F: the sensitivity's Fisher)"
    )
    ideal_memory: bool = ideal_field()
    mram_ber: float = mram_ber_field()
    mram_ecc: Literal["none", "secded"] = mram_ecc_field()
    quantize_embeddings: bool = embeddings_field()
    target_age: str | float | None = Field(None, description=DEVICE_HELP["target_age"])
    calib_samples: int | None = c_samples
    calib_len: int | None = c_len

    summary = "outlier split + noise-aware clipping; rounding=gptq for QMC+GPTQ (calibrated)"
    stored_in = "inliers in ReRAM, outliers/scales in MRAM"
    shown = frozenset({"bits", "group_size", "rho", "cell_bits", "noise_aware", "rounding", "ideal_memory", "budget"})
    implied = {"calib_samples": CALIB_SAMPLES, "calib_len": CALIB_LEN}

    @model_validator(mode="before")
    @classmethod
    def _calibration(cls, data: Any) -> Any:
        applies = isinstance(data, dict) and (
            data.get("rounding") == "gptq"
            or (
                (data.get("budget") is not None or data.get("outliers_by") == "fisher")
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
        if self.n_clip < 1:
            raise ValueError(f"n_clip must be >= 1 (1 = plain min-max), got {self.n_clip}")
        check_mram(self.mram_ber)
        if self.gptq_noise and self.rounding != "gptq":
            raise ValueError("gptq_noise applies to rounding=gptq")
        if self.rounding == "gptq" and self.quantize_embeddings:
            raise ValueError("rounding=gptq quantizes decoder Linear layers only; drop quantize_embeddings")
        check_calibration(self.calib_samples, self.calib_len)
        if self.budget is not None:
            if not 1.0 <= self.budget <= 16.0:
                raise ValueError(f"budget is whole-model bits per parameter, in [1, 16]; got {self.budget:g}")
        elif self.sensitivity != "self" and self.outliers_by != "fisher":
            raise ValueError("sensitivity weights the budget search and outliers_by=fisher; it needs one of them")
        if self.outliers_by == "fisher":
            if self.sensitivity == "uniform":
                raise ValueError("outliers_by=fisher needs a Fisher: sensitivity=self or calibration")
        return self

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
        """The outlier split and noise-aware grid with round-to-nearest inliers; with
        ``outliers_by=fisher``, ``sensitivity`` (the weight's Fisher diagonal) ranks the outliers."""
        scores = None
        if self.outliers_by == "fisher":
            if sensitivity is None:
                raise QMCError("outliers_by=fisher ranks outliers by the Fisher diagonal; quantize the whole model")
            scores = sensitivity * w.detach().float() ** 2
        qt = quantize_qmc(
            w,
            self.bits,
            self.device(for_search=True),
            rho=self.rho,
            group_size=self.group_size or None,
            outlier_bits=self.outlier_bits,
            n_clip=self.n_clip,
            noise_aware=self.noise_aware,
            cell_layout=self.layout,
            outlier_code=self.outlier_code,
            level_map=self.level_map,
            outlier_scores=scores,
            clip_search=self.clip_search,
        )
        return self.tag_mram(qt)

    def _gptq_moments(self):
        """The code-error moments noise-aware GPTQ rounds with (None: plain GPTQ). With a level map the
        moments are the identity assignment's: the map is chosen after the rounding."""
        if not self.gptq_noise:
            return None
        dev = self.device(for_search=True)
        return None if dev.is_ideal else code_error_moments(self.bits, dev, self.layout, None)

    def _refit_level_map(self, w: torch.Tensor, qt: QuantizedTensor) -> None:
        """After GPTQ has re-rounded the codes: the best permutation for the codes it chose."""
        if self.level_map:
            refit_level_map(w, qt, self.device(for_search=True))

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

    def gptq_tensor(
        self, w: torch.Tensor, hessian: torch.Tensor, sensitivity: torch.Tensor | None = None
    ) -> tuple[QuantizedTensor, dict]:
        """One weight with GPTQ rounding: this spec's split (by ``sensitivity`` with
        ``outliers_by=fisher``) and grid (nearest rounding's result), then every entry re-rounded by
        GPTQ on that grid, outliers on their own MRAM grid."""
        from qmc_edge.quant.gptq_solver import gptq_round

        qt = self.quantize_tensor(w, sensitivity)
        ot = qt.outliers
        mask = torch.zeros(qt.shape, dtype=torch.bool)
        mask.view(-1)[ot.index] = True
        codes, ocodes, info = gptq_round(
            w.detach().float(), hessian, qt.inliers, mask, outliers=ot, moments=self._gptq_moments()
        )
        info.pop("row_loss")
        qt.inliers.codes, ot.codes = codes, ocodes.reshape(-1)[ot.index]
        self._refit_level_map(w, qt)
        return qt, info

    def gptq_tensors(
        self, ws: list[torch.Tensor], hessian: torch.Tensor, sens: list[torch.Tensor] | None = None
    ) -> list[tuple[QuantizedTensor, dict]]:
        """:meth:`gptq_tensor` for weights that share one Hessian (they read the same input): each its
        own split and grid, then one GPTQ pass over their rows stacked. GPTQ treats rows
        independently, so each tensor gets the codes it would get alone (tests/test_gptq.py), with a
        third of the per-column work for q, k and v."""
        from qmc_edge.quant.gptq_solver import RowOutliers, gptq_round

        sens = sens or [None] * len(ws)
        if len(ws) == 1:
            return [self.gptq_tensor(ws[0], hessian, sens[0])]
        qts = [self.quantize_tensor(w, s) for w, s in zip(ws, sens, strict=True)]
        rows = [qt.shape[0] for qt in qts]
        masks = []
        for qt in qts:
            m = torch.zeros(qt.shape, dtype=torch.bool)
            m.view(-1)[qt.outliers.index] = True
            masks.append(m)
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
        codes, ocodes, info = gptq_round(
            w, hessian, grid, torch.cat(masks), outliers=table, moments=self._gptq_moments()
        )
        row_loss = info.pop("row_loss")
        out = []
        for qt, c, oc, lo in zip(qts, codes.split(rows), ocodes.split(rows), row_loss.split(rows), strict=True):
            qt.inliers.codes, qt.outliers.codes = c.contiguous(), oc.reshape(-1)[qt.outliers.index]
            self._refit_level_map(ws[len(out)], qt)
            out.append((qt, {**info, "gptq_loss": float(lo.sum())}))
        return out

    @property
    def calibrated(self) -> bool:
        uses_fisher = self.budget is not None or self.outliers_by == "fisher"
        return self.rounding == "gptq" or (uses_fisher and self.sensitivity == "calibration")

    def quantize(self, model, names, tokenizer=None, progress=None) -> QuantizedModel:
        if self.budget is not None and self.rounding == "gptq":
            return round_gptq_budget(self, model, names, tokenizer, progress)
        if self.budget is not None:
            from qmc_edge.quant.budget import quantize_budget

            t0 = time.perf_counter()
            tensors, info = quantize_budget(self, model, names, tokenizer, progress)
            return QuantizedModel(
                self, {n: self.tag_mram(qt) for n, qt in tensors.items()}, time.perf_counter() - t0, info=info
            )
        if self.outliers_by == "fisher" and self.rounding == "nearest":  # GPTQ takes the Fisher itself
            return self._quantize_by_fisher(model, names, tokenizer, progress)
        return ROUNDINGS[self.rounding](self, model, names, tokenizer, progress)

    def _quantize_by_fisher(self, model, names, tokenizer, progress) -> QuantizedModel:
        """Every tensor on its own (as :meth:`TensorMethod.quantize`), outliers ranked by F w^2."""
        from qmc_edge.parallel import map_tensors
        from qmc_edge.quant.sensitivity import sensitivity_for

        t0 = time.perf_counter()
        sens = sensitivity_for(self, model, names, tokenizer)
        params = dict(model.named_parameters(remove_duplicate=False))
        done = (lambda i: progress(i + 1, len(names))) if progress else None
        out = map_tensors(lambda n: self.quantize_tensor(params[n].detach().cpu(), sens[n]), names, done)
        return QuantizedModel(self, dict(zip(names, out, strict=True)), time.perf_counter() - t0)


def _round_nearest(spec: QMC, model, names, tokenizer, progress) -> QuantizedModel:
    return TensorMethod.quantize(spec, model, names, tokenizer, progress)


def _calibration_for(spec: QMC, model, tokenizer, calib):
    """``calib``, or the default calibration set read with ``tokenizer``; GPTQ runs on the CPU here."""
    from qmc_edge.quant.calibration import calibration_set

    if model_device(model).type != "cpu":
        raise QMCError(f"{spec.name} runs its calibration on the CPU here; load the model with --device cpu")
    if calib is None:
        if tokenizer is None:
            raise QMCError(f"{spec.name} calibrates on text and needs the model's tokenizer (tokenizer=...)")
        calib = calibration_set(tokenizer, spec.calib_samples, spec.calib_len)
    return calib


def round_gptq(spec: QMC, model, names, tokenizer, progress, calib=None) -> QuantizedModel:
    """GPTQ rounding of every tensor (:meth:`QMC.gptq_tensor`), block by block on calibration text
    (``calib``, or the default calibration set read with ``tokenizer``)."""
    from qmc_edge.quant.gptq_solver import quantize_model_gptq

    calib = _calibration_for(spec, model, tokenizer, calib)
    t0 = time.perf_counter()
    sens = None
    if spec.outliers_by == "fisher":  # the Fisher of the unquantized model, before any block is rounded
        from qmc_edge.quant.sensitivity import sensitivity_for

        sens = sensitivity_for(spec, model, names, tokenizer)

    def group(gnames, ws, hessian):
        return spec.gptq_tensors(ws, hessian, [sens[n] for n in gnames] if sens else None)

    tensors, info = quantize_model_gptq(model, names, group, calib.samples, progress)
    info["calibration"] = calib.describe()
    return QuantizedModel(spec, tensors, time.perf_counter() - t0, info=info)  # realise() keeps the originals


def round_gptq_budget(spec: QMC, model, names, tokenizer, progress, calib=None) -> QuantizedModel:
    """A bit budget with GPTQ rounding: each tensor's option is chosen as with nearest rounding (the
    search weighs the expected read error of nearest codes; GPTQ keeps every tensor's grid, split and
    storage, so the budget holds exactly), then the decoder blocks' Linear weights are re-rounded by
    GPTQ with their own options, block by block on calibration text. Weights outside the blocks
    (embeddings, head) keep nearest rounding: GPTQ needs a Linear layer's inputs."""
    from qmc_edge.quant.budget import OPTIONS, budget_info, choose_budget
    from qmc_edge.quant.gptq_solver import decoder_layers, quantize_model_gptq

    calib = _calibration_for(spec, model, tokenizer, calib)
    t0 = time.perf_counter()
    search_steps = len(names) * len(OPTIONS)
    steps = search_steps + len(names)
    choice = choose_budget(spec, model, names, tokenizer, progress)  # counts the first search_steps
    params = dict(model.named_parameters(remove_duplicate=False))
    kept = [n for n in names if choice.options[n] is not None]
    prefix = decoder_layers(model, [])[0] + "."
    inside = [n for n in kept if n.startswith(prefix)]
    specs = {o: spec.for_option(o) for o in OPTIONS}

    def group(gnames, ws, hessian):
        """Weights that share one input, stacked per option (the same grid shape and bits)."""
        out: list = [None] * len(gnames)
        by_option: dict = {}
        for i, n in enumerate(gnames):
            by_option.setdefault(choice.options[n], []).append(i)
        for opt, idx in by_option.items():
            got = specs[opt].gptq_tensors(
                [ws[i] for i in idx], hessian, [choice.sensitivity.get(gnames[i]) for i in idx]
            )
            for i, r in zip(idx, got, strict=True):
                out[i] = r
        return out

    done = (lambda i, _n: progress(search_steps + i, steps)) if progress else None
    rounded, info = quantize_model_gptq(model, inside, group, calib.samples, done) if inside else ({}, {})
    tensors = {}
    for n in kept:  # the model's order; outside the blocks, nearest rounding
        qt = rounded.get(n)
        if qt is None:
            qt = specs[choice.options[n]].quantize_tensor(params[n].detach().cpu(), choice.sensitivity.get(n))
        tensors[n] = spec.tag_mram(qt)
    if progress:
        progress(steps, steps)
    info = {**budget_info(choice, model, tensors), **info, "calibration": calib.describe()}
    return QuantizedModel(spec, tensors, time.perf_counter() - t0, info=info)


# How QMC rounds its inliers; each strategy takes (spec, model, names, tokenizer, progress).
ROUNDINGS = {"nearest": _round_nearest, "gptq": round_gptq}
