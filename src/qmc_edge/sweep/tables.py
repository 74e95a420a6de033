"""A results store read back as results payloads: the shape `qmc compare --json` and
:func:`qmc_edge.model.runner.run_method` write (one row per method configuration, seeds aggregated), so
everything that reads results files (`qmc claims`, the benchmark renderer) reads a store the same way.

One payload per (sweep, model). When a store holds a configuration more than once (another qmc-edge
version, other seeds), the row completed last is the one shown.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from qmc_edge.methods.registry import current_options
from qmc_edge.sweep.store import Store
from qmc_edge.tasks.evaluate import summarise


def is_store(path: str | Path) -> bool:
    return (Path(path) / "points").is_dir()


def _source_and_note(model_source: str) -> dict:
    """The store's ``model_source`` is the loaded file with its note in parentheses after it."""
    src, sep, note = model_source.partition(" (")
    return {"model": src, "note": note[:-1] if sep and note.endswith(")") else ""}


def _point_row(rows: list[dict]) -> dict:
    """One configuration's seeds (rows of one key) as a run_method-shaped row."""
    r0 = rows[0]
    storage = json.loads(r0["storage_json"])
    noisy = bool(r0["noisy"])
    out = {
        "method": r0["method"],
        "method_text": r0["method_text"],
        "spec": current_options(json.loads(r0["spec_json"])),
        "noisy": noisy,
        "effective_bits": r0["bits_per_weight"],
        "whole_model_bits": r0["whole_model_bits"],
        "compression_quantized_layers": storage.get("compression_quantized_layers"),
        "compression_whole_model": storage.get("compression_whole_model"),
        "seeds": [r["seed"] for r in rows] if noisy else [],
        "quantize_seconds": r0["quantize_seconds"],
        "eval_seconds": r0["eval_seconds"],
        "storage": storage,
        "deploy": json.loads(r0["deploy_json"]) if r0.get("deploy_json") else {},
        "machine": r0["machine"],
        "origin": r0["origin"],
        "date": r0["date"],
        "key": r0["key"],
    }
    ppls = [r["ppl"] for r in rows if r["ppl"] is not None]
    if ppls:
        out["ppl_per_seed"] = ppls
        out["ppl_mean"] = statistics.fmean(ppls)
        out["ppl_std"] = statistics.stdev(ppls) if len(ppls) > 1 else 0.0
        out["eval"] = {k: r0[k] for k in ("windows", "windows_available", "context", "tokens_scored")}
    per_seed = [json.loads(r["tasks_json"]) for r in rows if r["tasks_json"]]
    if per_seed:
        out["tasks"] = summarise(per_seed, out["seeds"] or [None])
    return out


def payloads(store: Store | str | Path, sweep: str | None = None) -> list[dict]:
    """Results payloads of a store (of one sweep when ``sweep`` is given), rows in completion order."""
    st = store if isinstance(store, Store) else Store(store)
    by_key: dict[str, list[dict]] = {}
    for r in st.read().to_pylist():
        if sweep is None or r["sweep"] == sweep:
            by_key.setdefault(r["key"], []).append(r)
    latest: dict[tuple[str, str, str], tuple[dict, dict]] = {}  # -> (point row, its first store row)
    for rows in by_key.values():
        rows.sort(key=lambda r: (r["seed"] is None, r["seed"] or 0))
        row = _point_row(rows)
        ident = (rows[0]["sweep"], rows[0]["model_source"], row["method_text"])
        if ident not in latest or latest[ident][0]["date"] <= row["date"]:
            latest[ident] = (row, rows[0])
    out: dict[tuple[str, str], dict] = {}
    for (sw, source, _), (row, r0) in sorted(latest.items(), key=lambda kv: kv[1][0]["date"]):
        d = out.setdefault(
            (sw, source),
            {
                "sweep": sw,
                **_source_and_note(source),
                "model_name": r0["model"],
                "text": None,
                "context": None,
                "windows": None,
                "windows_available": None,
                "rows": [],
            },
        )
        if "eval" in row:
            d.update(text=r0["text"], **{k: row["eval"][k] for k in ("context", "windows", "windows_available")})
        d["rows"].append(row)
    for d in out.values():
        rows = d["rows"]
        d["machines"] = sorted({r["machine"] for r in rows if r["machine"]})
        d["origins"] = list(dict.fromkeys(r["origin"] for r in rows if r["origin"]))
        d["dates"] = [min(r["date"] for r in rows), max(r["date"] for r in rows)]
        d["wall_seconds"] = sum(r["quantize_seconds"] + (r["eval_seconds"] or 0.0) for r in rows)
    return list(out.values())
