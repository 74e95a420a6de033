"""One-off migration: the perplexity, task and library-baseline results measured before the sweep
store existed (benchmarks/results/legacy/*.json, written by the old run_ppl.py, run_tasks.py and
external.py with the same :func:`qmc_edge.model.runner.run_method`) into benchmarks/store, under the
sweep specs in benchmarks/sweeps/ that now produce them. Every imported row keeps the machine, date and
command that measured it (the ``origin`` column says it was imported and from where); nothing is
recomputed. The cost table of the old external.json goes to benchmarks/results/cost.json
(benchmarks/cost.py renders and re-measures it).

    python benchmarks/import_legacy.py     # idempotent: points already in the store are left alone
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import write_json  # noqa: E402

from qmc_edge.claims.accuracy import spec_matches  # noqa: E402
from qmc_edge.deploy.arch import from_model  # noqa: E402
from qmc_edge.methods import parse_method  # noqa: E402
from qmc_edge.model.loading import load_model  # noqa: E402
from qmc_edge.sweep.run import ModelContext, result_rows  # noqa: E402
from qmc_edge.sweep.spec import expand, load_sweep_spec  # noqa: E402
from qmc_edge.sweep.store import Store  # noqa: E402

LEGACY = HERE / "results" / "legacy"
STORE = HERE / "store"
FILES = {
    "ppl.json": "ppl",
    "tasks.json": "tasks",
    "external.json": "baselines",
    "tasks_external.json": "tasks-baselines",
}
COST_KEYS = ["command", "date", "machine", "threads", "load_average_start", "load_average_end", "malloc_mmap_threshold"]
COST_KEYS += ["model", "note", "calibration_overlap_13gram", "cost", "warmup", "timing"]


def _eval_seconds(r: dict) -> float:
    n = max(1, len(r["seeds"]))
    if "tokens_per_s" in r and r.get("eval"):
        return r["eval"]["tokens_scored"] * n / r["tokens_per_s"]
    return sum(t["n"] / t["items_per_s"] * n for t in (r.get("tasks") or {}).values())


def _matches(r: dict, spec) -> bool:
    """The old external.py recorded the method text and ran calibrated methods at its calibration size
    (its rows' specs also carry options their method ignores); the others match option by option."""
    if "spec_text" not in r:
        return spec_matches(r["spec"], spec)
    s = parse_method(r["spec_text"])
    if s.calibrated:
        s = parse_method(r["spec_text"], calib_samples=r["spec"]["calib_samples"], calib_len=r["spec"]["calib_len"])
    return s.model_dump() == spec.model_dump()


def _loose(r: dict, spec) -> bool:
    """Old rows without a method text: every option the configuration sets equal (an option it leaves
    unset, None, was recorded with a meaningless value by the old shared spec class)."""
    return r["spec"].get("method") == spec.method and all(
        r["spec"].get(k) == v for k, v in spec.model_dump().items() if v is not None and k != "label"
    )


def _origin(file: str, d: dict, r: dict) -> tuple[str, str]:
    """(origin, date) of a legacy row: its file's run, or the --append run that added it."""
    for a in d.get("appended", []):
        if r.get("spec_text") in a["rows"]:
            return f"imported from results/legacy/{file}; measured by `{a['command']}`", a["date"]
    return f"imported from results/legacy/{file}; measured by `{d['command']}`", d["date"]


def main() -> None:
    store = Store(STORE).create()
    done = store.done()
    lm = load_model(None)
    arch = from_model(lm.model, "embedded", lm.source)
    for file, sweep in FILES.items():
        d = json.loads((LEGACY / file).read_text(encoding="utf-8"))
        spec = load_sweep_spec(HERE / "sweeps" / f"{sweep}.yaml")
        points = expand(spec)
        ctx = ModelContext(SimpleNamespace(source=d["model"], note=d["note"]), None, None, None, arch, d.get("text"))
        for r in d["rows"]:
            match = [p for p in points if _matches(r, p.spec)] or [p for p in points if _loose(r, p.spec)]
            if len(match) != 1:
                raise SystemExit(f"{file}: row {r['method']} matches {len(match)} points of {sweep}.yaml")
            (p,) = match
            if r["noisy"] and len(r["seeds"]) != len(spec.eval.seed_list):  # keyed by the seeds it has
                spec_r = spec.model_copy(update={"eval": spec.eval.model_copy(update={"seeds": list(r["seeds"])})})
                p = next(q for q in expand(spec_r) if q.method_text == p.method_text)
            else:
                spec_r = spec
            if p.key in done:
                continue
            r = {**r, "method": p.spec.name, "spec": p.spec.model_dump()}  # in today's options
            for t in (r.get("tasks") or {}).values():  # old files kept the mean item-stderr only
                for m in ("acc", "acc_norm"):
                    if f"{m}_per_seed" in t:
                        t.setdefault(f"{m}_stderr_per_seed", [t[f"{m}_stderr"]] * len(t[f"{m}_per_seed"]))
            origin, date = _origin(file, d, r)
            rows = result_rows(ctx, p, spec_r, r, _eval_seconds(r), d["machine"], origin, date)
            store.write_point(p.key, rows)
            print(f"{sweep:16s} {p.spec.name:48s} {len(rows)} row(s)  [{p.key}]")
        if file == "external.json":
            write_json(HERE / "results" / "cost.json", {k: d[k] for k in COST_KEYS if k in d})


if __name__ == "__main__":
    main()
