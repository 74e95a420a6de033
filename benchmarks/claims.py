"""The paper's headline claims, reconciled: the shipped ledgers on the paper's model families, with the
accuracy of every configuration they imply measured here.

1. Accuracy: for each model (the embedded SmolLM2-135M; Gemma-3-270M and Qwen2.5-Coder-1.5B when
   their GGUF paths are given), every quantization the ledgers step through (and the FP reference) is
   evaluated on WikiText-2 (--windows x --context tokens, --seeds chips) and written, one row per
   configuration, to benchmarks/results/claims_accuracy_<model>_<windows>x<context>.json (run_ppl.py's
   row format; resumable: rows already there with enough seeds are kept).
2. Ledgers: `qmc claims`'s computation for each architecture of PAPER_ARCHS, accuracy read from every
   results file; storage measured on the embedded model. Writes benchmarks/results/claims.json, the
   waterfall PNGs benchmarks/results/claims_<arch>_<claim>.png and benchmarks/claims.md.

    python benchmarks/claims.py [--windows 10] [--context 2048] [--seeds 3]      # embedded model
    python benchmarks/claims.py --gemma PATH.gguf --no-embedded --windows 4 --context 1024 --seeds 2
    python benchmarks/claims.py --ledgers-only     # step 2 only (seconds after the storage quantization)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import load_for_ppl, run_header, write_json  # noqa: E402

from qmc_edge.claims.accuracy import results_files  # noqa: E402
from qmc_edge.claims.ledger import CLAIMS, apply, load_ledger, run_ledger, storage_cost_fn  # noqa: E402
from qmc_edge.claims.ledger import State as LedgerState  # noqa: E402
from qmc_edge.deploy.arch import known_arch  # noqa: E402
from qmc_edge.deploy.platform import load_platform  # noqa: E402
from qmc_edge.deploy.plots import waterfall_plot  # noqa: E402
from qmc_edge.methods import parse_method  # noqa: E402
from qmc_edge.model.runner import EvalSettings, run_method  # noqa: E402

RESULTS = HERE / "results"
PAPER_ARCHS = ["smollm2-135m", "gemma-3-270m", "qwen2.5-1.5b", "llama-3.2-3b"]
DEFAULT_METHOD = "qmc3"
PLOT_ARCHS = ("smollm2-135m", "llama-3.2-3b")


def ledger_methods(default: str = DEFAULT_METHOD) -> list[str]:
    """Every method configuration the shipped ledgers step through, in order, as spec texts."""
    led = load_ledger()
    start = parse_method(default)
    seen = {start.name: start}
    for c in led.claims.values():
        st = LedgerState(start, {"placement": {}}, {}, {}, c.metric)
        for step in c.steps:
            if step.method:
                st = apply(st, step.model_copy(update={"set": None, "placement": None, "workload": None}))
                seen.setdefault(st.method.name, st.method)
    return list(seen.values())


def spec_text(spec) -> str:
    fields = {k: v for k, v in spec.model_dump().items() if k not in ("method", "label") and v is not None}
    defaults = type(spec).model_fields
    opts = [
        f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in fields.items() if v != defaults[k].default
    ]
    return spec.method + (":" + ",".join(opts) if opts else "")


def measure(model: str | None, args) -> Path:
    lm, src, ids, bos, name = load_for_ppl(model, os.cpu_count() or 1)
    # One file per (model, windows x context): another setting never overwrites what was measured.
    out = RESULTS / f"claims_accuracy_{name}_{args.windows}x{args.context}.json"
    cfg = EvalSettings(args.context, args.windows, tuple(range(args.seeds)), bos)
    old = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    rows = [r for r in old.get("rows", []) if len(r.get("ppl_per_seed") or []) >= args.seeds]
    done = {r["method"] for r in rows}
    t0 = time.perf_counter()
    specs = [parse_method("fp"), *ledger_methods()]
    for spec in specs:
        if spec.name in done:
            continue
        r = run_method(lm, spec, ids, cfg)
        r["spec_text"] = spec_text(spec)
        rows.append(r)
        print(f"{name}: {r['method']}: ppl {r['ppl_mean']:.2f} ± {r['ppl_std']:.2f} [{time.perf_counter() - t0:.0f}s]")
        payload = {
            "benchmark": "claims_accuracy",
            **run_header("claims.py", lm.source, lm.note, src.label, args.context, args.windows, t0),
            "seeds": list(cfg.seeds),
            "rows": rows,
        }
        write_json(out, payload)
    return out


def ledgers(args) -> dict:
    from qmc_edge.model.loading import load_model

    t0 = time.perf_counter()
    lm = load_model(None)
    led = load_ledger()
    qmc_p, base_p = load_platform("qmc_hetero"), load_platform("orin_agx")
    files = results_files([RESULTS])
    spec = parse_method(DEFAULT_METHOD)
    out = []
    cost_of = None
    for arch_name in PAPER_ARCHS:
        a = known_arch(arch_name)
        cost_of = cost_of or storage_cost_fn(lm.model, a)
        for c in CLAIMS:
            out.append(run_ledger(a, c, led.claims[c], spec, qmc_p, base_p, cost_of, files))
    payload = {
        **run_header("claims.py", lm.source, lm.note, "", 0, 0, t0),
        "storage_model": lm.source,
        "platform": qmc_p.name,
        "baseline": ["FP16", base_p.name],
        "method": spec.name,
        "results_files": [f.name for f in files],
        "claims": out,
    }
    for k in ("text", "context", "windows"):
        payload.pop(k)
    write_json(RESULTS / "claims.json", payload)
    for x in out:
        if x["arch"] in PLOT_ARCHS:
            waterfall_plot(x, RESULTS / f"claims_{x['arch']}_{x['claim']}.png")
    return payload


def _acc(acc: list[dict] | None) -> str:
    if not acc:
        return "not measured"
    m = [a for a in acc if a.get("ppl") is not None]
    if not m:
        return "not measured"
    return "; ".join(
        f"{a['model'].removesuffix('.gguf')} {a['ppl']:.1f} (FP {a['fp_ppl']:.1f}, {a['windows']}x{a['context']})"
        for a in m
    )


def carriers(x: dict) -> str:
    """The steps that carry the ratio: up to the one that reaches the claim (all, if none does), each
    with the factor it multiplied the ratio by."""
    steps = x["steps"]
    upto = x["reached_at_step"] or len(steps)
    prev = x["default"]["ratio"]
    parts = []
    for s in steps[:upto]:
        f = s["ratio"] / prev if prev else float("nan")
        prev = s["ratio"]
        if abs(f - 1) > 0.02:
            tag = "" if s["kind"] == "sourced" else f" [{s['kind']}]"
            parts.append(f"{s['assumption'].split(',')[0]} (x{f:.2f}){tag}")
    return "; ".join(parts) or "none needed"


def render(d: dict) -> str:
    lines = [
        "## The paper's headline, reconciled (`qmc claims`)",
        "",
        f"Command: `{d['command']}` ({d['date']}, {d['machine']}). Default: {d['method']} on `{d['platform']}` "
        f"against FP16 on `{d['baseline'][1]}`, batch-1 decode, prompt 512, 128 generated tokens. Each claim's "
        "ledger (`src/qmc_edge/claims/claims.yaml`) applies its steps cumulatively; 'reached' is the first "
        "step at or above the paper's figure (its lower end). Storage per configuration is measured on the "
        "embedded SmolLM2-135M and applied per weight to each architecture. Accuracy is WikiText-2 perplexity "
        "read from the results files (`benchmarks/results/`), on that architecture's model only; every "
        "reference was already quantized upstream (GGUF), so FP = that dequantized reference. Qwen2.5-1.5B's "
        "accuracy would come from Qwen2.5-Coder-1.5B-Instruct (same architecture); Llama-3.2-3B has no model "
        "here.",
        "",
        "| model | claim | paper | ours, default | ours, every step | reached at | the steps that carry it "
        "| accuracy where reached | accuracy at the final configuration |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def quant_at(x: dict, upto: int | None) -> tuple[str, list | None]:
        """The configuration (and its accuracy) in force after step ``upto`` (None = the last step)."""
        steps = x["steps"] if upto is None else x["steps"][:upto]
        q = next((s for s in reversed(steps) if s.get("quantization_changed")), None)
        src = q or x["default"]
        return src["configuration"].split(" (")[0], src.get("accuracy")

    for x in d["claims"]:
        cfg, acc = quant_at(x, None)
        if x["reached"]:
            rcfg, racc = quant_at(x, x["reached_at_step"])
            at = f"{rcfg}: {_acc(racc)}"
        else:
            at = "-"
        reached = f"step {x['reached_at_step']}" if x["reached"] else "not reached"
        fit = "" if not x["steps"] or not x["steps"][-1].get("does_not_fit") else " (does not fit)"
        lines.append(
            f"| {x['arch']} | {x['claim']} | {x['paper']['text']} | {x['default']['ratio']:.2f}x | "
            f"{x['final_ratio']:.2f}x{fit} | {reached} | {carriers(x)} | {at} | {cfg}: {_acc(acc)} |"
        )
    seen = {}
    for x in d["claims"]:
        seen.setdefault(x["arch"], x["default"])
    lines += ["", "Accuracy of the default configuration (the ledgers' step 0):", ""]
    lines += [f"- {a}: {dft['configuration'].split(' (')[0]}: {_acc(dft['accuracy'])}" for a, dft in seen.items()]
    why = [x for x in d["claims"] if x["why_not"]]
    if why:
        lines += ["", "Not reached, and why:", ""]
        lines += [f"- {x['arch']}, {x['claim']}: {x['why_not']}" for x in why]
    lines += [
        "",
        "Each step of the SmolLM2-135M ledgers (ratio after the step; accuracy where it changes the quantization):",
        "",
    ]
    for x in d["claims"]:
        if x["arch"] != "smollm2-135m":
            continue
        lines += [
            f"**{x['claim']}** (paper {x['paper']['text']}; default {x['default']['ratio']:.2f}x, "
            f"{_acc(x['default']['accuracy'])})",
            "",
            "| # | change | source | ratio | accuracy |",
            "|---|---|---|---|---|",
        ]
        for s in x["steps"]:
            acc = _acc(s.get("accuracy")) if s.get("quantization_changed") else ""
            lines.append(f"| {s['step']} | {s['assumption']} | {s['source']} | {s['ratio']:.2f}x | {acc} |")
        lines.append("")
    for arch in PLOT_ARCHS:
        for c in CLAIMS:
            p = RESULTS / f"claims_{arch}_{c}.png"
            if p.is_file():
                lines.append(f"![{c} on {arch}](benchmarks/results/{p.name})")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gemma", help="Gemma-3-270M GGUF path (accuracy rows for it)")
    ap.add_argument("--qwen", help="Qwen2.5-Coder-1.5B GGUF path (accuracy rows for it)")
    ap.add_argument("--windows", type=int, default=10)
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ledgers-only", action="store_true")
    ap.add_argument("--no-embedded", action="store_true", help="do not measure the embedded model")
    ap.add_argument("--render-only", action="store_true", help="rewrite claims.md from claims.json")
    args = ap.parse_args()
    if args.render_only:
        d = json.loads((RESULTS / "claims.json").read_text(encoding="utf-8"))
        (HERE / "claims.md").write_text(render(d), encoding="utf-8")
        return
    if not args.ledgers_only:
        if not args.no_embedded:
            measure(None, args)
        for m in (args.gemma, args.qwen):
            if m:
                measure(m, args)
    d = ledgers(args)
    (HERE / "claims.md").write_text(render(d), encoding="utf-8")
    from render import render as render_all  # noqa: PLC0415 - sibling script

    render_all()


if __name__ == "__main__":
    main()
