"""Sweep spec files: models x method configurations x evaluations x platforms, validated like every
other data file of the project (one line naming the file and the field on any error).

A spec names models, methods (explicit spec texts and/or grids: a method with lists of option values,
expanded as their product), the evaluation (perplexity windows and context, tasks and their limit,
seeds) and the deployment platforms. Each (model, method configuration) is one *point*; its seeds run
inside it, so a quantization is reused across seeds and evaluations.

Example (``qmc sweep --example`` prints it)::

    name: smollm2-3bit
    models: [embedded]
    methods: [fp, rtn4]
    grids:
      - method: qmc
        options: {bits: [2, 3], rho: [0.005, 0.01]}
    eval:
      perplexity: {context: 1024, windows: 4}
      tasks: {names: [arc_easy], limit: 100}
      seeds: 2
    platforms: [orin_agx, qmc_hetero]
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qmc_edge.datafile import parse_yaml_model, read_user_file
from qmc_edge.errors import QMCError
from qmc_edge.methods.registry import LEGACY_OPTIONS
from qmc_edge.provenance import RESULTS_VERSION

EMBEDDED = "embedded"

EXAMPLE = __doc__.split("::\n\n", 1)[1].rstrip() + "\n"
EXAMPLE = "\n".join(line[4:] for line in EXAMPLE.splitlines()) + "\n"


#: Bounds on what a spec can ask for: beyond them a spec is a typo or an attack, not a study.
MAX_POINTS = 10_000  # method configurations x models
MAX_SEEDS = 1_000
MAX_VALUES = 1_000  # values of one grid option


class Grid(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    options: dict[str, list[object]] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _non_empty(cls, v: dict[str, list[object]]) -> dict[str, list[object]]:
        for k, vals in v.items():
            if not vals:
                raise ValueError(f"option {k!r} has an empty list of values")
            if len(vals) > MAX_VALUES:
                raise ValueError(f"option {k!r} has {len(vals)} values; at most {MAX_VALUES}")
            for x in vals:
                if x is not None and not isinstance(x, bool | int | float | str):
                    raise ValueError(f"option {k!r}: a value must be a number, a word or null, got {type(x).__name__}")
                if isinstance(x, str) and any(c in x for c in ",=:"):
                    raise ValueError(f"option {k!r}: value {x!r} holds , = or : (it would set other options)")
        return v


class Perplexity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    context: int = Field(2048, ge=8)
    windows: int | None = Field(None, ge=1, description="windows of context tokens; none = the whole text")


class Tasks(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    names: list[str] = Field(min_length=1)
    limit: int | None = Field(None, ge=1)


class Eval(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    perplexity: Perplexity | None = Perplexity()
    tasks: Tasks | None = None
    seeds: int | list[int] = 3

    @field_validator("seeds", mode="before")
    @classmethod
    def _no_bool(cls, v: object) -> object:
        if isinstance(v, bool) or (isinstance(v, list) and any(isinstance(x, bool) for x in v)):
            raise ValueError("must be a number of seeds or a list of seeds, not true/false")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be >= 1 (or a list of seeds)")
        if (v if isinstance(v, int) else len(v)) > MAX_SEEDS:
            raise ValueError(f"at most {MAX_SEEDS} seeds")
        if isinstance(v, list) and (not v or len(set(v)) != len(v) or any(s < 0 for s in v)):
            raise ValueError("a list of seeds must be non-empty, distinct and >= 0")
        return v

    @property
    def seed_list(self) -> tuple[int, ...]:
        return tuple(range(self.seeds)) if isinstance(self.seeds, int) else tuple(self.seeds)

    @model_validator(mode="after")
    def _something(self) -> Eval:
        if self.perplexity is None and self.tasks is None:
            raise ValueError("evaluates nothing; give perplexity and/or tasks")
        return self


class WorkloadSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_len: int = Field(512, ge=1)
    gen_len: int = Field(128, ge=1)


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    models: list[str] = Field(min_length=1)
    methods: list[str] = Field(default_factory=list)
    grids: list[Grid] = Field(default_factory=list)
    eval: Eval = Eval()
    platforms: list[str] = Field(default_factory=lambda: ["orin_agx", "qmc_hetero"])
    workload: WorkloadSpec = WorkloadSpec()

    @model_validator(mode="after")
    def _has_methods(self) -> SweepSpec:
        if not self.methods and not self.grids:
            raise ValueError("names no method; give methods: [...] and/or grids: [...]")
        n = len(self.methods) + sum(math.prod(len(v) for v in g.options.values()) for g in self.grids)
        if n * len(self.models) > MAX_POINTS:
            raise ValueError(
                f"asks for {n * len(self.models):,} points (models x configurations); at most {MAX_POINTS:,}: "
                "split it into several sweeps"
            )
        return self


@dataclass(frozen=True)
class Point:
    """One (model, method configuration): the unit of work and of resumption."""

    model: str
    method_text: str
    spec: object  # MethodSpec
    key: str


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """A sweep spec file, validated, with its platforms loaded (so a bad one fails a --dry-run too)."""
    from qmc_edge.deploy.platform import load_platform

    shown = str(path)
    text = read_user_file(Path(path), shown, "sweep spec", "write one like `qmc sweep --example`")
    hint = "must be a mapping (name:, models:, methods:, ...); see --example"
    spec = parse_yaml_model(text, "sweep spec", shown, SweepSpec, hint)
    for name in spec.platforms:
        try:
            load_platform(name)
        except QMCError as exc:
            raise QMCError(f"sweep spec {shown}: platforms: {exc}") from None
    return spec


def _option_text(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "none" if v is None else str(v)


def method_texts(spec: SweepSpec) -> list[str]:
    """Every method configuration, explicit ones first, then each grid's product, without repeats."""
    out = list(spec.methods)
    for g in spec.grids:
        base, sep, fixed = g.method.partition(":")
        keys = list(g.options)
        for combo in itertools.product(*(g.options[k] for k in keys)):
            opts = [fixed] if sep and fixed else []
            # A null value is the option's default (left out: method texts have no null).
            opts += [f"{k}={_option_text(v)}" for k, v in zip(keys, combo, strict=True) if v is not None]
            out.append(base + (":" + ",".join(opts) if opts else ""))
    return list(dict.fromkeys(out))


