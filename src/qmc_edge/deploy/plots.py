"""Breakdown plots: stacked bars per memory tier for footprint, traffic, energy and latency (PNG).

Matplotlib with the Agg backend (no display needed); each file is written to a temporary name in the
target folder and renamed, so a reader never sees half a PNG.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from qmc_edge.errors import QMCError  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def _stack(ax, labels: list[str], parts: dict[str, list[float]], title: str, unit: str) -> None:
    bottom = [0.0] * len(labels)
    for name, vals in parts.items():
        if not any(v > 0 for v in vals):
            continue
        ax.bar(range(len(labels)), vals, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=6)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(unit, fontsize=8)
    ax.legend(fontsize=6)


def breakdown_plot(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """One PNG with four panels over the (method, platform) rows of
    :func:`qmc_edge.deploy.headline.deploy_table`: weights+KV footprint per tier, decode bytes per token
    per tier, decode energy per token (dynamic per tier, compute, static) and latency per token
    (fixed overhead + memory/compute time)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise QMCError(f"cannot write plot {path}: folder {path.parent} does not exist")
    labels = [f"{r['method']} @ {r['platform']}" for r in rows]
    tiers = list(rows[0]["footprint_tier_bytes"])
    fig, axes = plt.subplots(2, 2, figsize=(13, 11))
    _stack(
        axes[0, 0],
        labels,
        {t: [r["footprint_tier_bytes"][t] / 1e6 for r in rows] for t in tiers},
        "footprint per tier",
        "MB",
    )
    _stack(
        axes[0, 1],
        labels,
        {
            t: [(r["decode"]["bytes_read_tier"][t] + r["decode"]["bytes_written_tier"][t]) / 1e6 for r in rows]
            for t in tiers
        },
        "decode traffic per token, per tier",
        "MB / token",
    )
    energy = {t: [r["decode"]["energy_dynamic_tier_J"][t] * 1e3 for r in rows] for t in tiers}
    energy["compute"] = [r["decode"]["energy_compute_J"] * 1e3 for r in rows]
    energy["dequantization"] = [r["decode"].get("energy_dequant_J", 0.0) * 1e3 for r in rows]
    energy["static (leakage)"] = [r["decode"]["energy_static_J"] * 1e3 for r in rows]
    _stack(axes[1, 0], labels, energy, "decode energy per token", "mJ / token")
    lat = {
        "fixed overhead": [r["decode"]["overhead_s"] * 1e3 for r in rows],
        "memory / compute (combined as the platform says)": [
            (r["decode"]["latency_s"] - r["decode"]["overhead_s"]) * 1e3 for r in rows
        ],
    }
    _stack(axes[1, 1], labels, lat, "decode latency per token", "ms / token")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def waterfall_plot(ledger: dict, path: str | Path) -> Path:
    """One claim's ledger (:func:`qmc_edge.claims.ledger.run_ledger`) as a waterfall: the default's ratio,
    then each step as a bar floating from the ratio before it to the ratio after it (green up, red
    down), the paper's figure as a band, and the measured perplexity under each quantization step."""
    path = Path(path)
    if not path.parent.is_dir():
        raise QMCError(f"cannot write plot {path}: folder {path.parent} does not exist")
    steps = ledger["steps"]
    import textwrap

    labels = ["0. default"] + [
        "\n".join(textwrap.wrap(f"{s['step']}. {s['assumption']}", 30, max_lines=3, placeholder=" ...")) for s in steps
    ]
    vals = [ledger["default"]["ratio"]] + [s["ratio"] for s in steps]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) + 2), 5.2))
    ax.bar(0, vals[0], color="#4c72b0")
    for i in range(1, len(vals)):
        lo, hi = sorted((vals[i - 1], vals[i]))
        ax.bar(i, max(hi - lo, 1e-9), bottom=lo, color="#55a868" if vals[i] >= vals[i - 1] else "#c44e52")
        ax.plot([i - 1.4, i + 0.4], [vals[i - 1], vals[i - 1]], color="grey", lw=0.6, ls=":")
    paper = ledger["paper"]
    ax.axhspan(paper["low"] * 0.995, paper["high"] * 1.005, color="orange", alpha=0.35, label=f"paper {paper['text']}")
    ppl = {0: ledger["default"]["accuracy"]}
    for s in steps:
        if s.get("accuracy") is not None:
            ppl[s["step"]] = s["accuracy"]
    top = max(vals + [paper["high"]]) * 1.12
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.2f}x", ha="center", va="bottom", fontsize=7)
        if i in ppl:
            a = [x for x in ppl[i] if x.get("ppl") is not None]
            txt = "ppl " + ", ".join(f"{x['ppl']:.0f}" for x in a) if a else "ppl: not measured"
            box = {"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1}
            ax.text(i, top * 0.02, txt, ha="center", va="bottom", fontsize=6, rotation=90, color="#333", bbox=box)
    ax.set_ylim(0, top)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=6)
    ax.set_ylabel(f"ratio vs FP16 ({ledger['steps'][-1]['metric'] if steps else ledger['default']['metric']})")
    ax.set_title(f"{ledger['claim']} on {ledger['arch']}: our ledger against the paper", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, path)
