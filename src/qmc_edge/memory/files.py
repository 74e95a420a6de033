"""Cell-model files: the ReRAM level tables, their time dependence, read noise and write-verify, as data.

A cell-model file is YAML read and validated by the project's one data-file loader
(:mod:`qmc_edge.datafile`, as platforms, sweep specs and ledgers are): every figure is written
``{value: X, source: "..."}`` and a number without its source is refused. The shipped files live in
``qmc_edge/cell_models/`` (one per device family); a user copies one, edits it, gives it another
``name:`` and passes its path. A file may not take the ``name:`` of a shipped cell model: results name
the cell model they were computed with, and an edited copy under a shipped name would silently pass for
the original.

What a file holds (normalised conductance: 0 = lowest state, 1 = highest):

* ``name``, ``description``, ``technology``, ``source`` (where the level tables come from, in one line).
* ``conductance``: the window ``g_min_uS``..``g_max_uS`` that the normalised scale stands for; only
  used to convert figures published in microsiemens (relaxation, read noise) to that scale.
* ``levels``: for each bits-per-cell offered (1..4), ``2**bits`` levels, each ``{mean, sigma}``;
  means strictly increasing in [0, 1], sigmas > 0. This is the distribution read ``fresh_at_s``
  after programming.
* ``retention`` (optional): level-independent log-time relaxation (see :class:`Retention`).
* ``read_noise`` (optional): per-read noise sigma as a function of conductance and time.
* ``write_verify`` (optional): how much a tighter program-and-verify narrows the programmed levels.

Every error is one :class:`~qmc_edge.errors.QMCError` line naming the file and the field, e.g.
``cell model my.yaml: levels.3.2.sigma: must be > 0``.

:func:`parse_age` reads human ages (``1s``, ``10min``, ``1h``, ``1d``, ``1w``, ``1y``, ``10y``).
"""

from __future__ import annotations

import math
import numbers
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from qmc_edge.datafile import (
    DataFiles,
    Figure,
    NonNegative,
    Positive,
    Sourced,
    positive,
    sourced,
)

#: The cell model that :func:`qmc_edge.memory.models.reram` uses unless told otherwise.
DEFAULT_CELL_MODEL = "nvmexplorer_rram"
#: Bits per cell a file may describe.
MAX_BITS_PER_CELL = 4


def _unit_interval(f: Figure) -> Figure:
    if not 0.0 <= f.value <= 1.0:
        raise ValueError(f"must be in [0, 1] (normalised conductance), got {f.value:g}")
    return f


def _sigma(f: Figure) -> Figure:
    positive(f)
    if f.value > 1.0:
        raise ValueError(f"must be <= 1 (normalised conductance: the whole window), got {f.value:g}")
    return f


Fig = Sourced
Pos = Positive
NonNeg = NonNegative
Unit = Annotated[Figure, *sourced(_unit_interval)]
Sigma = Annotated[Figure, *sourced(_sigma)]


class Level(BaseModel):
    """One programmed level: mean and sigma in normalised conductance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: Unit
    sigma: Sigma


#: Below this a conductance window is not in microsiemens (8e-6 is 8 uS written in siemens).
MIN_WINDOW_uS = 0.1


class Conductance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    g_min_uS: Pos
    g_max_uS: Pos

    @model_validator(mode="after")
    def _check(self) -> Conductance:
        if self.g_max_uS.value < MIN_WINDOW_uS:
            raise ValueError(
                f"g_max_uS is {self.g_max_uS.value:g}: the window is in microsiemens (a ReRAM cell conducts about "
                f"1-500 uS); a value below {MIN_WINDOW_uS:g} looks like siemens"
            )
        if self.g_max_uS.value <= self.g_min_uS.value:
            raise ValueError(f"g_max_uS ({self.g_max_uS.value:g}) must be above g_min_uS ({self.g_min_uS.value:g})")
        return self

    @property
    def range_uS(self) -> float:
        return self.g_max_uS.value - self.g_min_uS.value


class Retention(BaseModel):
    """Level-independent relaxation after programming, fitted in log time (t in seconds)::

        mean_i(t)    = mean_i(t0) + m * ln(t / t0)
        s(t)         = s1 + a * ln(t)                      (relaxation spread, uS)
        sigma_i(t)^2 = sigma_i(t0)^2 + s(t)^2 - s(t0)^2

    for t > t0 = ``fresh_at_s``; for t <= t0 the level table holds unchanged. m, s1 and a are in uS and
    are divided by the conductance window to reach the normalised scale. Ages past ``measured_to_s``
    are extrapolations of the fit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fresh_at_s: Pos
    mean_shift_uS_per_ln_s: Fig
    sigma_uS_at_1s: NonNeg
    sigma_uS_per_ln_s: NonNeg
    measured_to_s: Pos

    @model_validator(mode="after")
    def _check(self) -> Retention:
        s0 = self.sigma_uS_at_1s.value + self.sigma_uS_per_ln_s.value * math.log(self.fresh_at_s.value)
        if s0 < 0:
            raise ValueError(
                f"the relaxation spread at fresh_at_s is negative ({s0:g} uS): raise fresh_at_s or sigma_uS_at_1s"
            )
        if self.measured_to_s.value < self.fresh_at_s.value:
            raise ValueError("measured_to_s must be >= fresh_at_s")
        return self


