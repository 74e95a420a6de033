"""The paper's headline ratios reconciled with ours: a ledger per claim, one named change at a time.

QMC's abstract claims, against FP16 on an edge platform, 6.3-7.3x less memory, 7.6x less external
traffic, 11.7x less energy and 12.5x lower latency; our deployment model on its defaults gives far
less, and a reader cannot tell which assumptions would close the gap or what they cost in accuracy.
A ledger (``claims.yaml``, editable) starts at our default (QMC 3b on ``qmc_hetero`` against FP16
on ``orin_agx``) and applies its steps cumulatively; after each it re-runs the same cost model
(:mod:`qmc_edge.deploy.system`) and shows the ratio, where the step's number comes from, and, for
steps that change the quantization, the WikiText-2 perplexity (and ARC-Easy / HellaSwag acc_norm)
*measured* for that configuration in results files, or "not measured". Nothing is estimated.

Written by hand because no library does this: it is bookkeeping over our own cost model.

Storage of a configuration (bits per weight by memory) is measured by quantizing a storage model (the
embedded SmolLM2-135M by default) with that configuration and applied per weight to the chosen
architecture, as ``benchmarks/deploy.py`` does; the clipping search and GPTQ rounding do not change
the storage, so a 2-point search with nearest rounding is used for it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qmc_edge.claims.accuracy import find_accuracy
from qmc_edge.datafile import parse_yaml_model, read_user_file
from qmc_edge.deploy.arch import Arch
from qmc_edge.deploy.demand import MethodCost, Workload, demand
from qmc_edge.deploy.headline import deploy_table, get_scalar, ratio_metrics
from qmc_edge.deploy.placement import CLASSES, WEIGHT_CLASSES, check_capacity
from qmc_edge.deploy.platform import Platform, load_platform, parse_platform
from qmc_edge.errors import QMCError

CLAIMS = ("memory", "off_chip", "energy", "latency")
METRICS = ("memory", "off_die", "off_package", "energy", "latency")
#: Words that mark a step's source as a citation rather than an assumption (the test checks every
#: shipped step has one of them or the word "assumption").
CITED = ("hardware.md", "devices.md", "paper", "arxiv", "data sheet", "platform file", ".yaml", "est.")


# ------------------------------------------------------------------------------------------ the file
class Paper(BaseModel):
    """The paper's figure for one claim: a ratio, or the range ``low``..``high`` of ratios it gives."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    text: str
    low: float = Field(gt=0)
    high: float = Field(gt=0)
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _range(self) -> Paper:
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) is above high ({self.high:g})")
        return self


