"""The one loader for the project's validated data files: platforms, memory cell-model files, sweep specs
and claims ledgers.

Every such file is YAML that people edit by hand, and every figure in it must say where it comes
from, so all four kinds get the same guarantees from here, in one place:

* reading: a regular UTF-8 text file of at most :data:`MAX_FILE_BYTES` (a directory, a FIFO, binary
  data, a huge file or an unreadable path is one line naming the file and the fix);
* parsing: PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML silently keeps
  the last one) and refusing structures nested too deeply;
* validation: a pydantic model; the first error becomes one line naming the file, the field's YAML
  path and what is wrong (``platform my.yaml: tiers.reram.read_pj_per_bit: must be > 0``);
* figures: :class:`Figure` (``{value, source}``, finite, within :data:`MAX_FIGURE`) and
  :class:`RangedFigure` (with an optional ``range``); a bare number without its source is refused;
* shipped files: :class:`DataFiles` finds the files a kind ships in the package, loads one by name
  or a user's file by path, and refuses a user file that takes a shipped file's ``name:`` (results
  are keyed by that name, so an edited copy would pass for the original).

Written here, not taken from a library, because what is needed is the combination (unique keys,
sourced figures, one-line errors with YAML paths) rather than any one part; the parts are PyYAML's
and pydantic's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Generic, TypeVar

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
#: A data file is a few kB; anything this large is the wrong file.
MAX_FILE_BYTES = 10 * 2**20


# ---------------------------------------------------------------------------- figures
def need_source(v: object) -> object:
    """Before validation of a figure: a bare number is refused with the form to write instead."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        raise ValueError(f"a bare number ({v}) has no source; write {{value: {v}, source: '...'}}")
    return v


def no_bool(v: object) -> object:
    """YAML's ``true`` is not a number (pydantic would read it as 1)."""
    if isinstance(v, bool):
        raise ValueError(f"must be a number, got {str(v).lower()}")
    return v


def check_number(what: str, x: float) -> None:
    """A figure's number is finite and within the sanity bound."""
    if not math.isfinite(x):  # allow_inf_nan=False already refuses these; kept as a guard
        raise ValueError(f"{what} must be a finite number, got {x}")
    if abs(x) > MAX_FIGURE:
        raise ValueError(
            f"{what} {x:g} is beyond the sanity bound {MAX_FIGURE:g} (in the field's own unit); check the exponent"
        )