class ReadNoise(BaseModel):
    """Per-read noise: sigma(g, t) = k * log10(g / 1 uS) * sqrt(ln((t + t_read) / (2 t_read))) uS."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k_uS: Pos
    t_read_s: Pos


class WriteVerify(BaseModel):
    """Programming sigma = offset + slope * g (uS) at a loose and a tight acceptance range; the
    write-verify factor is tight / loose at ``at_g_uS``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    loose_offset_uS: NonNeg
    loose_slope: NonNeg
    tight_offset_uS: NonNeg
    tight_slope: NonNeg
    at_g_uS: Pos

    @property
    def factor(self) -> float:
        g = self.at_g_uS.value
        return (self.tight_offset_uS.value + self.tight_slope.value * g) / (
            self.loose_offset_uS.value + self.loose_slope.value * g
        )

    @model_validator(mode="after")
    def _check(self) -> WriteVerify:
        g = self.at_g_uS.value
        loose = self.loose_offset_uS.value + self.loose_slope.value * g
        tight = self.tight_offset_uS.value + self.tight_slope.value * g
        if loose <= 0 or tight <= 0:
            raise ValueError(
                f"the programming sigmas at at_g_uS = {g:g} must be > 0 (loose {loose:g}, tight {tight:g})"
            )
        if tight > loose:
            raise ValueError(f"the tight sigma ({tight:g} uS) must not exceed the loose one ({loose:g} uS) at {g:g} uS")
        return self


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


