"""The accuracy-versus-size frontier, rendered from the results store (no measurement here).

Reads the points of the sweeps benchmarks/sweeps/frontier.yaml (and frontier-lib.yaml, the GPTQ rows
run in the llm-compressor environment) from benchmarks/store and writes:

- benchmarks/results/frontier.json: one row per (model, method configuration): model, method,
  family, whole_model_bits, bits_per_weight, memory (ideal or reram), ppl (mean over seeds),
  ppl_std, seeds, fp_ppl, on_frontier (no other row of the same memory is both smaller and better);
- benchmarks/results/frontier_<model>.png: perplexity against whole-model bits, one line per method
  family, noisy ReRAM solid and ideal memory dashed, FP as a horizontal line;
- benchmarks/frontier.md: the table and the plot, with the targets of the issue checked against the
  rows, for BENCHMARKS.md (python benchmarks/render.py includes it).

Run:  python benchmarks/frontier.py
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from qmc_edge.methods import parse_method
from qmc_edge.sweep.tables import payloads

HERE = Path(__file__).resolve().parent
STORE = HERE / "store"
RESULTS = HERE / "results"
SWEEPS = ("frontier", "frontier-lib", "frontier-gemma")


def _family(row: dict) -> str:
    """The plot's line a row belongs to: the method, and the QMC options that change its design."""
    spec = row["spec"]
    fam = spec["method"]
    if fam == "qmc":
        base = "QMC+GPTQ" if spec.get("rounding") == "gptq" else "QMC"
        base += " budget" if spec.get("budget") is not None else ""
        tags = []
        if spec.get("budget") is not None and spec.get("sensitivity", "self") != "self":
            tags.append(spec["sensitivity"])
        if spec.get("gptq_noise"):
            tags.append("noise-aware")
        if spec.get("level_map"):
            tags.append("level map")
        if spec.get("outliers_by") == "fisher":
            tags.append("Fisher outliers")
        return base + (f" ({', '.join(tags)})" if tags else "")
    names = {"rtn": "RTN", "hqq": "HQQ", "gptq": "GPTQ", "awq": "AWQ", "emem": "eMEM-naive", "fp": "FP"}
    return names.get(fam, fam)


def _memory(row: dict) -> str:
    return "reram" if row["noisy"] or row["spec"].get("reram") else "ideal"


def _pair_key(text: str) -> str | None:
    """The configuration without where its codes live, shared by a ReRAM row and its ideal-memory twin:
    QMC and ``ideal_memory=true``; eMEM-naive and RTN at the same bits (eMEM stores RTN's codes); a
    library method with ``reram=true`` and the same method as it ships. From the method text parsed
    now, so that points stored before an option existed compare equal; None for FP."""
    spec = parse_method(text).model_dump()
    method = spec["method"]
    if method == "fp":
        return None
    if method == "qmc":
        return json.dumps({k: v for k, v in spec.items() if k != "ideal_memory"}, sort_keys=True, default=str)
    core = {k: spec.get(k) for k in ("bits", "group_size", "quantize_embeddings", "calib_samples", "calib_len")}
    return json.dumps({"method": "rtn" if method == "emem" else method, **core}, sort_keys=True, default=str)


