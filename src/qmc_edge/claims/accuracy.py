"""The measured accuracy behind a ledger step: results files and stores searched for rows of exactly
the step's configuration (every option equal; options a row predates at their defaults; renamed
options read under today's names), on a model of the ledger's architecture.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from qmc_edge.errors import QMCError
from qmc_edge.methods.registry import current_options

#: Results-file model paths -> architecture (known_archs.yaml key) whose accuracy they measure.
MODEL_ARCH = (
    ("smollm2-135m", "smollm2-135m"),
    ("gemma-3-270m", "gemma-3-270m"),
    ("qwen2.5-coder-1.5b", "qwen2.5-1.5b"),
    ("qwen2.5-1.5b", "qwen2.5-1.5b"),
)

UPSTREAM_NOTE = "reference model already quantized upstream (GGUF); FP row = that dequantized reference"


# --------------------------------------------------------------------------------------- accuracy
def arch_of_model(model_path: str) -> str | None:
    low = str(model_path).lower()
    return next((a for key, a in MODEL_ARCH if key in low), None)


#: Options recorded by old results files for every method although only calibrated rounding reads them.
_UNUSED_WHEN_NONE = frozenset({"calib_samples", "calib_len"})


def spec_matches(row_spec: dict, spec) -> bool:
    """A results row measured ``spec``: same method, and every option equal, where an option the row
    does not record (written before it existed) must be at its default now. ``None`` is a value like
    any other (``age: None`` is fresh cells, not "any age")."""
    if not isinstance(row_spec, dict) or row_spec.get("method") != spec.method:
        return False
    row_spec = current_options(row_spec)
    fields = type(spec).model_fields
    for k, v in spec.model_dump().items():
        if k in ("method", "label") or (v is None and k in _UNUSED_WHEN_NONE):
            continue
        default = spec.implied.get(k, fields[k].default)
        if row_spec.get(k, default) != v:
            return False
    return True


def results_files(paths: Iterable[str | Path]) -> list[Path]:
    """Results JSON files and results stores (`qmc sweep` folders): a folder is a store when it has
    points/, else its JSON files are read."""
    from qmc_edge.sweep.tables import is_store

    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir() and is_store(p):
            out.append(p)
        elif p.is_dir():
            out += sorted(p.glob("*.json"))
        elif p.is_file():
            out.append(p)
        else:
            raise QMCError(f"results path not found: {p}; pass a results JSON file or a folder of them")
    return out


def _load_rows(path: Path) -> list[tuple[dict, list[dict]]]:
    """(payload, rows) of a results file, or of each (sweep, model) of a results store; parsed once per
    process while its content is the same (a ledger asks for the rows of every file once per step): a
    file is known by its bytes' digest, a store by the name, size and time of every point file."""
    try:
        if path.is_dir():
            pts = path / "points"
            key = tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in pts.iterdir()))
        else:
            key = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        key = None  # the uncached read reports the problem in one line
    return _read_rows(path, key)


@lru_cache(maxsize=256)
def _read_rows(path: Path, _content: object) -> list[tuple[dict, list[dict]]]:
    """:func:`_load_rows`, uncached. A file that cannot be read or is not JSON is an error naming it;
    JSON of another kind (a benchmark's summary, with no ``rows``) has no rows; a row whose accuracy
    fields have the wrong type is an error."""
    if path.is_dir():
        from qmc_edge.sweep.tables import payloads

        return [(d, d["rows"]) for d in payloads(path)]
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise QMCError(f"results file {path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    except json.JSONDecodeError as exc:
        raise QMCError(
            f"results file {path}: not JSON ({exc.msg} at line {exc.lineno}); pass a file written with --json"
        ) from None
    if not isinstance(d, dict) or "rows" not in d:
        return []
    if not isinstance(d["rows"], list) or not isinstance(d.get("model"), str):
        raise QMCError(
            f"results file {path}: 'rows' must be a list and 'model' a string; pass a file written with --json"
        )
    rows = [r for r in d["rows"] if isinstance(r, dict) and isinstance(r.get("spec"), dict)]
    for i, r in enumerate(rows):
        problem = _row_problem(r)
        if problem:
            raise QMCError(f"results file {path}: row {i} ({r.get('method', '?')}): {problem}")
    return [(d, rows)]


def _row_problem(r: dict) -> str | None:
    """What is wrong with the accuracy fields of one results row (None: nothing)."""
    ppl = r.get("ppl_mean")
    if ppl is not None and (isinstance(ppl, bool) or not isinstance(ppl, int | float) or not ppl >= 1.0):
        return f"ppl_mean must be a perplexity (a number >= 1), got {ppl!r}"
    for key in ("eval", "tasks"):
        if r.get(key) is not None and not isinstance(r[key], dict):
            return f"{key} must be a mapping, got {type(r[key]).__name__}"
    tokens = (r.get("eval") or {}).get("tokens_scored")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0):
        return f"eval.tokens_scored must be a whole number, got {tokens!r}"
    seeds = r.get("ppl_per_seed")
    if seeds is not None and not isinstance(seeds, list):
        return f"ppl_per_seed must be a list, got {type(seeds).__name__}"
    return None


def results_with_rows(files: list[Path]) -> list[Path]:
    """The files (and stores) among ``files`` that hold results rows: what the accuracy is read from."""
    return [f for f in files if any(rows for _, rows in _load_rows(f))]


def find_accuracy(spec, arch_name: str, files: list[Path]) -> list[dict]:
    """Measured accuracy of ``spec`` on models of architecture ``arch_name``: the perplexity row with the
    most tokens scored per model, with its file's FP reference and any task row of the same spec."""
    best: dict[str, dict] = {}
    tasks: dict[str, dict] = {}
    loaded = [(path, d, rows) for path in files for d, rows in _load_rows(path)]
    for path, d, rows in loaded:
        if arch_of_model(d["model"]) != arch_name:
            continue
        fname = f"{path.name}/{d['sweep']}" if "sweep" in d else path.name  # a store: which sweep in it
        model = Path(d["model"]).name
        fp = next((r for r in rows if r["spec"].get("method") == "fp" and r.get("ppl_mean") is not None), None)
        for r in rows:
            if not spec_matches(r["spec"], spec):
                continue
            if r.get("tasks"):
                tasks.setdefault(model, {"file": fname, "tasks": r["tasks"]})
            if r.get("ppl_mean") is None:
                continue
            ev = r.get("eval") or {}
            tokens = ev.get("tokens_scored") or (d.get("windows") or 0) * (d.get("context") or 0)
            if model in best and best[model]["tokens_scored"] >= tokens:
                continue
            best[model] = {
                "model": model,
                "configuration": spec.name,
                "ppl": float(r["ppl_mean"]),
                "ppl_std": r.get("ppl_std"),
                "seeds": len(r.get("ppl_per_seed") or []) or None,
                "fp_ppl": float(fp["ppl_mean"]) if fp else None,
                "windows": ev.get("windows") or d.get("windows"),
                "context": ev.get("context") or d.get("context"),
                "tokens_scored": tokens,
                "file": fname,
                "note": UPSTREAM_NOTE if str(d["model"]).endswith(".gguf") else "",
            }
    out = []
    for model in sorted(set(best) | set(tasks)):
        a = best.get(model) or {"model": model, "configuration": spec.name, "ppl": None, "fp_ppl": None}
        t = tasks.get(model)
        if t:
            for task in ("arc_easy", "hellaswag"):
                v = t["tasks"].get(task, {}).get("acc_norm")
                if v is not None:
                    a[f"{task}_acc_norm"] = float(v)
            a["tasks_file"] = t["file"]
        out.append(a)
    return out