class CellModelFile(BaseModel):
    """A parsed, validated cell-model file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    technology: str
    source: str
    conductance: Conductance
    levels: dict[int, list[Level]]
    retention: Retention | None = None
    read_noise: ReadNoise | None = None
    write_verify: WriteVerify | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} is not a cell-model name: use letters, digits, _ . + - (at most 64)")
        return v

    @field_validator("levels", mode="before")
    @classmethod
    def _level_keys(cls, v: object) -> object:
        if isinstance(v, dict):
            for k in v:
                if isinstance(k, bool) or not isinstance(k, int | str) or str(k).strip() not in _BITS_KEYS:
                    raise ValueError(f"key {k!r}: bits per cell must be 1 to {MAX_BITS_PER_CELL}")
            seen: dict[str, object] = {}
            for k in v:  # 3: and '3': are one table given twice (the second would silently win)
                if str(k).strip() in seen:
                    raise ValueError(f"{k!r} and {seen[str(k).strip()]!r} are the same bits per cell; give it once")
                seen[str(k).strip()] = k
            if not v:
                raise ValueError("no level table; give at least one, e.g. `3:` with 8 levels")
        return v

    @field_validator("levels")
    @classmethod
    def _level_tables(cls, v: dict[int, list[Level]]) -> dict[int, list[Level]]:
        for bits, table in v.items():
            if len(table) != 2**bits:
                raise ValueError(f"table {bits} has {len(table)} levels; {bits} bits per cell need {2**bits}")
            for i in range(1, len(table)):
                lo, hi = table[i - 1].mean.value, table[i].mean.value
                if not hi > lo:
                    raise ValueError(
                        f"table {bits}: means must increase from level to level: level {i} ({hi:g}) "
                        f"is not above level {i - 1} ({lo:g})"
                    )
        return dict(sorted(v.items()))

    @property
    def bits_per_cell(self) -> list[int]:
        return sorted(self.levels)

    def table(self, bits: int) -> tuple[tuple[float, float], ...]:
        """``((mean, sigma), ...)`` for ``bits`` per cell, as :class:`~qmc_edge.memory.models.GaussianLevelReRAM`
        takes it."""
        if bits not in self.levels:
            raise ValueError(
                f"bits per cell must be one of {', '.join(map(str, self.bits_per_cell))} for cell model "
                f"{self.name}, got {bits}"
            )
        return tuple((lv.mean.value, lv.sigma.value) for lv in self.levels[bits])

    @field_validator("description", "technology", "source")
    @classmethod
    def _text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("is empty")
        return v


_BITS_KEYS = {str(b) for b in range(1, MAX_BITS_PER_CELL + 1)}


# ---------------------------------------------------------------------------- loading
FILES: DataFiles[CellModelFile] = DataFiles(
    kind="cell model",
    folder="cell_models",
    model=CellModelFile,
    empty_hint="write a mapping with name, description, technology, source, conductance and levels (copy a "
    "shipped cell-model file)",
    shape_hint="the file must be a mapping of fields (name:, levels:, ...)",
    shipped_word="shipped",
    path_word="a cell-model YAML file path",
)


def shipped_cell_models() -> list[str]:
    """Names of the cell-model files shipped with the package."""
    return FILES.names()


def parse_cell_model(data: object, label: str) -> CellModelFile:
    """Validate already-parsed YAML; errors are one line naming ``label`` and the bad field."""
    return FILES.parse(data, label)


def load_cell_model(spec: str | Path | CellModelFile = DEFAULT_CELL_MODEL) -> CellModelFile:
    """A shipped cell model by name (``nvmexplorer_rram``...) or a cell-model YAML file by path.

    A string naming a shipped cell model is always the shipped one (write ``./nvmexplorer_rram`` for a file
    of that name); a :class:`~pathlib.Path`, a ``.yaml``/``.yml`` name or any other existing path is a
    file, whose ``name:`` must not be a shipped cell model's. An already-parsed :class:`CellModelFile` is
    returned as it is. Every error is one :class:`~qmc_edge.errors.QMCError` line naming the file."""
    if isinstance(spec, CellModelFile):
        return spec
    return FILES.load(spec)


# ---------------------------------------------------------------------------- ages
_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "y": 365.25 * 86400.0,
}
_AGE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-z]*)\s*$")
#: 1000 years: far past any retention figure, and keeps ln(t) finite and small.
MAX_AGE_S = 1000 * _UNITS["y"]


def parse_age(age: str | float | int) -> float:
    """Seconds since programming from ``"1s"``, ``"10min"``, ``"1h"``, ``"1d"``, ``"1w"``, ``"1y"``,
    ``"10y"`` or plain seconds (``3600``, ``"3600"``); a year is 365.25 days. Bad input is a one-line
    :class:`ValueError`."""
    if isinstance(age, bool):
        raise ValueError(f"age must be a time such as 1s, 10min, 1h, 1d, 1w, 1y or seconds, got {age!r}")
    if isinstance(age, numbers.Real):
        seconds = float(age)
        shown = repr(age)
    elif isinstance(age, str):
        m = _AGE.match(age.lower())
        unit = m.group(2) if m else ""
        if m is None or unit not in _UNITS and unit != "":
            raise ValueError(
                f"age {age.strip()!r} is not a time: use a number and one of s, min, h, d, w, y "
                "(e.g. 1s, 10min, 1h, 1d, 1w, 1y, 10y) or plain seconds"
            )
        seconds = float(m.group(1)) * _UNITS.get(unit, 1.0)
        shown = repr(age.strip())
    else:
        raise ValueError(f"age must be a time such as 1d or a number of seconds, got {type(age).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"age {shown} must be a finite time >= 0")
    if seconds > MAX_AGE_S:
        raise ValueError(f"age {shown} is beyond 1000 years; no retention figure reaches that far")
    return seconds


def format_age(seconds: float) -> str:
    """A short human label for an age in seconds (``1d``, ``10y``, ``90s``)."""
    for unit in ("y", "w", "d", "h", "min"):
        n = seconds / _UNITS[unit]
        if n >= 1 and abs(n - round(n)) < 1e-9 * max(1.0, n):
            return f"{round(n)}{unit}"
    return f"{seconds:g}s"
