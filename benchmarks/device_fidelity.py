"""Device fidelity: perplexity against ReRAM age, noise scale and MRAM bit error rate (with and
without SECDED), the noise-aware clipping ablation fresh and aged, and read noise against
programming error at equal total sigma.

Each method is quantized once (its clip search targets the fresh cells unless the row says
target_age) and its stored codes are then read through the device at each setting, one noise
realisation per seed: the same chip, read later or under other assumptions.

Writes benchmarks/results/device_fidelity_<model>.json, benchmarks/device_fidelity.md and
benchmarks/results/device_fidelity_<model>.png (stitched into BENCHMARKS.md by render.py).
Usage: python benchmarks/device_fidelity.py [--model PATH] [--windows 4] [--context 1024] [--seeds 3]
       [--age-methods qmc3,emem3] [--sections age,reference] [--ages fresh,1d]
--render-only redraws the plots and tables from the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import load_for_ppl, run_header, write_json  # noqa: E402

from qmc_edge.methods import parse_method  # noqa: E402
from qmc_edge.methods.whole_model import quantize_model, storage_report  # noqa: E402
from qmc_edge.model.perplexity import perplexity  # noqa: E402
from qmc_edge.quant.qmodel import QuantizedModel  # noqa: E402

AGES = [None, "1min", "1h", "1d", "1y", "10y"]
# Each age method is named by a preset or a spec; eMEM-GPTQ is our own GPTQ rounding (the solver of
# QMC+GPTQ) on eMEM-naive's min-max grid with no outlier split: llm-compressor's GPTQ is an optional
# extra whose pins do not install beside the main environment.
EMEM_GPTQ = "qmc:bits=3,cell_bits=3,rho=0,noise_aware=false,n_clip=1,rounding=gptq"
AGE_METHODS = {
    "qmc3": "QMC 3b @3b/cell",
    "qmc3-gptq": "QMC+GPTQ 3b @3b/cell",
    "emem3": "eMEM-naive 3b @3b/cell",
    EMEM_GPTQ: "eMEM-GPTQ 3b @3b/cell (own GPTQ, min-max grid)",
    "qmc4": "QMC 4b @2b/cell",
    "emem4": "eMEM-naive 4b @2b/cell",
}
SCALE_METHODS = ["qmc3", "emem3"]
SCALES = [0.5, 1.0, 2.0, 4.0]  # x1 is the fresh age row, not read again
BERS = [1e-9, 1e-7, 1e-5, 1e-4, 1e-3]
READ_SHARES = [0.0, 0.5, 1.0]  # 0 is the frozen row of the age table
READ_AGES = [None, "1d"]
REFERENCE_AGES = ["1h", "1d", "1y", "10y"]  # fixed read thresholds against thresholds that track the drift
SECTIONS = (
    "age",
    "noise_aware",
    "read_share",
    "reference",
    "noise_scale",
    "mram",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--age-methods", default=None, help="comma-separated keys of AGE_METHODS to run (default all; a short run)"
    )
    ap.add_argument("--sections", default=None, help=f"comma-separated, some of {', '.join(SECTIONS)} (default all)")
    ap.add_argument("--ages", default=None, help="comma-separated ages for the age section (default all; fresh = 1 s)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    lm, src, ids, bos, model_name = load_for_ppl(args.model, args.threads)
    seeds = list(range(args.seeds))
    age_methods = dict(AGE_METHODS)
    if args.age_methods:
        age_methods = {k: AGE_METHODS.get(k, k) for k in args.age_methods.split(",")}

    cache: dict[str, QuantizedModel] = {}

    def quantized(text: str) -> QuantizedModel:
        if text not in cache:
            spec = parse_method(text)
            cache[text] = quantize_model(lm.model, spec, tokenizer=lm.tokenizer)
            print(f"quantized {spec.name} in {cache[text].quantize_seconds:.1f} s", flush=True)
        return cache[text]

    # PPL per (row, seed) already measured with the same settings: a run cut short resumes, and a
    # run with more seeds measures only the new ones. results/ is not tracked.
    cache_path = HERE.parent / "results" / f"device_fidelity_cache_{model_name}.json"
    key0 = f"{args.context}x{args.windows}"
    done: dict[str, float] = json.loads(cache_path.read_text(encoding="utf-8")) if cache_path.is_file() else {}

    def read_as(base: str, extra: str) -> dict:
        """The codes of ``base`` read through the device options ``extra`` (same chip, other read)."""
        joiner = "," if ":" in base else ":"
        spec = parse_method(f"{base}{joiner}{extra}" if extra else base)
        vals, secs = [], []
        for s in seeds if spec.noisy else [None]:
            key = f"{key0} {base} {extra} seed {s}"
            if key not in done:
                qm = quantized(base)
                view = QuantizedModel(spec, qm.tensors, qm.quantize_seconds, qm.reference, qm.overrides, qm.info)
                t = time.perf_counter()
                view.realise(lm.model, s)
                again = None
                if view.rereads:  # read noise: each window is a new read of chip s

                    def again(i: int, s: int | None = s, view: QuantizedModel = view) -> None:
                        if i:
                            view.realise(lm.model, s, read=i)

                done[key] = perplexity(lm.model, ids, args.context, args.windows, bos, before_window=again).ppl
                view.restore(lm.model)
                secs.append(time.perf_counter() - t)
                cache_path.parent.mkdir(exist_ok=True)
                tmp = cache_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(done), encoding="utf-8")
                tmp.replace(cache_path)
            vals.append(done[key])
        row = {"method": spec.name, "spec": spec.model_dump(), "ppl_per_seed": vals}
        finite = all(math.isfinite(v) for v in vals)
        row["ppl_mean"] = statistics.fmean(vals) if finite else float("inf")
        row["ppl_std"] = (statistics.stdev(vals) if len(vals) > 1 else 0.0) if finite else float("nan")
        if spec.uses_reram:
            d = spec.cells().describe()
            row["cell_error_rate"] = d.get("mean_cell_error_rate")
            row["age_extrapolated"] = d.get("age_extrapolated")
        took = f" ({statistics.fmean(secs):.0f} s/seed)" if secs else " (cached)"
        print(f"{spec.name}: {row['ppl_mean']:.2f} ± {row['ppl_std']:.2f}{took}", flush=True)
        return row

    fp = perplexity(lm.model, ids, args.context, args.windows, bos).ppl
    print(f"FP: {fp:.3f}", flush=True)
    out: dict = {
        "fp_ppl": fp,
        "age": {},
        "noise_scale": {},
        "mram": {},
        "noise_aware": [],
        "read_share": [],
        "reference": [],
    }
    ages = [None if a == "fresh" else a for a in args.ages.split(",")] if args.ages else AGES
    sections = set(args.sections.split(",")) if args.sections else set(SECTIONS)
    if sections - set(SECTIONS):
        raise SystemExit(f"unknown sections {sorted(sections - set(SECTIONS))}; use some of {', '.join(SECTIONS)}")

    def at(base: str, age: str | None, extra: str = "") -> dict:
        return read_as(base, ",".join(x for x in (f"age={age}" if age else "", extra) if x))

    if "age" in sections:
        for m, label in age_methods.items():
            out["age"][m] = [dict(at(m, a), age=a or "fresh", label=label) for a in ages]
    if "noise_aware" in sections:
        for age in (None, "1d"):
            out["noise_aware"].append(dict(at("qmc3", age), variant="noise-aware, target fresh", age=age or "fresh"))
        for base, label in (
            ("qmc:bits=3,cell_bits=3,noise_aware=false", "noise-blind"),
            ("qmc:bits=3,cell_bits=3,target_age=1d", "noise-aware, target 1d"),
        ):
            for age in (None, "1d"):
                if label.endswith("1d") and age is None:
                    continue  # a clip search aimed at 1 day, read fresh, is not a deployment anyone runs
                out["noise_aware"].append(dict(at(base, age), variant=label, age=age or "fresh"))
    if "read_share" in sections:
        for age in READ_AGES:
            for share in READ_SHARES:
                r = at("qmc3", age, f"read_share={share:g}" if share else "")
                out["read_share"].append(dict(r, read_share=share, age=age or "fresh"))
    if "reference" in sections:
        for age in REFERENCE_AGES:
            out["reference"].append(dict(at("qmc3", age), read_reference="fixed", age=age))
            out["reference"].append(dict(at("qmc3", age, "read_reference=aged"), read_reference="aged", age=age))
    if "noise_scale" in sections:
        for m in SCALE_METHODS:
            out["noise_scale"][m] = [
                dict(read_as(m, f"noise_scale={s}" if s != 1.0 else ""), noise_scale=s) for s in SCALES
            ]
    if "mram" in sections:
        for ecc in ("none", "secded"):
            base = "qmc3" if ecc == "none" else "qmc3:mram_ecc=secded"
            out["mram"][ecc] = [dict(read_as(base, f"mram_ber={ber:g}"), mram_ber=ber) for ber in BERS]
        rep = storage_report(lm.model, parse_method("qmc3:mram_ecc=secded"), quantized("qmc3:mram_ecc=secded"))
        out["mram_ecc_check_bits_per_weight"] = rep["bits_by_component"]["ecc_check_bits"] / rep["quantized_params"]
    payload = dict(
        run_header("device_fidelity.py", model_name, lm.note, src.label, args.context, args.windows, t0),
        seeds=seeds,
        **out,
    )
    res = HERE / "results" / f"device_fidelity_{model_name}.json"
    write_json(res, payload)
    plot(payload, HERE / "results" / f"device_fidelity_{model_name}.png")
    write_md()
    print(f"wrote {res}")


def plot(d: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
    ax = axes[0]
    secs = {"fresh": 1, "1min": 60, "1h": 3600, "1d": 86400, "1y": 3.156e7, "10y": 3.156e8}
    for rows in d["age"].values():
        ax.errorbar(
            [secs[r["age"]] for r in rows],
            [_f(r["ppl_mean"]) for r in rows],
            [_f(r["ppl_std"]) for r in rows],
            marker="o",
            label=rows[0].get("label", rows[0]["method"]),
            capsize=3,
        )
    aged = [r for r in d.get("reference", []) if r["read_reference"] == "aged"]
    if aged and "qmc3" in d["age"]:
        fresh = d["age"]["qmc3"][0]
        pts = [fresh, *aged]
        ax.errorbar(
            [secs[r["age"]] for r in pts],
            [_f(r["ppl_mean"]) for r in pts],
            [_f(r["ppl_std"]) for r in pts],
            marker="s",
            ls="--",
            color="k",
            label="QMC 3b @3b/cell, aged references",
            capsize=3,
        )
    ax.axvspan(3600, 3.2e8, color="0.9", label="extrapolated (> 1 h)")
    ax.set(xscale="log", yscale="log", xlabel="time since programming (s)", ylabel="WikiText-2 PPL", title="age")
    ax.axhline(d["fp_ppl"], color="k", ls=":", label="FP")
    ax = axes[1]
    for rows in d["noise_scale"].values():
        ax.errorbar(
            [r["noise_scale"] for r in rows],
            [_f(r["ppl_mean"]) for r in rows],
            [_f(r["ppl_std"]) for r in rows],
            marker="o",
            label=rows[1]["method"],
            capsize=3,
        )
    ax.set(xscale="log", yscale="log", xlabel="noise_scale (x programmed sigma)", title="noise scale")
    ax.axhline(d["fp_ppl"], color="k", ls=":")
    ax = axes[2]
    for ecc, rows in d["mram"].items():
        # One faulty scale exponent decides a chip: the median over chips, and every chip as a dot.
        line = ax.plot(
            [r["mram_ber"] for r in rows],
            [statistics.median(_inf(r["ppl_per_seed"])) for r in rows],
            marker="o",
            label=f"QMC 3b, ECC {ecc} (median; dots: chips)",
        )[0]
        for r in rows:
            ax.scatter([r["mram_ber"]] * len(r["ppl_per_seed"]), _inf(r["ppl_per_seed"]), s=10, color=line.get_color())
    ax.set(
        xscale="log", yscale="log", xlabel="MRAM raw bit error rate", title="MRAM faults, every field (inf not drawn)"
    )
    ax.axhline(d["fp_ppl"], color="k", ls=":")
    ax = axes[3]
    by_age: dict[str, list[dict]] = {}
    for r in d.get("read_share", []):
        by_age.setdefault(r["age"], []).append(r)
    for age, rows in by_age.items():
        for r in rows:
            ax.scatter([r["read_share"]] * len(r["ppl_per_seed"]), r["ppl_per_seed"], s=12, color="0.5")
        ax.errorbar(
            [r["read_share"] for r in rows],
            [_f(r["ppl_mean"]) for r in rows],
            [_f(r["ppl_std"]) for r in rows],
            marker="o",
            label=f"QMC 3b, age {age}",
            capsize=3,
        )
    ax.set(xlabel="share of each level's variance redrawn per read", title="read noise vs programming, equal sigma")
    ran = [bool(d["age"]), bool(d["noise_scale"]), bool(d["mram"]), bool(d.get("read_share"))]
    for ax, has in zip(axes, ran, strict=True):
        if not has:
            ax.cla()
            ax.text(0.5, 0.5, "not run for this model", ha="center", va="center", transform=ax.transAxes)
            ax.set(xticks=[], yticks=[])
        elif ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{d['model']}: {d['text']}, {d['windows']} x {d['context']} tokens, seeds {d['seeds']}")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def _num(x) -> str:
    if x is None or not math.isfinite(x):
        return "inf"
    return f"{x:.2f}" if x < 1e4 else f"{x:.2e}"


def _cell(r: dict) -> str:
    if r["ppl_mean"] is None or len(r["ppl_per_seed"]) < 2:
        return _num(r["ppl_mean"])
    return f"{_num(r['ppl_mean'])} ± {_num(r['ppl_std'])}"


def _inf(xs: list) -> list[float]:
    """Per-seed PPLs as floats: the JSON writes an infinite PPL as null."""
    return [float("inf") if x is None else float(x) for x in xs]


def _f(x) -> float:
    return float("nan") if x is None else float(x)


def section(d: dict) -> str:
    lines = [
        f"### Device fidelity: {d['model']}",
        "",
        f"- command: `{d['command'].strip()}`",
        f"- date: {d['date']}; machine: {d['machine']}; wall time {d['wall_seconds'] / 60:.1f} min "
        "(rows measured by an earlier run of the same settings are read from its cache)",
        f"- model: {d['note']}",
        f"- text: {d['text']}, first {d['windows']} windows of {d['context']} tokens (a short run); "
        f"FP {d['fp_ppl']:.2f}; mean ± std over seeds {d['seeds']} (a seed is a chip)",
        "- each method quantized once; the same codes read at each setting (same chip, other read). Ages past "
        "1 h are extrapolated from the relaxation fit (measured 1 s - 1 h), marked *",
        "",
        "**Age** (default device `nvmexplorer_rram`, fixed read thresholds):",
        "",
        "| method | "
        + " | ".join(r["age"] + ("*" if r.get("age_extrapolated") else "") for r in next(iter(d["age"].values())))
        + " | first listed age past 2x fresh |",
        "|---|" + "---:|" * (len(next(iter(d["age"].values()))) + 1),
    ]
    for rows in d["age"].values():
        fresh = rows[0]["ppl_mean"]
        past = next((r["age"] for r in rows if _f(r["ppl_mean"]) > 2 * fresh or r["ppl_mean"] is None), "never")
        name = rows[0].get("label", rows[0]["method"])
        lines.append(f"| {name} | " + " | ".join(_cell(r) for r in rows) + f" | {past} |")
    if d["noise_scale"]:
        lines += [
            "",
            "**Noise scale** (programmed sigmas x k, fresh):",
            "",
            "| method | " + " | ".join(f"x{s:g}" for s in SCALES) + " |",
            "|---|" + "---:|" * len(SCALES),
        ]
        for rows in d["noise_scale"].values():
            lines.append(f"| {rows[1]['method']} | " + " | ".join(_cell(r) for r in rows) + " |")
    if d["mram"]:
        bers = [r["mram_ber"] for r in next(iter(d["mram"].values()))]
        lines += [
            "",
            f"**MRAM raw bit error rate**, QMC 3b, faults in every MRAM field (outlier codes, outlier scale, CSR "
            f"indices, scales, zero points); SECDED costs {d['mram_ecc_check_bits_per_weight']:.3f} bits per weight; "
            "a mean over chips is dominated by any chip whose scale exponent flipped (the plot shows every chip):",
            "",
            "| ECC | " + " | ".join(f"{b:g}" for b in bers) + " |",
            "|---|" + "---:|" * len(bers),
        ]
        for ecc, rows in d["mram"].items():
            lines.append(f"| {ecc} | " + " | ".join(_cell(r) for r in rows) + " |")
    if d["noise_aware"]:
        lines += ["", "**Noise-aware clipping** (QMC 3b, 3 bits/cell):", ""]
        lines += ["| variant | fresh | 1d* |", "|---|---:|---:|"]
        variants: dict[str, dict] = {}
        for r in d["noise_aware"]:
            variants.setdefault(r["variant"], {})[r["age"]] = r
        for v, by in variants.items():
            lines.append(f"| {v} | {_cell(by['fresh']) if 'fresh' in by else '-'} | {_cell(by['1d'])} |")
        lines += ["", _noise_vs_rounding(variants)]
    if d.get("read_share"):
        ages = list(dict.fromkeys(r["age"] for r in d["read_share"]))
        shares = list(dict.fromkeys(r["read_share"] for r in d["read_share"]))
        at = {(r["age"], r["read_share"]): r for r in d["read_share"]}
        lines += [
            "",
            "**Read noise against programming error at equal total sigma** (QMC 3b, 3 bits/cell; `read_share` "
            "= share of each level's variance redrawn at every read, each window a new read; 0 = all frozen in "
            "the chip; the error rate of one read is the same in every column):",
            "",
            "| age | " + " | ".join(f"read_share={s:g}" for s in shares) + " |",
            "|---|" + "---:|" * len(shares),
        ]
        for age in ages:
            lines.append(f"| {age} | " + " | ".join(_cell(at[(age, s)]) for s in shares) + " |")
    if d.get("reference"):
        ages = list(dict.fromkeys(r["age"] for r in d["reference"]))
        at = {(r["age"], r["read_reference"]): r for r in d["reference"]}
        lines += [
            "",
            "**Read thresholds** (QMC 3b, 3 bits/cell): `fixed` references set at programming against `aged` "
            "ones that track the relaxation (the level means drift down together; the narrow top level "
            "crosses its fixed threshold first, so the largest code of each group reads one step low):",
            "",
            "| read_reference | " + " | ".join(f"{a}*" if a not in ("1h",) else a for a in ages) + " |",
            "|---|" + "---:|" * len(ages),
        ]
        for ref in ("fixed", "aged"):
            lines.append(f"| {ref} | " + " | ".join(_cell(at[(a, ref)]) for a in ages) + " |")
    lines += ["", f"![device fidelity](benchmarks/results/device_fidelity_{d['model']}.png)", ""]
    return "\n".join(lines)


def _noise_vs_rounding(variants: dict[str, dict]) -> str:
    """Why the noise-aware clip search gains little fresh: the read error it can trade against is
    small next to the rounding error. Mean squared code error of one read of 3-bit codes in 3-bit
    cells (in quantization steps squared, averaged over the 8 codes) against a uniform rounding
    error's 1/12, at each age; then what the rows of ``variants`` measured."""
    from qmc_edge.memory.cells import code_error_moments
    from qmc_edge.memory.models import reram

    cells = []
    for age in AGES:
        _, m2 = code_error_moments(3, reram(3, age_s=age or 0.0))
        cells.append(f"{age or 'fresh'} {float(m2.mean()):.3f} ({float(m2.mean()) * 12:.2f}x)")
    aware, blind = variants["noise-aware, target fresh"]["fresh"], variants["noise-blind"]["fresh"]
    gap = (_f(blind["ppl_mean"]) - _f(aware["ppl_mean"])) / _f(aware["ppl_mean"])
    sd = max(_f(aware["ppl_std"]), _f(blind["ppl_std"]))
    within = abs(_f(blind["ppl_mean"]) - _f(aware["ppl_mean"])) <= sd
    fresh = (
        f"noise-blind is {abs(gap):.1%} {'worse' if gap > 0 else 'better'} fresh, "
        f"{'within' if within else 'outside'} one seed-to-seed sd"
    )
    return (
        "Why: the clip search trades clipping against the step, and the read error it can take into "
        "account is small next to the rounding error until the cells age. Mean squared code error of "
        "one read (3-bit codes in 3-bit cells, steps², mean over codes; in brackets, against uniform "
        "rounding's 1/12): " + ", ".join(cells) + ". Fresh, noise adds a few percent to each weight's "
        f"error and moves the best clip little ({fresh}); at 1 d it is comparable to rounding and aiming "
        "the search at 1 d pays."
    )


def write_md() -> None:
    parts = ["## Device fidelity: age, noise scale, MRAM faults", ""]
    for p in sorted((HERE / "results").glob("device_fidelity_*.json")):
        parts.append(section(json.loads(p.read_text(encoding="utf-8"))))
    md = HERE / "device_fidelity.md"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    tmp.replace(md)
    import render

    render.render()


if __name__ == "__main__":
    if sys.argv[1:] == ["--render-only"]:
        for p in sorted((HERE / "results").glob("device_fidelity_*.json")):
            plot(json.loads(p.read_text(encoding="utf-8")), p.with_suffix(".png"))
        write_md()
    else:
        main()
