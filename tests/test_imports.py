"""The package's import graph has no cycle: every `import` and `from ... import` in src/qmc_edge,
at module level or inside functions (lazy imports count too), except under `if TYPE_CHECKING:`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "qmc_edge"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in (SRC / PKG).rglob("*.py"):
        rel = p.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            t = node.test
            name = t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                for sub in node.body:
                    skip.update(id(n) for n in ast.walk(sub))
    return skip


def import_graph(type_only: bool = False) -> dict[str, set[str]]:
    """Module -> the modules it imports; with ``type_only``, imports under TYPE_CHECKING count too."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = set() if type_only else _type_checking_nodes(tree)
        is_pkg = path.name == "__init__.py"
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    root = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    root = node.module or ""
                targets = [root] + [f"{root}.{a.name}" for a in node.names]
            for t in targets:
                if t in mods and t != mod:
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_finder_sees_a_cycle():
    """The checker itself: a two-module cycle and a self-consistent graph."""
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_resolves_relative_imports():
    g = import_graph()
    assert "qmc_edge.methods.base" in g["qmc_edge.methods.rtn"]
    assert "qmc_edge.errors" in g["qmc_edge.model.loading"]
    assert "qmc_edge.artifact.load" in g["qmc_edge.model.loading"]  # lazy import, still an edge


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    if cycle:
        pytest.fail("import cycle: " + " -> ".join(cycle))


# The layering: every package may import the package root's modules and the packages before it here,
# never one after it (the package docstrings say the same in words). Type-only imports count.
LAYERS: tuple[str, ...] = (
    "memory",  # cells, cell-model files, ReRAM and MRAM fault models, ECC, the counter RNG
    "quant",  # the quantized tensor and model, grids, clip search, GPTQ, budget, the QMC stages
    "libraries",  # adapters to llm-compressor and HQQ
    "methods",  # the method registry, options, and the whole-model driver
    "tasks",  # zero-shot task data and scoring
    "artifact",  # export and load of quantized models
    "model",  # loading models, perplexity, the evaluation runner
    "deploy",  # platforms and the system model
    "sweep",  # specs, the results store, runs, reports
    "claims",  # the paper's claims ledger
    "cli",  # the command line
)
ROOT_MODULES = {
    "__init__",
    "errors",
    "fileio",
    "jsonio",
    "datafile",
    "parallel",
    "torch_device",
    "loaded",
    "provenance",
}
TOP_MODULES = {"__main__"}  # runs the command line


def _layer(mod: str) -> int:
    """Rank of module ``mod`` (qmc_edge.x.y): root modules 0, packages by LAYERS, the entry point last."""
    parts = mod.split(".")[1:]
    if not parts:
        return 0
    if len(parts) == 1 and parts[0] in TOP_MODULES:
        return len(LAYERS) + 1
    if parts[0] in LAYERS:
        return LAYERS.index(parts[0]) + 1
    if len(parts) == 1 and parts[0] in ROOT_MODULES:
        return 0
    raise AssertionError(f"{mod} belongs to no layer: add its package to LAYERS or it to ROOT_MODULES")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in sorted(graph.items()):
        for dep in sorted(deps):
            if _layer(dep) > _layer(mod):
                bad.append(f"{mod} -> {dep}")
            elif _layer(dep) == 0 < _layer(mod) and dep.split(".")[-1] not in ROOT_MODULES and dep != "qmc_edge":
                bad.append(f"{mod} -> {dep}")
    return bad


def test_layering_checker_sees_an_upward_import():
    assert upward_imports({"qmc_edge.memory.cells": {"qmc_edge.quant.qtensor"}}) == [
        "qmc_edge.memory.cells -> qmc_edge.quant.qtensor"
    ]
    assert upward_imports({"qmc_edge.quant.qtensor": {"qmc_edge.memory.cells", "qmc_edge.errors"}}) == []


def test_every_import_goes_down_the_layers():
    bad = upward_imports(import_graph(type_only=True))
    assert not bad, "imports against the layering (tests/test_imports.py LAYERS):\n" + "\n".join(bad)


def test_no_import_cycles_type_only_included():
    cycle = find_cycle(import_graph(type_only=True))
    if cycle:
        pytest.fail("import cycle (type-only imports included): " + " -> ".join(cycle))


def test_root_holds_few_modules_and_no_module_names_collide():
    mods = _modules()
    root = [m for m in mods if m.count(".") == 1 and not (SRC / PKG / m.split(".")[1]).is_dir()]
    assert len(root) <= 10, f"{len(root)} modules at the package root: {sorted(root)}"
    leaves: dict[str, list[str]] = {}
    for m, path in mods.items():
        if path.name != "__init__.py":
            leaves.setdefault(path.stem, []).append(m)
    packages = {p.name for p in (SRC / PKG).rglob("*") if p.is_dir() and (p / "__init__.py").exists()}
    clash = {k: v for k, v in leaves.items() if len(v) > 1 or k in packages}
    assert not clash, f"module names used twice (or as a package): {clash}"


def private_imports() -> list[str]:
    """`from X import _name` where X is another module of the package: a private name used outside."""
    bad = []
    for mod, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith(PKG):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__") and node.module != mod:
                        bad.append(f"{mod}: from {node.module} import {a.name}")
    return bad


def test_no_module_imports_another_modules_private_names():
    bad = private_imports()
    assert not bad, "private names imported across modules (make them public or move them):\n" + "\n".join(bad)
