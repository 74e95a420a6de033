"""Platform files: memory tiers, compute rates and the placement of data, each number with its source.

A platform is a YAML file validated by pydantic. Every figure is written ``{value: X, source: "..."}``
(optionally ``range: [lo, hi]`` where the sources disagree, e.g. LPDDR pJ/bit 4-20): a number without
its source is refused, because the energy ratio of the whole study hangs on a handful of such
figures and a reader must be able to see where each came from. Ranged figures feed the sensitivity
sweep (:func:`qmc_edge.deploy.system.sensitivity`).

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

import math
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)

from qmc_edge.errors import QMCError

#: Largest magnitude accepted for any figure, in the figure's own unit (a sanity bound, not physics).
MAX_FIGURE = 1e12
#: Smallest value accepted for a figure that must be > 0 (or a fraction in (0, 1]).
MIN_POSITIVE = 1e-12


def _need_source(v: object) -> object:
    if isinstance(v, int | float) and not isinstance(v, bool):
        raise ValueError(f"a bare number ({v}) has no source; write {{value: {v}, source: '...'}}")
    return v


def _no_bool(v: object) -> object:
    if isinstance(v, bool):
        raise ValueError(f"must be a number, got {str(v).lower()}")
    return v


class Figure(BaseModel):
    """One number, where it comes from, and (optionally) the range that the sources span."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    value: float
    source: str
    range: tuple[float, float] | None = None

    @field_validator("value", mode="before")
    @classmethod
    def _value_not_bool(cls, v: object) -> object:
        return _no_bool(v)

    @field_validator("range", mode="before")
    @classmethod
    def _range_not_bool(cls, v: object) -> object:
        if isinstance(v, list | tuple):
            for x in v:
                _no_bool(x)
        return v

    @model_validator(mode="after")
    def _check(self) -> Figure:
        if not self.source.strip():
            raise ValueError("source is empty; say where the number comes from")
        for what, x in [("value", self.value), *(("range", r) for r in self.range or ())]:
            if not math.isfinite(x):  # allow_inf_nan=False already refuses these; kept as a guard
                raise ValueError(f"{what} must be a finite number, got {x}")
            if abs(x) > MAX_FIGURE:
                raise ValueError(
                    f"{what} {x:g} is beyond the sanity bound {MAX_FIGURE:g} (in the field's own unit); "
                    "check the exponent"
                )
        if self.range is not None:
            lo, hi = self.range
            if not lo <= self.value <= hi:
                raise ValueError(f"value {self.value} is outside its range [{lo}, {hi}]")
        return self


def _positive(f: Figure) -> Figure:
    if f.value <= 0 or (f.range is not None and f.range[0] <= 0):
        raise ValueError("must be > 0")
    lo = f.range[0] if f.range is not None else f.value
    if lo < MIN_POSITIVE:
        raise ValueError(f"{lo:g} is below the sanity bound {MIN_POSITIVE:g} (in the field's own unit)")
    return f


def _non_negative(f: Figure) -> Figure:
    if f.value < 0 or (f.range is not None and f.range[0] < 0):
        raise ValueError("must be >= 0")
    return f


def _fraction(f: Figure) -> Figure:
    lo, hi = f.range if f.range is not None else (f.value, f.value)
    if not (0 < f.value <= 1 and 0 < lo and hi <= 1):
        raise ValueError("must be in (0, 1]")
    if lo < MIN_POSITIVE:
        raise ValueError(f"{lo:g} is below the sanity bound {MIN_POSITIVE:g}")
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


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _validation_line(exc: ValidationError, where: str) -> str:
    """The first validation error of a data file as one line: where, the field's YAML path, what is wrong."""
    err = exc.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "missing (required)"
    elif err["type"] == "extra_forbidden":
        msg = "unknown field; check the spelling"
    elif err["type"] == "finite_number":
        msg = f"must be a finite number, got {err.get('input')!r}"
    return _one_line(f"{where}: {_loc(err)}: {msg}")


def parse_platform(data: object, label: str) -> Platform:
    """Validate already-parsed YAML; errors are one line naming ``label`` and the bad field."""
    if data is None:
        raise QMCError(
            f"platform {label}: the file is empty; write a mapping with name, description, tiers, compute, "
            "latency and placement (see the packaged platforms)"
        )
    if not isinstance(data, dict):
        raise QMCError(
            f"platform {label}: the file must be a mapping of fields (name:, tiers:, ...), got {type(data).__name__}"
        )
    try:
        return Platform.model_validate(data)
    except ValidationError as exc:
        raise QMCError(_validation_line(exc, f"platform {label}")) from None
    except (RecursionError, OverflowError) as exc:  # self-referencing YAML aliases, integers beyond float
        raise QMCError(f"platform {label}: cannot be validated ({type(exc).__name__}); simplify the file") from None