def rows() -> list[dict]:
    out = []
    for sweep in SWEEPS:
        for d in payloads(STORE, sweep) if (STORE / "points").is_dir() else []:
            model = Path(d["model"]).name
            fp = next((r["ppl_mean"] for r in d["rows"] if r["spec"]["method"] == "fp" and "ppl_mean" in r), None)
            for r in d["rows"]:
                if "ppl_mean" not in r or r["spec"].get("clip_search") == "descent":
                    continue  # the descent's rows are the clip-search section's (benchmarks/clip_search.py)
                out.append(
                    {
                        "model": model,
                        "sweep": sweep,
                        "method": r["method"],
                        "method_text": r["method_text"],
                        "family": _family(r),
                        "whole_model_bits": r["whole_model_bits"],
                        "bits_per_weight": r["effective_bits"],
                        "memory": _memory(r),
                        "ppl": r["ppl_mean"],
                        "ppl_std": r["ppl_std"],
                        "seeds": len(r["ppl_per_seed"]),
                        "ppl_per_seed": r["ppl_per_seed"],
                        "fp_ppl": fp,
                        "quantize_seconds": r["quantize_seconds"],
                        "windows": r["eval"]["windows"],
                        "context": r["eval"]["context"],
                        "machine": r["machine"],
                        "date": r["date"],
                        "pair": _pair_key(r["method_text"]),
                    }
                )
    fps = {r["model"]: r["fp_ppl"] for r in out if r["fp_ppl"]}
    for r in out:  # the library rows' sweep has no FP row: the model's FP from the other sweep
        r["fp_ppl"] = r["fp_ppl"] or fps.get(r["model"])
    for r in out:  # Pareto: no row of the same model and memory is at most as big and strictly better
        peers = [p for p in out if p["model"] == r["model"] and p["memory"] == r["memory"] and p is not r]
        r["on_frontier"] = not any(
            p["whole_model_bits"] <= r["whole_model_bits"] and p["ppl"] < r["ppl"] for p in peers
        )
    return sorted(out, key=lambda r: (r["model"], r["family"], r["memory"], r["whole_model_bits"]))


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plot(model: str, rs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    fams = sorted({r["family"] for r in rs if r["family"] != "FP"})
    colors = dict(zip(fams, plt.cm.tab20.colors * 2, strict=False))
    for fam in fams:
        for mem, style in (("reram", "-"), ("ideal", "--")):
            pts = sorted(
                (r["whole_model_bits"], r["ppl"], r["ppl_std"]) for r in rs if r["family"] == fam and r["memory"] == mem
            )
            if not pts:
                continue
            x, y, e = zip(*pts, strict=True)
            ax.errorbar(x, y, yerr=e, fmt="o", color=colors[fam], ms=4, capsize=2)
            front, best = [], float("inf")  # the line joins the family's own non-dominated points
            for p in pts:
                if p[1] < best:
                    front.append(p)
                    best = p[1]
            where = "noisy ReRAM" if mem == "reram" else "ideal memory"
            xs, ys = [p[0] for p in front], [p[1] for p in front]
            ax.plot(xs, ys, style, color=colors[fam], label=f"{fam} ({where})")
    fp = next((r["fp_ppl"] for r in rs if r["fp_ppl"]), None)
    if fp:
        ax.axhline(fp, color="k", lw=0.8, label=f"FP ({fp:.1f})")
        ax.axhline(2 * fp, color="k", lw=0.6, ls=":", label="2x FP")
    ax.set_xlabel("whole-model bits per parameter (embeddings, head and norms included)")
    ax.set_ylabel("WikiText-2 perplexity (log)")
    ax.set_yscale("log")
    ax.set_xlim(1.8, 8.5)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"{model}: perplexity against whole-model size")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
        plt.close(fig)


