"""Platform files: memory tiers, compute rates and the placement of data, each number with its source.

A platform is a YAML file validated by pydantic. Every figure is written ``{value: X, source: "..."}``
(optionally ``range: [lo, hi]`` where the sources disagree, e.g. LPDDR pJ/bit 4-20): a number without
its source is refused, because the energy ratio of the whole study hangs on a handful of such
figures and a reader must be able to see where each came from. Ranged figures feed the sensitivity
sweep (:func:`qmc_edge.deploy.headline.sensitivity`).

Validation errors are one line naming the file and the field, e.g.
``platform qmc_hetero.yaml: tiers.reram.read_pj_per_bit: must be > 0``.

Every number must be finite and within sanity bounds, whatever its unit: ``|x| <= 1e12``
(:data:`MAX_FIGURE`; 1e12 MB, GB/s, pJ/bit, TFLOP/s... is far beyond any edge part) and, for the
figures that must be > 0 (or in (0, 1]), ``x >= 1e-12`` (:data:`MIN_POSITIVE`). Inside those bounds
every result of the cost model stays finite, so a typo such as ``1e308`` or ``.nan`` cannot turn every
ratio into inf/nan/null. A YAML key given twice in one mapping is refused (PyYAML would silently keep
the last one), and a user file may not take the ``name:`` of a packaged platform: the packaged
``orin_agx`` is the FP16 baseline of every headline and must not be replaced by an edited copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from qmc_edge.datafile import (
    MAX_FIGURE,
    MIN_POSITIVE,
    DataFiles,
    RangedFigure,
    non_negative,
    positive,
    sourced,
)

__all__ = ["MAX_FIGURE", "MIN_POSITIVE", "Platform", "load_platform", "packaged_names", "parse_platform"]

#: A platform's figures may give the range their sources span.
Figure = RangedFigure


def _fraction(f: Figure) -> Figure:
    lo, hi = f.range if f.range is not None else (f.value, f.value)
    if not (0 < f.value <= 1 and 0 < lo and hi <= 1):
        raise ValueError("must be in (0, 1]")
    if lo < MIN_POSITIVE:
        raise ValueError(f"{lo:g} is below the sanity bound {MIN_POSITIVE:g}")
    return f


Pos = Annotated[Figure, *sourced(positive)]
NonNeg = Annotated[Figure, *sourced(non_negative)]
Frac = Annotated[Figure, *sourced(_fraction)]

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
    # Achieved share of the nominal bandwidth for this tier's interface; absent = the platform's
    # ``latency.bw_efficiency`` (fitted on LPDDR, so array memories should give their own).
    bw_efficiency: Frac | None = None

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


def tier_bandwidth(name: str, tier: Tier, get) -> object:
    """Nominal bandwidth of one tier in bytes/s: the one place it is computed.

    ``get(path, figure)`` returns the value to use for the figure at ``path``
    (``tiers.reram.read_ns``): the figure's own value, an override, or an array of variants; the
    arithmetic is the same for floats and numpy arrays."""
    pre = f"tiers.{name}."
    if tier.bandwidth_GBps is not None:
        return get(pre + "bandwidth_GBps", tier.bandwidth_GBps) * 1e9
    bits = get(pre + "parallel_read_bits", tier.parallel_read_bits)
    return bits / 8 / get(pre + "read_ns", tier.read_ns) * 1e9


class Dequant(BaseModel):
    """What turning stored codes back into FP16 operands costs, per weight read (none for FP16 weights).

    ``pj_per_weight``: unpacking the code from its cells/bytes and removing the zero point (the scale
    multiply folds into the dot product, once per group); ``pj_per_outlier``: decoding one CSR outlier
    index and merging its value into the row; ``weights_per_ns``: dequantization throughput, which
    runs on the compute side and overlaps memory like the rest of compute (``compute_overlap``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pj_per_weight: NonNeg
    pj_per_outlier: NonNeg
    weights_per_ns: Pos


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
    # Absent = dequantization is free (the model before 2026-12-01); packaged platforms all give it.
    dequant: Dequant | None = None

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
        """Nominal (or overridden) bandwidth of one tier in GB/s (see :func:`tier_bandwidth`)."""
        o = overrides or {}
        return float(tier_bandwidth(name, self.tiers[name], lambda path, fig: o.get(path, fig.value))) / 1e9

    def tier_efficiency(self, name: str) -> Figure:
        """The tier's own bandwidth efficiency, or the platform's when the tier gives none."""
        return self.tiers[name].bw_efficiency or self.latency.bw_efficiency

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


FILES: DataFiles[Platform] = DataFiles(
    kind="platform",
    folder="platforms",
    model=Platform,
    empty_hint="write a mapping with name, description, tiers, compute, latency and placement (see the packaged "
    "platforms)",
    shape_hint="the file must be a mapping of fields (name:, tiers:, ...)",
    replace_note=" (orin_agx is the FP16 baseline)",
)


def packaged_names() -> list[str]:
    """Names of the platforms shipped with the package."""
    return FILES.names()


def parse_platform(data: object, label: str) -> Platform:
    """Validate already-parsed YAML; errors are one line naming ``label`` and the bad field."""
    return FILES.parse(data, label)


def load_platform(spec: str | Path) -> Platform:
    """A packaged platform by name (``qmc_hetero``, ``orin_agx``...) or a YAML file by path.

    A string naming a packaged platform is always the packaged one (write ``./orin_agx`` for a file of
    that name); a :class:`~pathlib.Path`, a ``.yaml``/``.yml`` name or any other existing path is a
    file. A file may not reuse a packaged platform's ``name:``: results are keyed by that name and the
    packaged ``orin_agx`` is the FP16 baseline, so an edited copy under the same name would silently
    replace it. Every error is one :class:`~qmc_edge.errors.QMCError` line naming the file."""
    return FILES.load(spec)