class Step(BaseModel):
    """One named change. Exactly one kind of change, or several that belong together (none is an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    assumption: str
    source: str
    method: dict[str, object] | None = None
    set: dict[str, float] | None = None
    side: Literal["qmc", "baseline", "both"] = "qmc"  # whose platform a `set` changes
    placement: dict[str, str] | None = None
    workload: dict[str, int] | None = None
    metric: str | None = None

    @field_validator("source", "assumption")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is empty; say where the number comes from, or write 'assumption: ...'")
        return v

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str | None) -> str | None:
        if v is not None and v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; use one of {', '.join(METRICS)}")
        return v

    @field_validator("workload")
    @classmethod
    def _workload(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        allowed = set(Workload.__dataclass_fields__)
        bad = sorted(set(v or {}) - allowed)
        if bad:
            raise ValueError(f"unknown workload field {bad[0]!r}; use {', '.join(sorted(allowed))}")
        return v

    @model_validator(mode="after")
    def _some_change(self) -> Step:
        if not any((self.method, self.set, self.placement, self.workload, self.metric)):
            raise ValueError("changes nothing; give method, set, placement, workload or metric")
        if self.side != "qmc" and (self.placement or self.workload or self.method):
            raise ValueError("'side' applies to `set` only; method, placement and workload change the QMC side")
        return self

    @property
    def cited(self) -> bool:
        s = self.source.lower()
        return any(w in s for w in CITED)

    @property
    def is_assumption(self) -> bool:
        return "assumption" in self.source.lower()

    @property
    def kind(self) -> str:
        """``assumption`` (said so, or nothing cited), ``estimate`` (an est. figure) or ``sourced``."""
        s = self.source.lower()
        if self.is_assumption or not self.cited:
            return "assumption"
        return "estimate" if "est." in s else "sourced"


class Claim(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    paper: Paper
    metric: str
    steps: list[Step]

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; use one of {', '.join(METRICS)}")
        return v


class Ledger(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    claims: dict[str, Claim] = Field(min_length=1)


def load_ledger(path: str | Path | None = None) -> Ledger:
    """The shipped ledger, or a user's copy; errors are one line naming the file and the field (read
    and validated like the platform and cell-model files: duplicate keys refused, size and encoding checked)."""
    if path is None:
        label = "claims.yaml"
        text = (resources.files("qmc_edge.claims") / "claims.yaml").read_text(encoding="utf-8")
    else:
        label = str(path)
        text = read_user_file(Path(path), label, "ledger", "copy the shipped one: qmc claims --show-ledger > my.yaml")
    hint = "the file must be a mapping with a `claims:` key (see the shipped one)"
    return parse_yaml_model(text, "ledger", label, Ledger, hint)


# ------------------------------------------------------------------------------------------- state
@dataclass
class State:
    """What a ledger has changed so far: the method spec, both platforms' data, the QMC side's workload
    and the metric counted."""

    method: object  # MethodSpec
    qmc: dict
    baseline: dict
    workload: dict
    metric: str
    notes: list[str] = field(default_factory=list)


def _set_figure(data: dict, path: str, value: float, why: str) -> bool:
    """Set ``tiers.reram.read_ns`` (etc.) in a platform's data; False when the platform lacks it."""
    node = data
    *parts, last = path.split(".")
    for k in parts:
        if not isinstance(node, dict) or node.get(k) is None:
            return False
        node = node[k]
    if not isinstance(node, dict):
        return False
    if last not in node:
        return False
    node[last] = {"value": float(value), "source": f"ledger step: {why}"}
    return True


def apply(state: State, step: Step) -> State:
    """The state after one step (the input is not changed)."""
    from qmc_edge.methods.registry import build

    s = State(
        state.method,
        json.loads(json.dumps(state.qmc)),
        json.loads(json.dumps(state.baseline)),
        dict(state.workload),
        state.metric,
    )
    if step.method:
        fields = {k: v for k, v in state.method.model_dump().items() if k not in ("method", "label")}
        fields = {k: v for k, v in fields.items() if v is not None}
        fields.update(step.method)
        try:
            s.method = build(state.method.method, fields)
        except ValueError as exc:
            raise QMCError(f"ledger step {step.assumption!r}: {exc}") from None
    if step.set:
        targets = {"qmc": [s.qmc], "baseline": [s.baseline], "both": [s.qmc, s.baseline]}[step.side]
        for path, v in step.set.items():
            hit = [_set_figure(t, path, v, step.assumption) for t in targets]
            if not any(hit):
                raise QMCError(f"ledger step {step.assumption!r}: no platform has the figure {path!r}")
    if step.placement:
        for k, tier in step.placement.items():
            if k not in s.qmc["placement"]:
                raise QMCError(f"ledger step {step.assumption!r}: unknown placement key {k!r}")
            s.qmc["placement"][k] = tier
    if step.workload:
        s.workload.update(step.workload)
    if step.metric:
        s.metric = step.metric
    return s


def _metric_value(metric: str, row: dict) -> float:
    return get_scalar(ratio_metrics()[metric], row)


def breakdown(metric: str, row: dict) -> dict[str, float]:
    """What the method's figure is made of (shares sum to 1), to say why a claim is not reached."""
    d = row["decode"]
    if metric == "memory":
        parts = {}
        for c in WEIGHT_CLASSES:
            v = row["_stored"].get(c, 0.0) / 8
            if v:
                key = f"{c} in {row['_placement'][c]}"
                parts[key] = parts.get(key, 0.0) + v
    elif metric in ("off_die", "off_package"):
        parts = {t: d["bytes_read_tier"][t] + d["bytes_written_tier"][t] for t in d["bytes_read_tier"]}
        parts = {t: v for t, v in parts.items() if v}
        # Only the tiers that cross the boundary count; the others are named so a reader sees them.
        parts = {t: v for t, v in parts.items() if t in row.get("_crossing", parts)}
    elif metric == "energy":
        parts = {f"{t} access": v for t, v in d["energy_dynamic_tier_J"].items() if v}
        parts.update(compute=d["energy_compute_J"], dequantization=d["energy_dequant_J"], leakage=d["energy_static_J"])
    else:
        tmax = max(d["time_tier_s"].items(), key=lambda kv: kv[1])
        busy = d["latency_s"] - d["overhead_s"]
        parts = {"per-token overhead": d["overhead_s"]}
        if d["compute_time_s"] >= d["memory_time_s"]:
            parts["compute incl. dequantization"] = busy
        else:
            parts[f"memory ({tmax[0]}, the slowest tier)"] = busy
    total = sum(parts.values()) or 1.0
    return {k: v / total for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v > 0}