class _DuplicateKeyError(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, refusing a key given twice in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges may override keys
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable key: the base class reports it
                    continue
                m = key_node.start_mark
                if first is not None:
                    raise _DuplicateKeyError(
                        f"duplicate key {key!r} at line {m.line + 1}, column {m.column + 1} "
                        f"(first given at {first}); keep one"
                    )
                seen[key] = f"line {m.line + 1}, column {m.column + 1}"
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return _one_line(f"{exc.problem}{where}")
    lines = str(exc).strip().splitlines()
    return _one_line(lines[0]) if lines else type(exc).__name__


#: A platform file is a few kB; anything this large is the wrong file.
MAX_FILE_BYTES = 10 * 2**20


def _read_user_file(p: Path, shown: str, kind: str = "platform", hint: str | None = None) -> str:
    """The text of a user's YAML data file (``kind``: platform, device), or one QMCError line."""
    hint = hint or f"packaged platforms: {', '.join(packaged_names())}"
    what = f"pass a {kind} YAML file"
    if p.is_dir():
        raise QMCError(f"{kind} {shown}: is a directory; {what}, or one of the {hint}")
    if not p.is_file():
        if p.exists():
            raise QMCError(f"{kind} {shown}: not a regular file; {what}, or one of the {hint}")
        raise QMCError(f"{kind} file not found: {shown}; {hint}")
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise QMCError(
            f"{kind} {shown}: cannot read it ({_one_line(exc.strerror or exc)}); check the path and its permissions"
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise QMCError(f"{kind} {shown}: larger than {MAX_FILE_BYTES // 2**20} MiB; {what}")
    if b"\0" in raw:
        raise QMCError(f"{kind} {shown}: binary data, not a YAML text file; {what} ({hint})")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise QMCError(
            f"{kind} {shown}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); save the file as UTF-8"
        ) from None


def parse_yaml_model(text: str, kind: str, label: str, model: type[BaseModel], shape_hint: str) -> BaseModel:
    """A data file's text -> a validated pydantic ``model``; every error is one line naming ``kind
    label`` (bad YAML, a duplicate key, not a mapping, or the first invalid field)."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise QMCError(f"{kind} {label}: not valid YAML ({_yaml_problem(exc)})") from None
    except RecursionError:
        raise QMCError(f"{kind} {label}: nested too deeply to be a {kind} file") from None
    if not isinstance(data, dict):
        raise QMCError(f"{kind} {label}: {shape_hint}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise QMCError(_validation_line(exc, f"{kind} {label}")) from None


def _is_packaged_file(p: Path, name: str) -> bool:
    try:
        return Path(str(resources.files("qmc_edge") / "platforms" / f"{name}.yaml")).resolve() == p.resolve()
    except OSError:
        return False


def load_platform(spec: str | Path) -> Platform:
    """A packaged platform by name (``qmc_hetero``, ``orin_agx``...) or a YAML file by path.

    A string naming a packaged platform is always the packaged one (write ``./orin_agx`` for a file of
    that name); a :class:`~pathlib.Path`, a ``.yaml``/``.yml`` name or any other existing path is a
    file. A file may not reuse a packaged platform's ``name:``: results are keyed by that name and the
    packaged ``orin_agx`` is the FP16 baseline, so an edited copy under the same name would silently
    replace it. Every error is one :class:`~qmc_edge.errors.QMCError` line naming the file."""
    text_spec = str(spec)
    packaged = packaged_names()
    if isinstance(spec, str) and spec in packaged:
        res = resources.files("qmc_edge") / "platforms" / f"{spec}.yaml"
        label, raw, user = f"{spec}.yaml", res.read_text(encoding="utf-8"), None
    else:
        p = Path(text_spec).expanduser()
        if not (isinstance(spec, Path) or p.suffix in (".yaml", ".yml") or "/" in text_spec or p.exists()):
            raise QMCError(f"unknown platform {text_spec!r}; use a YAML file path or one of: {', '.join(packaged)}")
        label, raw, user = text_spec, _read_user_file(p, text_spec), p
    try:
        data = yaml.load(raw, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise QMCError(f"platform {label}: not valid YAML ({_yaml_problem(exc)})") from None
    except RecursionError:
        raise QMCError(f"platform {label}: nested too deeply to be a platform file") from None
    if user is not None and isinstance(data, dict):
        name = data.get("name")
        if isinstance(name, str) and name in packaged and not _is_packaged_file(user, name):
            raise QMCError(
                f"platform {label}: name {name!r} is taken by a packaged platform, which this file must not "
                f"replace (orin_agx is the FP16 baseline); rename the `name:` field, e.g. to {name}_custom"
            )
    return parse_platform(data, label)