def _file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (about 1 s per GB): the key must not depend on where or when the
    file was written, so a store moves between machines and a re-downloaded identical model is done."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


_DIGESTS: dict[tuple[str, int, int], str] = {}
_MODEL_FILES = (".json", ".safetensors", ".bin", ".gguf", ".model", ".txt")


def model_identity(model: str) -> dict:
    """What identifies a model's weights for the key: the name, size and SHA-256 of its file (or of
    every weight, config and tokenizer file of its folder), or a hub id as written. Paths and times are
    left out: the same bytes are the same model on every machine."""
    from qmc_edge.model.loading import embedded_gguf

    p = embedded_gguf() if model == EMBEDDED else Path(model).expanduser()
    if p.is_file():
        return {"file": p.name, "bytes": p.stat().st_size, "sha256": _file_digest(p)}
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in _MODEL_FILES)
        return {"folder": [(f.name, f.stat().st_size, _file_digest(f)) for f in files]}
    return {"hub_id": model}


def method_identity(ms) -> dict:
    """The method and the options it sets away from their defaults. Defaults are the version's (the
    version is in the key), so a new option whose default keeps today's behaviour leaves every
    existing key, and the results stored under it, valid. A renamed option keys under the name it
    was stored with (:data:`~qmc_edge.methods.registry.LEGACY_OPTIONS`), for the same reason."""
    stored_as = {new: old for old, new in LEGACY_OPTIONS.items()}
    return {"method": ms.method, **{stored_as.get(k, k): v for k, v in ms.model_dump(exclude_defaults=True).items()}}


def point_key(model_id: dict, method_dump: dict, spec: SweepSpec) -> str:
    """Hash of everything that changes a point's result: the model's identity, the method and every
    option it sets away from its default (:func:`method_identity`), the evaluation settings and seeds,
    the platforms and workload, and the qmc-edge version. The device the model runs on is recorded in
    each row (``machine``) but is not in the key: CPU and GPU results agree to float rounding, so a
    sweep started on one machine resumes on another."""
    from qmc_edge import __version__

    payload = {
        "model": model_id,
        "method": method_dump,
        "eval": spec.eval.model_dump(),
        "seeds": list(spec.eval.seed_list),
        "platforms": spec.platforms,
        "workload": spec.workload.model_dump(),
        "qmc_edge": __version__,
    }
    if RESULTS_VERSION > 1:  # version 1 keys as the store was first written, so its points stay valid
        payload["results_version"] = RESULTS_VERSION
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def expand(spec: SweepSpec) -> list[Point]:
    """All points, ordered by model (each model loads once); bad method texts fail before any work."""
    from qmc_edge.methods import parse_method

    parsed = []
    for t in method_texts(spec):
        try:
            parsed.append((t, parse_method(t)))
        except ValueError as exc:
            raise QMCError(f"sweep {spec.name}: method {t!r}: {exc}") from None
    names: dict[str, str] = {}
    for _, ms in parsed:  # two configurations under one name would be rows no one can tell apart
        ident = json.dumps(method_identity(ms), sort_keys=True, default=str)
        if names.setdefault(ms.name, ident) != ident:
            raise QMCError(f"sweep {spec.name}: two configurations are both named {ms.name!r}; give each its own label")
    points: dict[str, Point] = {}
    for m in spec.models:
        mid = model_identity(m)
        for t, ms in parsed:
            key = point_key(mid, method_identity(ms), spec)
            points.setdefault(key, Point(m, t, ms, key))  # two texts for one configuration: one point
    return list(points.values())