def _targets(rs: list[dict]) -> list[str]:
    """The issue's targets, each checked against the rows (what is reached, as measured)."""
    lines = []
    fp = next((r["fp_ppl"] for r in rs if r["fp_ppl"]), None)
    qmc = [r for r in rs if r["family"].startswith("QMC") and r["memory"] == "reram"]
    small = [r for r in qmc if r["whole_model_bits"] <= 2.5]
    if fp and small:
        b = min(small, key=lambda r: r["ppl"])
        ok = b["ppl"] <= 2 * fp
        lines.append(
            f"- whole model <= 2.5 bits per parameter in noisy ReRAM with perplexity <= 2x FP ({2 * fp:.1f}): "
            f"best {b['method']} at {b['whole_model_bits']:.3f} bits, {b['ppl']:.1f} = {b['ppl'] / fp:.2f}x FP: "
            + ("**reached**" if ok else "**missed**")
        )
    elif fp:
        lines.append("- whole model <= 2.5 bits per parameter: no QMC row at <= 2.5 bits measured on this model")
    gptq4 = [r for r in rs if r["family"] == "GPTQ" and r["memory"] == "ideal" and r["method_text"].startswith("gptq4")]
    near = [r for r in qmc if r["bits_per_weight"] <= 3.4]
    if gptq4 and near:
        g, b = gptq4[0], min(near, key=lambda r: r["ppl"])
        lines.append(
            f"- <= 3.4 bits per quantized weight, QMC's best in noisy ReRAM within 10% of GPTQ-INT4 in ideal memory "
            f"({g['ppl']:.1f}): {b['method']} ({b['bits_per_weight']:.2f} bits/weight) {b['ppl']:.1f} = "
            f"{b['ppl'] / g['ppl']:.2f}x: " + ("**reached**" if b["ppl"] <= 1.1 * g["ppl"] else "**missed**")
        )
    elif near:
        lines.append(
            "- within 10% of GPTQ-INT4 in ideal memory: no GPTQ-INT4 row on this model (llm-compressor runs in "
            "its own environment, whose transformers must compute the model as the main one does: see the "
            "status notes at the end)"
        )
    nc = RESULTS / "noise_cost_smollm2-135m.json"
    if nc.is_file() and rs and "smollm2" in rs[0]["model"].lower():  # the noise-cost runs are SmolLM2's
        d = json.loads(nc.read_text(encoding="utf-8"))
        # Only configurations worth reading count: 2-bit cells hardly ever err, so a 2-bit row at 200x FP
        # has no noise cost and says nothing about the target.
        usable = [r for r in d["rows"] if r["clean_ppl"] <= 2 * d["fp_ppl"]] or d["rows"]

        def costs(r: dict) -> list[float]:
            """Every measurement of this configuration's noise cost: noise_cost.py's own, and the store's
            noisy rows of the same configuration against the same clean perplexity. A target is judged
            on all of them (the worst), never on the best of two."""
            same = [x for x in rs if x["method"] == r["method"] and x["memory"] == "reram"]
            return [r["noise_cost"], *(x["ppl"] / r["clean_ppl"] - 1 for x in same)]

        best = min(usable, key=lambda r: max(costs(r)))
        default = d["rows"][0]

        def shown(r: dict, named: bool = True) -> str:
            c = costs(r)
            extra = (
                f" (all {len(c)} measurements: " + ", ".join(f"{100 * x:+.1f}%" for x in c) + ")" if len(c) > 1 else ""
            )
            return (f"{r['method']} " if named else "") + f"{100 * max(c):+.1f}%{extra}"

        lines.append(
            f"- noise cost (noisy ReRAM against the same codes read without error) <= 5%, judged on every "
            f"measurement of a configuration: {shown(default)}; lowest with clean perplexity <= 2x FP {shown(best)} "
            "(`benchmarks/noise_cost.py` and the store, below): "
            + (
                "**reached**"
                if max(costs(default)) <= 0.05
                else f"**reached** by {best['method']}, **missed** by the default configuration"
                if max(costs(best)) <= 0.05
                else "**missed** at the default device and age"
            )
        )
        top = min(near, key=lambda r: r["ppl"])["method_text"] if near else None
        for r in d["rows"]:
            if r["method_text"] == top:
                lines.append(
                    f"  - the best variant above, {r['method']}: clean {r['clean_ppl']:.2f}, noisy "
                    f"{r['noisy_mean']:.2f} ± {r['noisy_std']:.2f}: noise cost {shown(r, named=False)}"
                )
    return lines