class Figure(BaseModel):
    """One number and where it comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    value: float
    source: str

    @field_validator("value", mode="before")
    @classmethod
    def _value_not_bool(cls, v: object) -> object:
        return no_bool(v)

    @model_validator(mode="after")
    def _check(self) -> Figure:
        if not self.source.strip():
            raise ValueError("source is empty; say where the number comes from")
        check_number("value", self.value)
        return self

    @property
    def low(self) -> float:
        """The smallest value the figure may take (its value, or its range's low end)."""
        return self.value


class RangedFigure(Figure):
    """A figure with, optionally, the range that its sources span (``range: [lo, hi]``)."""

    range: tuple[float, float] | None = None

    @field_validator("range", mode="before")
    @classmethod
    def _range_not_bool(cls, v: object) -> object:
        if isinstance(v, list | tuple):
            for x in v:
                no_bool(x)
        return v

    @model_validator(mode="after")
    def _check_range(self) -> RangedFigure:
        if self.range is not None:
            for x in self.range:
                check_number("range", x)
            lo, hi = self.range
            if not lo <= self.value <= hi:
                raise ValueError(f"value {self.value} is outside its range [{lo}, {hi}]")
        return self

    @property
    def low(self) -> float:
        return self.value if self.range is None else self.range[0]


F = TypeVar("F", bound=Figure)


def positive(f: F) -> F:
    """After validation: > 0 over the whole range, and not below :data:`MIN_POSITIVE`."""
    if f.value <= 0 or f.low <= 0:
        raise ValueError("must be > 0")
    if f.low < MIN_POSITIVE:
        raise ValueError(f"{f.low:g} is below the sanity bound {MIN_POSITIVE:g} (in the field's own unit)")
    return f


def non_negative(f: F) -> F:
    if f.value < 0 or f.low < 0:
        raise ValueError("must be >= 0")
    return f


def sourced(*after: Callable) -> tuple:
    """Annotated metadata of a figure field: a source required, then the checks in ``after``."""
    return (BeforeValidator(need_source), *(AfterValidator(a) for a in after))


Sourced = Annotated[Figure, BeforeValidator(need_source)]
Positive = Annotated[Figure, *sourced(positive)]
NonNegative = Annotated[Figure, *sourced(non_negative)]


# ---------------------------------------------------------------------------- text and YAML
def one_line(text: object) -> str:
    return " ".join(str(text).split())


class _DuplicateKeyError(yaml.YAMLError):
    pass


class UniqueKeyLoader(yaml.SafeLoader):
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


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What PyYAML found wrong, with its line and column, as one line."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return one_line(f"{exc.problem}{where}")
    lines = str(exc).strip().splitlines()
    return one_line(lines[0]) if lines else type(exc).__name__


def parse_yaml(text: str, kind: str, label: str) -> object:
    """YAML text -> Python data (unique keys), or one QMCError line naming ``kind label``."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise QMCError(f"{kind} {label}: not valid YAML ({yaml_problem(exc)})") from None
    except RecursionError:
        raise QMCError(f"{kind} {label}: nested too deeply to be a {kind} file") from None


def read_user_file(p: Path, shown: str, kind: str, hint: str) -> str:
    """The text of a user's data file of ``kind`` (shown as ``shown``), or one QMCError line; ``hint``
    names what to pass instead (the shipped files, or how to write one)."""
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
            f"{kind} {shown}: cannot read it ({one_line(exc.strerror or exc)}); check the path and its permissions"
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


# ---------------------------------------------------------------------------- validation
def _loc(err: dict) -> str:
    parts = [str(x) for x in err["loc"]]
    # Drop pydantic's internal steps (function-after[...], value) so the path is the YAML's.
    parts = [p for p in parts if not p.startswith(("function-", "tagged-union"))]
    while parts and parts[-1] in ("value",):
        parts.pop()
    return ".".join(parts) or "(top level)"


def validation_line(exc: ValidationError, where: str) -> str:
    """The first validation error of a data file as one line: where, the field's YAML path, what is wrong."""
    err = exc.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "missing (required)"
    elif err["type"] == "extra_forbidden":
        msg = "unknown field; check the spelling"
    elif err["type"] == "finite_number":
        msg = f"must be a finite number, got {err.get('input')!r}"
    return one_line(f"{where}: {_loc(err)}: {msg}")


M = TypeVar("M", bound=BaseModel)


def validate(data: object, kind: str, label: str, model: type[M], empty_hint: str, shape_hint: str) -> M:
    """Already-parsed data -> ``model``; every error is one line naming ``kind label`` and the field.
    ``empty_hint`` says what an empty file should hold, ``shape_hint`` what the top level must be."""
    if data is None:
        raise QMCError(f"{kind} {label}: the file is empty; {empty_hint}")
    if not isinstance(data, dict):
        raise QMCError(f"{kind} {label}: {shape_hint}, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise QMCError(validation_line(exc, f"{kind} {label}")) from None
    except (RecursionError, OverflowError) as exc:  # self-referencing YAML aliases, integers beyond float
        raise QMCError(f"{kind} {label}: cannot be validated ({type(exc).__name__}); simplify the file") from None


def parse_yaml_model(text: str, kind: str, label: str, model: type[M], shape_hint: str) -> M:
    """A data file's text -> a validated pydantic ``model``; every error is one line naming ``kind
    label`` (bad YAML, a duplicate key, not a mapping, or the first invalid field)."""
    data = parse_yaml(text, kind, label)
    if not isinstance(data, dict):
        raise QMCError(f"{kind} {label}: {shape_hint}")
    return validate(data, kind, label, model, shape_hint, shape_hint)


# ---------------------------------------------------------------------------- shipped files
@dataclass(frozen=True)
class DataFiles(Generic[M]):
    """One kind of data file: the ones shipped in the package folder ``folder`` (``<name>.yaml``,
    whose ``name:`` is the file name), and users' files by path, validated as ``model``."""

    kind: str  # "platform", "device": the first word of every error line
    folder: str  # package folder of the shipped files
    model: type[M]
    empty_hint: str  # what an empty file should hold
    shape_hint: str  # what the top level must be
    shipped_word: str = "packaged"  # how the shipped files are called in messages
    replace_note: str = ""  # why a user file must not replace a shipped one, in parentheses
    path_word: str = "a YAML file path"  # what to give instead of an unknown name

    def _root(self):
        return resources.files("qmc_edge") / self.folder

    def names(self) -> list[str]:
        """Names of the shipped files."""
        return sorted(p.name.removesuffix(".yaml") for p in self._root().iterdir() if p.name.endswith(".yaml"))

    def hint(self) -> str:
        return f"{self.shipped_word} {self.kind}s: {', '.join(self.names())}"

    def parse(self, data: object, label: str) -> M:
        """Validate already-parsed YAML; errors are one line naming ``label`` and the bad field."""
        return validate(data, self.kind, label, self.model, self.empty_hint, self.shape_hint)

    def is_shipped_file(self, p: Path, name: str) -> bool:
        try:
            return Path(str(self._root() / f"{name}.yaml")).resolve() == p.resolve()
        except OSError:
            return False

    def load_shipped(self, name: str) -> M:
        label = f"{name}.yaml"
        data = parse_yaml((self._root() / label).read_text(encoding="utf-8"), self.kind, label)
        got = self.parse(data, label)
        if getattr(got, "name", name) != name:
            raise QMCError(
                f"{self.kind} {label}: name {got.name!r} differs from the file name; the shipped file is damaged"
            )
        return got

    def load(self, spec: str | Path) -> M:
        """A shipped file by name, or a user's file by path. A string naming a shipped file is always
        the shipped one (write ``./name`` for a file of that name); a :class:`~pathlib.Path`, a
        ``.yaml``/``.yml`` name, anything with a slash or an existing path is a file, whose ``name:``
        must not be a shipped file's. Every error is one :class:`~qmc_edge.errors.QMCError` line."""
        if isinstance(spec, str) and spec in self.names():
            return _shipped(self, spec)
        if not self.is_path(spec):
            raise QMCError(
                f"unknown {self.kind} {str(spec)!r}; use {self.path_word} or one of: {', '.join(self.names())}"
            )
        return self.load_user(spec)

    def is_path(self, spec: str | Path) -> bool:
        """Whether ``spec`` means a file: a Path, a .yaml/.yml name, anything with a slash or that exists."""
        text = str(spec)
        p = Path(text).expanduser()
        return isinstance(spec, Path) or p.suffix in (".yaml", ".yml") or "/" in text or p.exists()

    def load_user(self, spec: str | Path) -> M:
        """A user's file by path; its ``name:`` must not be a shipped file's."""
        text = str(spec)
        p = Path(text).expanduser()
        data = parse_yaml(read_user_file(p, text, self.kind, self.hint()), self.kind, text)
        if isinstance(data, dict):
            name = data.get("name")
            if isinstance(name, str) and name in self.names() and not self.is_shipped_file(p, name):
                raise QMCError(
                    f"{self.kind} {text}: name {name!r} is taken by a {self.shipped_word} {self.kind}, which this "
                    f"file must not replace{self.replace_note}; rename the `name:` field, e.g. to {name}_custom"
                )
        return self.parse(data, text)


@lru_cache(maxsize=64)
def _shipped(files: DataFiles, name: str):
    """A shipped file, parsed once per process (they are read-only package data)."""
    return files.load_shipped(name)