def _crossing(plat: Platform, metric: str) -> list[str]:
    if metric == "off_die":
        return [n for n, t in plat.tiers.items() if t.location != "die"]
    return [n for n, t in plat.tiers.items() if t.location == "board"]


# ------------------------------------------------------------------------------------------ ledger
StorageFn = Callable[[object], MethodCost]


def reached(ratio: float, paper: Paper) -> bool:
    return ratio >= paper.low * (1 - 5e-3)


def _evaluate(arch: Arch, state: State, cost_of: StorageFn, wl: Workload) -> tuple[float, dict, dict]:
    qmc = parse_platform(state.qmc, f"{state.qmc['name']} (ledger)")
    base = parse_platform(state.baseline, f"{state.baseline['name']} (ledger)")
    cost = cost_of(state.method)
    w_qmc = Workload(**{**vars(wl), **state.workload})
    (b,) = deploy_table(arch, {"FP16": MethodCost.fp16()}, [base], wl, check=False)
    (r,) = deploy_table(arch, {state.method.name: cost}, [qmc], w_qmc, check=False)
    # A design point that overflows a tier is still a ratio, but the ledger must say it does not fit.
    r["_fits"] = None
    for plat, what, wk, c in ((qmc, state.method.name, w_qmc, cost), (base, "FP16", wl, MethodCost.fp16())):
        try:
            check_capacity(plat, demand(arch, c, wk).stored, f"{arch.name} with {what}")
        except QMCError as exc:
            r["_fits"] = str(exc).split("; raise")[0]
            break
    r["_crossing"] = _crossing(qmc, state.metric)
    den = _metric_value(state.metric, r)
    ratio = _metric_value(state.metric, b) / den if den > 0 else math.inf
    r["_stored"] = dict(zip(CLASSES, demand(arch, cost, w_qmc).stored, strict=True))
    r["_placement"] = dict(state.qmc["placement"])
    return ratio, r, b


def _describe(state: State, cost: MethodCost) -> str:
    kv = state.workload.get("kv_bits")
    extra = f", KV {kv}-bit" if kv else ""
    return f"{state.method.name} ({cost.effective_bits:.2f} bits/weight){extra} on {state.qmc['name']}"


