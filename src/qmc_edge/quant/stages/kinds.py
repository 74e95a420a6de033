"""The stage registry: one small registry per kind of QMC stage, as :mod:`qmc_edge.methods.registry` is
for methods.

QMC is a pipeline. Per model: a **config** stage decides each tensor's configuration (one fixed one,
or per tensor under a bit budget) and a **rounding** stage turns the tensors into codes (to nearest
each on its own, or GPTQ block by block). Per tensor, inside either rounding: an **outliers** stage
chooses the weights kept in MRAM, a **grid** stage fits the inliers' grid (and its clipping), and a
**levels** stage assigns codes to cell levels. A new stage is one module with one class and one
``@register_stage(kind, name)``; the method's options choose stages by name, so it composes with every
other stage without a new branch anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

#: The kinds of stage, in pipeline order.
KINDS: tuple[str, ...] = ("config", "rounding", "outliers", "grid", "levels")

_STAGES: dict[str, dict[str, type]] = {k: {} for k in KINDS}

T = TypeVar("T", bound=type)


def register_stage(kind: str, name: str) -> Callable[[T], T]:
    """Class decorator: make ``cls`` the stage ``name`` of ``kind``."""
    if kind not in _STAGES:
        raise ValueError(f"unknown stage kind {kind!r}; the kinds are: {', '.join(KINDS)}")
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"a stage name is a word (letters, digits, _), got {name!r}")

    def deco(cls: T) -> T:
        have = _STAGES[kind].get(name)
        if have is not None and have is not cls:
            raise ValueError(f"{kind} stage {name!r} is already registered by {have.__name__}")
        _STAGES[kind][name] = cls
        cls.stage_name = name
        return cls

    return deco


def unregister_stage(kind: str, name: str) -> None:
    """Remove a stage (for tests and plug-ins that register temporarily)."""
    _STAGES[kind].pop(name, None)


def stage_names(kind: str) -> list[str]:
    return list(_STAGES[kind])


def stage_class(kind: str, name: str) -> type:
    """The stage class ``name`` of ``kind``; ValueError with the known names otherwise."""
    try:
        return _STAGES[kind][name]
    except KeyError:
        raise ValueError(f"unknown {kind} stage {name!r}; use one of: {', '.join(_STAGES[kind])}") from None


def check_stage(kind: str, name: str) -> str:
    """``name`` if it is a registered stage of ``kind`` (for option validators), else ValueError."""
    stage_class(kind, name)
    return name
