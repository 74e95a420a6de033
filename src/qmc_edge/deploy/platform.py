"""Platform files: memory tiers, compute rates and the placement of data, each number with its source.

A platform is a YAML file validated by pydantic. Every figure is written ``{value: X, source: "..."}``
(optionally ``range: [lo, hi]`` where the sources disagree, e.g. LPDDR pJ/bit 4-20): a number without
its source is refused, because the energy ratio of the whole study hangs on a handful of such
figures and a reader must be able to see where each came from. Ranged figures feed the sensitivity
sweep (:func:`qmc_edge.deploy.system.sensitivity`).

Validation errors are one line naming the file and the field, e.g.
``platform qmc_hetero.yaml: tiers.reram.read_pj_per_bit: must be > 0``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError, model_validator

from ..errors import QMCError


def _need_source(v: object) -> object:
    if isinstance(v, int | float) and not isinstance(v, bool):
        raise ValueError(f"a bare number ({v}) has no source; write {{value: {v}, source: '...'}}")
    return v


class Figure(BaseModel):
    """One number, where it comes from, and (optionally) the range that the sources span."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float
    source: str
    range: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _check(self) -> Figure:
        if not self.source.strip():
            raise ValueError("source is empty; say where the number comes from")
        if self.range is not None:
            lo, hi = self.range
            if not lo <= self.value <= hi:
                raise ValueError(f"value {self.value} is outside its range [{lo}, {hi}]")
        return self


def _positive(f: Figure) -> Figure:
    if f.value <= 0 or (f.range is not None and f.range[0] <= 0):
        raise ValueError("must be > 0")
    return f


def _non_negative(f: Figure) -> Figure:
    if f.value < 0 or (f.range is not None and f.range[0] < 0):
        raise ValueError("must be >= 0")
    return f


def _fraction(f: Figure) -> Figure:
    lo, hi = f.range if f.range is not None else (f.value, f.value)
    if not (0 < f.value <= 1 and 0 < lo and hi <= 1):
        raise ValueError("must be in (0, 1]")
    return f


Pos = Annotated[Figure, BeforeValidator(_need_source), AfterValidator(_positive)]
NonNeg = Annotated[Figure, BeforeValidator(_need_source), AfterValidator(_non_negative)]
Frac = Annotated[Figure, BeforeValidator(_need_source), AfterValidator(_fraction)]

Location = Literal["die", "package", "board"]


