"""QMC quantization speed: the exhaustive clip-ratio grid (the default) against the descent
(``clip_search=descent``), side by side in one process on the embedded model, with RTN at the same
bits as the yardstick.

Per configuration: quantization wall time of RTN, QMC with the grid and QMC with the descent, each
search both compiled (how it runs on a CPU, :mod:`qmc_edge.quant.clip_kernel`) and in its torch
formulation (``uniform.COMPILED = False``: what runs on a GPU), each timed ``--repeats`` times,
alternating, the median kept (the kernel is compiled, or loaded from numba's cache, before the
timings), the share of groups where the two formulations chose the same grid (both sum in one fixed
order, so it should be all of them), the total expected squared read error of every quantized tensor
under both searches (analytic, device errors included: :func:`qmc_edge.quant.budget.expected_sq_error`)
and the share of (row, group) grids the descent chose exactly as the grid did. Perplexity of both
searches comes from the frontier sweep's points in ``benchmarks/store`` (the pairs of rows that differ
only by ``clip_search=descent``).

Writes benchmarks/results/clip_search.json and benchmarks/clip_search.md.
Usage: python benchmarks/clip_search.py [--repeats 3]    (--render-only: the Markdown from the JSON)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from common import machine_label, write_json  # noqa: E402

from qmc_edge.methods import parse_method  # noqa: E402
from qmc_edge.methods.whole_model import quantize_model  # noqa: E402
from qmc_edge.model.loading import load_model  # noqa: E402
from qmc_edge.quant import uniform  # noqa: E402
from qmc_edge.quant.budget import expected_sq_error  # noqa: E402

# (QMC configuration, the RTN at the same inlier bits)
CONFIGS = [
    ("qmc3", "rtn3"),
    ("qmc:bits=2,cell_bits=2,rho=0.02", "rtn:bits=2"),
    ("qmc:bits=4,cell_bits=2", "rtn4"),
    ("qmc:bits=3,cell_bits=3,age=1d,target_age=1d", "rtn3"),
]
RES = HERE / "results" / "clip_search.json"
MD = HERE / "clip_search.md"


def descent_text(text: str) -> str:
    return text + (",clip_search=descent" if ":" in text else ":clip_search=descent")


def timed(model, spec, compiled: bool = True):
    uniform.COMPILED = compiled
    try:
        t0 = time.perf_counter()
        qm = quantize_model(model, spec)
        return time.perf_counter() - t0, qm
    finally:
        uniform.COMPILED = True


def total_expected_error(model, spec, qm) -> float:
    params = dict(model.named_parameters())
    dev = spec.cells()
    return float(sum(float(expected_sq_error(params[n], qt, dev).sum()) for n, qt in qm.tensors.items()))


def same_grids(a, b) -> float:
    same = total = 0
    for n, qa in a.tensors.items():
        qb = b.tensors[n]
        same += int((qa.inliers.scale == qb.inliers.scale).logical_and(qa.inliers.zero == qb.inliers.zero).sum())
        total += qa.inliers.scale.numel()
    return same / total


def torch_order_check(model) -> list[dict]:
    """The first configuration's grid and descent, compiled (today), against the torch formulation
    summing each group in torch's own order (``.sum()``, how every stored result before 2026-12-03
    was measured): the share of groups where both chose the same grid."""
    out = []
    for text in (CONFIGS[0][0], descent_text(CONFIGS[0][0])):
        spec = parse_method(text)
        today = quantize_model(model, spec)
        fixed = uniform._lane_sum
        uniform.COMPILED, uniform._lane_sum = False, lambda t: t.sum(dim=-1)
        try:
            before = quantize_model(model, spec)
        finally:
            uniform.COMPILED, uniform._lane_sum = True, fixed
        groups = sum(q.inliers.scale.numel() for q in today.tensors.values())
        share = same_grids(today, before)
        out.append({"method": spec.name, "groups": groups, "same": round(share * groups)})
        print(f"{spec.name}: compiled vs torch's own sum order: same grid in {out[-1]['same']} of {groups} groups")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torch-order-only", action="store_true", help="only the torch-order check, into the JSON")
    args = ap.parse_args()
    t_start = time.perf_counter()
    lm = load_model(None)
    if args.torch_order_only:
        d = json.loads(RES.read_text(encoding="utf-8"))
        d["torch_order"] = torch_order_check(lm.model)
        write_json(RES, d)
        write_md()
        return
    t0 = time.perf_counter()
    uniform.quantize_uniform(torch.randn(4, 256), 3, 128, clip_ratios=uniform.clip_grid(20), search="descent")
    compile_s = time.perf_counter() - t0  # numba compiles on first use, or loads its on-disk cache
    rows = []
    for text, rtn_text in CONFIGS:
        fast = parse_method(descent_text(text))
        grid = parse_method(text)
        specs = {"rtn": parse_method(rtn_text), "grid": grid, "grid_torch": grid}
        specs |= {"descent": fast, "descent_torch": fast}
        times: dict[str, list[float]] = {k: [] for k in specs}
        kept = {}
        for _ in range(args.repeats):
            for k, spec in specs.items():
                dt, qm = timed(lm.model, spec, compiled=not k.endswith("_torch"))
                times[k].append(dt)
                kept[k] = qm
        eg = total_expected_error(lm.model, specs["grid"], kept["grid"])
        ed = total_expected_error(lm.model, specs["descent"], kept["descent"])
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {
            "method_text": text,
            "method": specs["grid"].name,
            "rtn": specs["rtn"].name,
            "seconds": times,
            "median_seconds": med,
            "descent_speedup": med["grid"] / med["descent"],
            "grid_over_rtn": med["grid"] / med["rtn"],
            "descent_over_rtn": med["descent"] / med["rtn"],
            "compiled_speedup": med["descent_torch"] / med["descent"],
            "compiled_same_grid_share": same_grids(kept["descent"], kept["descent_torch"]),
            "compiled_same_grid_share_grid": same_grids(kept["grid"], kept["grid_torch"]),
            "expected_error_grid": eg,
            "expected_error_descent": ed,
            "expected_error_increase": ed / eg - 1,
            "same_grid_share": same_grids(kept["grid"], kept["descent"]),
        }
        print(
            f"{row['method']}: RTN {med['rtn']:.2f} s, grid {med['grid']:.2f} s (torch formulation "
            f"{med['grid_torch']:.2f} s, same grid in {100 * row['compiled_same_grid_share_grid']:.4f}% of groups), "
            f"descent {med['descent']:.2f} s (torch formulation {med['descent_torch']:.2f} s, same grid in "
            f"{100 * row['compiled_same_grid_share']:.4f}% of groups) "
            f"({row['descent_speedup']:.2f}x; {row['descent_over_rtn']:.1f}x RTN); expected error "
            f"{100 * row['expected_error_increase']:+.3f}%, same grid in {100 * row['same_grid_share']:.1f}% of groups",
            flush=True,
        )
        rows.append(row)
        del kept
    import datetime as dt

    payload = {
        "command": "python benchmarks/clip_search.py " + " ".join(sys.argv[1:]),
        "date": dt.date.today().isoformat(),
        "machine": machine_label(),
        "threads": torch.get_num_threads(),
        "model": "SmolLM2-135M-Instruct (embedded; reference Q4_1 upstream)",
        "repeats": args.repeats,
        "first_call_seconds": compile_s,
        "wall_seconds": time.perf_counter() - t_start,
        "rows": rows,
        "torch_order": torch_order_check(lm.model),
    }
    write_json(RES, payload)
    write_md()
    print(f"wrote {RES} and {MD}")


def perplexity_pairs() -> list[dict]:
    """Frontier sweep rows that differ only by clip_search=descent, from benchmarks/store."""
    from qmc_edge.sweep.tables import payloads

    store = HERE / "store"
    if not (store / "points").is_dir():
        return []
    out = []
    for d in payloads(store, "frontier"):
        by_text = {r["method_text"]: r for r in d["rows"]}
        for text, r in by_text.items():
            if "clip_search=descent" in text:
                continue
            fast = by_text.get(descent_text(text))
            if fast is not None:
                out.append({"method": r["method"], "grid": r, "descent": fast})
    return out


def write_md() -> None:
    d = json.loads(RES.read_text(encoding="utf-8"))
    lines = [
        "## QMC quantization speed: the clip-ratio search compiled, and the descent",
        "",
        f"- command: `{d['command'].strip()}`; date: {d['date']}; machine: {d['machine']}, {d['threads']} threads",
        f"- model: {d['model']}; every linear weight quantized, one process, times the median of "
        f"{d['repeats']} alternating runs (RTN, grid, descent; each search compiled and in torch)",
        "- grid: every one of the 20 clip ratios per (row, group), the default (`clip_search=grid`); "
        "descent: `clip_search=descent`, 8 candidates per group (two starts, then +-4, +-2, +-1 ratios around "
        "the best); expected error: total expected squared read error of all tensors, device errors included",
        *(
            [
                "- compiled: per group in one loop (`src/qmc_edge/quant/clip_kernel.py`, numba; how both searches run "
                "on a CPU); torch: the same search as torch tensor passes (`uniform.COMPILED = False`; what runs "
                "on a GPU); compiled = torch: share of groups where both chose the same grid (both take each "
                "group's sum in one fixed order, so any difference is a bug); the kernel's first use took "
                f"{d['first_call_seconds']:.1f} s in this run (compiling, or loading numba's on-disk cache)"
            ]
            if "first_call_seconds" in d
            else []
        ),
        "",
        "| configuration | RTN s | grid (torch) s | grid s | descent (torch) s | descent s | grid / RTN "
        "| descent / RTN | expected error (descent vs grid) | groups with the grid's choice "
        "| compiled = torch (grid; descent) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in d["rows"]:
        m = r["median_seconds"]

        def share(key: str, r=r) -> str:
            return f"{100 * r[key]:.4f}%" if key in r else "-"

        lines.append(
            f"| {r['method']} | {m['rtn']:.2f} | {m.get('grid_torch', float('nan')):.2f} | {m['grid']:.2f} | "
            f"{m.get('descent_torch', float('nan')):.2f} | {m['descent']:.2f} | {r['grid_over_rtn']:.1f}x | "
            f"{r['descent_over_rtn']:.1f}x | {100 * r['expected_error_increase']:+.3f}% | "
            f"{100 * r['same_grid_share']:.1f}% | {share('compiled_same_grid_share_grid')}; "
            f"{share('compiled_same_grid_share')} |"
        )
    for t in d.get("torch_order", []):
        lines.append(
            f"\n{t['method']}: the compiled search chose the same grid as the torch formulation summing in "
            f"torch's own order (how every stored result before 2026-12-03 was measured) in {t['same']:,} of "
            f"{t['groups']:,} groups (`python benchmarks/clip_search.py --torch-order-only`)."
        )
    pairs = perplexity_pairs()
    if pairs:
        lines += [
            "",
            "WikiText-2 perplexity of both searches (frontier sweep, `benchmarks/sweeps/frontier.yaml`: "
            "first 8 windows of 1024 tokens, noisy ReRAM over chips 0-2, the same windows and chips; both searches' "
            "rows were measured with their torch formulations summing in torch's order, before the compiled "
            "loops: the check above gives how many groups chose another grid than today):",
            "",
            "| configuration | grid PPL | descent PPL | change |",
            "|---|---:|---:|---:|",
        ]
        for p in pairs:
            g, f = p["grid"], p["descent"]
            lines.append(
                f"| {p['method']} | {g['ppl_mean']:.3f} ± {g['ppl_std'] or 0:.3f} | "
                f"{f['ppl_mean']:.3f} ± {f['ppl_std'] or 0:.3f} | {100 * (f['ppl_mean'] / g['ppl_mean'] - 1):+.2f}% |"
            )
    _write(MD, "\n".join(lines) + "\n")


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


if __name__ == "__main__":
    if sys.argv[1:] == ["--render-only"]:
        write_md()
    else:
        main()