def _pairs_table(rs: list[dict]) -> list[str]:
    """Each configuration measured both in noisy ReRAM and with error-free cells of the same size.

    A QMC ideal row is its own quantization: with no device error the clip search has nothing to weigh,
    so its codes can differ from the noisy row's (the noise cost of the *same* codes is
    benchmarks/noise_cost.py's); eMEM-naive and the library methods store the very codes of their
    ideal-memory rows. The ratio says what the device costs a user who quantized for it."""
    ideal = {r["pair"]: r for r in rs if r["pair"] and r["memory"] == "ideal"}
    both = [(r, ideal[r["pair"]]) for r in rs if r["pair"] in ideal and r["memory"] == "reram"]
    if not both:
        return []
    out = [
        "The same configurations in noisy ReRAM and in ideal memory (QMC: `ideal_memory=true`, same bits and "
        "storage, its own clip search, so not always the same codes; eMEM-naive: RTN's codes; eMEM-HQQ/GPTQ: "
        "the library's codes):",
        "",
        "| method | whole-model bits | noisy ReRAM | ideal memory | noisy / ideal |",
        "|---|---:|---:|---:|---:|",
    ]
    for r, i in sorted(both, key=lambda p: p[0]["whole_model_bits"]):
        out.append(
            f"| {r['method']} | {r['whole_model_bits']:.3f} | {r['ppl']:.2f} ± {r['ppl_std']:.2f} | "
            f"{i['ppl']:.2f} | {r['ppl'] / i['ppl']:.3f} |"
        )
    return [*out, ""]


def _unmeasured() -> dict[str, list[str]]:
    """Per frontier sweep, the method texts of its spec with no point in the store yet."""
    from qmc_edge.sweep.spec import load_sweep_spec, method_texts

    out = {}
    for sweep in SWEEPS:
        stored = payloads(STORE, sweep) if (STORE / "points").is_dir() else []
        have = {r["method_text"] for d in stored for r in d["rows"]}
        missing = [t for t in method_texts(load_sweep_spec(HERE / "sweeps" / f"{sweep}.yaml")) if t not in have]
        if missing:
            out[sweep] = missing
    return out


def render() -> list[dict]:
    rs = rows()
    RESULTS.mkdir(exist_ok=True)
    _write(RESULTS / "frontier.json", json.dumps(rs, indent=1) + "\n")
    md = ["## The low-bit frontier: perplexity against whole-model bits", ""]
    if not rs:
        md.append("Not measured yet: run `qmc sweep benchmarks/sweeps/frontier.yaml --store benchmarks/store`.")
    for model in sorted({r["model"] for r in rs}):
        mr = [r for r in rs if r["model"] == model]
        png = RESULTS / f"frontier_{Path(model).stem}.png"
        plot(model, mr, png)
        r0 = mr[0]
        md += [
            f"### {model}",
            "",
            f"WikiText-2 test, {r0['windows']} windows of {r0['context']} tokens (the same for every row); "
            f"noisy rows: mean ± std over seeds (chips). Machine: {r0['machine']}. "
            f"Reference FP = {r0['fp_ppl']:.2f} (the model as shipped, already quantized upstream). "
            "`*` = on the frontier of its memory (no smaller row is better). Raw rows: "
            "`benchmarks/results/frontier.json`.",
            "",
            f"![frontier](results/{png.name})",
            "",
            "| method | family | memory | whole-model bits | bits/weight | ppl | x FP | seeds |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in sorted(mr, key=lambda r: (r["memory"], r["whole_model_bits"])):
            ppl = f"{r['ppl']:.2f}" + (f" ± {r['ppl_std']:.2f}" if r["seeds"] > 1 else "")
            star = " *" if r["on_frontier"] else ""
            md.append(
                f"| {r['method']}{star} | {r['family']} | {r['memory']} | {r['whole_model_bits']:.3f} | "
                f"{r['bits_per_weight']:.3f} | {ppl} | {r['ppl'] / r['fp_ppl']:.2f} | {r['seeds']} |"
            )
        md += ["", *_pairs_table(mr), "Targets:", *(_targets(mr) or ["- (rows missing to check them)"]), ""]
    todo = _unmeasured()
    if todo:
        md += ["Configurations of the frontier's specs not measured yet (run the sweep named to add them):", ""]
        md += [f"- `{sweep}`: {', '.join(f'`{t}`' for t in texts)}" for sweep, texts in todo.items()]
        md.append("")
    _write(HERE / "frontier.md", "\n".join(md) + "\n")
    return rs


if __name__ == "__main__":
    out = render()
    print(f"{len(out)} rows -> {RESULTS / 'frontier.json'}, {HERE / 'frontier.md'}")