class Tier(BaseModel):
    """One memory tier. ``location`` says which boundary its traffic crosses: ``die`` = on the compute
    die; ``package`` = another die in the same package (e.g. stacked ReRAM: off the compute die but not
    over board wires); ``board`` = off-package (LPDDR, Flash). Both off-die and off-package traffic
    are reported, because "off-chip" means one or the other depending on who counts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    technology: str
    location: Location
    capacity_MB: Pos
    bandwidth_GBps: Pos | None = None
    # Alternative to bandwidth_GBps for array memories: bits fetched in parallel per read / read time.
    parallel_read_bits: Pos | None = None
    read_ns: Pos | None = None
    read_pj_per_bit: Pos
    write_pj_per_bit: Pos
    leakage_mW_per_MB: NonNeg
    non_volatile: bool = False  # keeps data unpowered (ReRAM, MRAM, Flash): weights load once, not per boot
    # Non-volatile arrays keep their data unpowered, so only the arrays being read need to leak.
    power_gated: bool = False
    active_MB: NonNeg | None = None
    density_Mb_per_mm2: Pos | None = None

    @model_validator(mode="after")
    def _check(self) -> Tier:
        if self.bandwidth_GBps is None and (self.parallel_read_bits is None or self.read_ns is None):
            raise ValueError("give bandwidth_GBps, or parallel_read_bits and read_ns")
        if self.power_gated and not self.non_volatile:
            raise ValueError("power_gated needs non_volatile: true (a volatile tier loses its data unpowered)")
        if self.power_gated and self.active_MB is None:
            raise ValueError("power_gated tiers need active_MB (the capacity powered while reading)")
        if self.location != "board" and self.density_Mb_per_mm2 is None:
            raise ValueError("on-die and on-package tiers need density_Mb_per_mm2 (for the area)")
        return self


class Compute(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fp16_tflops: Pos
    efficiency: Frac
    pj_per_flop: Pos


class Latency(BaseModel):
    """How per-tier transfer times combine: ``max`` when tiers have their own interfaces and are read
    in parallel (a layer's ReRAM inliers and MRAM outliers fetched together), ``sum`` when one
    controller reads them one after the other. ``compute_overlap``: compute hides under memory
    (roofline, max) or adds to it (sum)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tier_combine: Literal["max", "sum"]
    compute_overlap: bool
    overhead_ms: NonNeg
    bw_efficiency: Frac


class Placement(BaseModel):
    """Which tier holds each kind of data. ``reram``/``mram``/``dram`` are the memories named in a
    quantization storage report (where the method put its codes and metadata); the others are the
    tensors kept at FP16 and the run-time data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reram: str
    mram: str
    dram: str
    fp16_other: str
    embeddings: str
    head: str
    kv_cache: str
    activations: str
    load_from: str | None = None


PLACEMENT_KEYS = tuple(Placement.model_fields)


class Platform(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    measured_as: str | None = None  # key of the measured-speed data set this platform stands for
    tiers: dict[str, Tier]
    compute: Compute
    latency: Latency
    placement: Placement

    @model_validator(mode="after")
    def _check(self) -> Platform:
        if not self.tiers:
            raise ValueError("no tiers defined")
        for key in PLACEMENT_KEYS:
            tier = getattr(self.placement, key)
            if tier is not None and tier not in self.tiers:
                raise ValueError(f"placement.{key}: tier {tier!r} is not defined; tiers are: {', '.join(self.tiers)}")
        return self

    def tier_bandwidth_GBps(self, name: str, overrides: dict[str, float] | None = None) -> float:
        """Nominal (or overridden) bandwidth of one tier in GB/s."""
        t = self.tiers[name]
        o = overrides or {}
        if t.bandwidth_GBps is not None:
            return o.get(f"tiers.{name}.bandwidth_GBps", t.bandwidth_GBps.value)
        bits = o.get(f"tiers.{name}.parallel_read_bits", t.parallel_read_bits.value)
        ns = o.get(f"tiers.{name}.read_ns", t.read_ns.value)
        return bits / 8 / ns  # bytes per ns = GB/s

    def figures(self) -> dict[str, Figure]:
        """Every figure by dotted path (``tiers.lpddr5.read_pj_per_bit``, ``compute.pj_per_flop``...)."""
        out: dict[str, Figure] = {}

        def walk(obj: BaseModel, prefix: str) -> None:
            for k in type(obj).model_fields:
                v = getattr(obj, k)
                if isinstance(v, Figure):
                    out[f"{prefix}{k}"] = v
                elif isinstance(v, BaseModel):
                    walk(v, f"{prefix}{k}.")
                elif isinstance(v, dict):
                    for kk, vv in v.items():
                        if isinstance(vv, BaseModel):
                            walk(vv, f"{prefix}{k}.{kk}.")

        walk(self, "")
        return out

    def ranged(self) -> dict[str, Figure]:
        return {k: f for k, f in self.figures().items() if f.range is not None}


def _loc(err: dict) -> str:
    parts = [str(x) for x in err["loc"]]
    # Drop pydantic's internal steps (function-after[...], value) so the path is the YAML's.
    parts = [p for p in parts if not p.startswith(("function-", "tagged-union"))]
    while parts and parts[-1] in ("value",):
        parts.pop()
    return ".".join(parts) or "(top level)"


def packaged_names() -> list[str]:
    root = resources.files("qmc_edge") / "platforms"
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def parse_platform(data: object, label: str) -> Platform:
    """Validate already-parsed YAML; errors are one line naming ``label`` and the bad field."""
    if not isinstance(data, dict):
        raise QMCError(f"platform {label}: the file must be a mapping of fields, got {type(data).__name__}")
    try:
        return Platform.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "missing (required)"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling"
        raise QMCError(f"platform {label}: {_loc(err)}: {msg}") from None


def load_platform(spec: str | Path) -> Platform:
    """A packaged platform by name (``qmc_hetero``, ``orin_agx``...) or a YAML file by path."""
    text_spec = str(spec)
    p = Path(text_spec).expanduser()
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise QMCError(f"platform file not found: {text_spec}; packaged platforms: {', '.join(packaged_names())}")
        label, raw = p.name, p.read_text(encoding="utf-8")
    else:
        res = resources.files("qmc_edge") / "platforms" / f"{text_spec}.yaml"
        if not res.is_file():
            raise QMCError(
                f"unknown platform {text_spec!r}; use a YAML file path or one of: {', '.join(packaged_names())}"
            )
        label, raw = f"{text_spec}.yaml", res.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0]
        raise QMCError(f"platform {label}: not valid YAML ({first})") from None
    return parse_platform(data, label)