def run_ledger(
    arch: Arch,
    claim_name: str,
    claim: Claim,
    method,
    qmc_platform: Platform,
    baseline_platform: Platform,
    cost_of: StorageFn,
    result_files: list[Path],
    workload: Workload | None = None,
) -> dict:
    """One claim's ledger: default, then each step cumulatively; accuracy for every quantization."""
    wl = workload or Workload()
    state = State(method, qmc_platform.model_dump(), baseline_platform.model_dump(), {}, claim.metric)
    ratio, row, _ = _evaluate(arch, state, cost_of, wl)
    acc_cache: dict[str, list[dict]] = {}

    def accuracy(spec) -> list[dict]:
        if spec.name not in acc_cache:
            acc_cache[spec.name] = find_accuracy(spec, arch.name, result_files)
        return acc_cache[spec.name]

    default = {
        "ratio": ratio,
        "metric": state.metric,
        "configuration": _describe(state, cost_of(method)),
        "does_not_fit": row["_fits"],
        "method": method.name,
        "accuracy": accuracy(method),
    }
    steps = []
    hit = 0 if reached(ratio, claim.paper) and row["_fits"] is None else None
    for i, st in enumerate(claim.steps, 1):
        prev_method = state.method.name
        state = apply(state, st)
        ratio, row, _ = _evaluate(arch, state, cost_of, wl)
        entry = {
            "step": i,
            "assumption": st.assumption,
            "source": st.source,
            "kind": st.kind,
            "change": {k: v for k, v in st.model_dump().items() if k not in ("assumption", "source") and v},
            "metric": state.metric,
            "configuration": _describe(state, cost_of(state.method)),
            "ratio": ratio,
            "does_not_fit": row["_fits"],
            "quantization_changed": state.method.name != prev_method,
        }
        if entry["quantization_changed"]:
            entry["accuracy"] = accuracy(state.method)
        steps.append(entry)
        if hit is None and reached(ratio, claim.paper) and row["_fits"] is None:  # a design that fits
            hit = i
    final = steps[-1]["ratio"] if steps else default["ratio"]
    why = None
    if hit is None:
        shares = breakdown(state.metric, row)
        top = ", ".join(f"{k} {v:.0%}" for k, v in list(shares.items())[:3])
        why = (
            f"after every step the ratio is {final:.2f}x < {claim.paper.low:g}x; the QMC side's {state.metric} "
            f"is then {top}"
        )
    acc_list = [{"step": 0, **a} for a in default["accuracy"]] + [
        {"step": s["step"], **a} for s in steps if s.get("accuracy") for a in s["accuracy"]
    ]
    measured_cfgs = {a["configuration"] for a in acc_list if a.get("ppl") is not None}
    cfgs = [default["method"]] + [s["configuration"].split(" (")[0] for s in steps if s["quantization_changed"]]
    not_measured = [c for c in dict.fromkeys(cfgs) if c not in measured_cfgs]
    return {
        "claim": claim_name,
        "paper": claim.paper.model_dump(),
        "arch": arch.name,
        "default": default,
        "steps": steps,
        "final_ratio": final,
        "reached": hit is not None,
        "reached_at_step": hit,
        "why_not": why,
        "accuracy": acc_list,
        "not_measured": not_measured,
    }


def storage_cost_fn(model, arch: Arch, progress=None, tokenizer=None) -> StorageFn:
    """Method cost per spec, by quantizing ``model`` (storage only: 2-point clip search, nearest
    rounding, ideal memory), cached per configuration."""
    from qmc_edge.methods.registry import build
    from qmc_edge.methods.whole_model import quantize_model, storage_report

    cache: dict[str, MethodCost] = {}

    def cost_of(spec) -> MethodCost:
        key = spec.name
        if key in cache:
            return cache[key]
        if spec.method == "fp":
            cache[key] = MethodCost.fp16()
            return cache[key]
        fields = {k: v for k, v in spec.model_dump().items() if k not in ("method", "label") and v is not None}
        light_opts = [("n_clip", 2), ("rounding", "nearest"), ("noise_aware", False)]
        if spec.uses_reram:
            light_opts.append(("ideal_memory", True))
        for k, v in light_opts:
            if k in type(spec).model_fields:
                fields[k] = v
        for k in ("calib_samples", "calib_len", "target_age", "read_share", "age"):
            fields.pop(k, None)
        try:
            light = build(spec.method, fields)
        except ValueError:
            light = spec
        qm = quantize_model(
            model, light, progress and (lambda i, n: progress(f"storage of {key}", i, n)), tokenizer=tokenizer
        )
        rep = storage_report(model, light, qm)
        c = MethodCost.from_report(key, rep, None)
        cache[key] = MethodCost(
            key,
            c.bits_per_weight,
            c.components_per_weight,
            bool(spec.quantizes_embeddings),
            c.cell_bits,
            "storage measured on the storage model, applied per weight",
            c.outlier_share,
        )
        return cache[key]

    return cost_of


def claims_json(ledgers: list[dict]) -> dict:
    return {"claims": ledgers}


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}x" if math.isfinite(x) else "inf"


__all__ = [
    "CLAIMS",
    "Ledger",
    "State",
    "Step",
    "apply",
    "breakdown",
    "load_ledger",
    "run_ledger",
    "storage_cost_fn",
]


def platforms(qmc: str, baseline: str) -> tuple[Platform, Platform]:
    return load_platform(qmc), load_platform(baseline)
