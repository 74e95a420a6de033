"""`qmc report STORE`: Pareto frontiers and a self-contained page from a results store.

Points are aggregated over their seeds (mean and sample standard deviation of the perplexity). A
frontier is drawn per method family and memory kind (ideal or noisy): the points no other point of that
line beats on both axes. Three panels: perplexity against whole-model bits per parameter, against
decode energy per token and against decode latency per token (one marker shape per platform).
"""

from __future__ import annotations

import base64
import html
import json
import statistics
from pathlib import Path

from qmc_edge.errors import QMCError
from qmc_edge.sweep.store import SCHEMA, Store


def aggregate(store: Store, keys: set[str] | None = None) -> list[dict]:
    """Points (seeds aggregated), only those of ``keys`` when given."""
    rows = [r for r in store.read().to_pylist() if keys is None or r["key"] in keys]
    points: dict[str, dict] = {}
    for r in rows:
        p = points.setdefault(r["key"], {**r, "ppls": [], "tasks": []})
        if r["ppl"] is not None:
            p["ppls"].append(r["ppl"])
        if r["tasks_json"]:
            p["tasks"].append(json.loads(r["tasks_json"]))
    out = []
    for p in points.values():
        pp = p.pop("ppls")
        p["ppl_mean"] = statistics.fmean(pp) if pp else None
        p["ppl_std"] = statistics.stdev(pp) if len(pp) > 1 else (0.0 if pp else None)
        p["n_seeds"] = len(pp) or len(p["tasks"]) or 1
        acc: dict[str, list[float]] = {}
        for t in p.pop("tasks"):
            for name, m in t.items():
                v = m.get("acc_norm", m.get("acc"))
                if v is not None:
                    acc.setdefault(name, []).append(v)
        p["task_acc"] = {k: statistics.fmean(v) for k, v in acc.items()}
        p["deploy"] = json.loads(p["deploy_json"]) if p.get("deploy_json") else {}
        out.append(p)
    return sorted(out, key=lambda p: (p["model"], p["family"], p["whole_model_bits"] or 0))


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points not dominated by another (smaller or equal x and y, one strictly): ascending x."""
    best: list[tuple[float, float]] = []
    for x, y in sorted(points):
        if not best or y < best[-1][1]:
            best.append((x, y))
    return best


def _line_key(p: dict, models: int = 1) -> str:
    kind = "ideal" if p["ideal_memory"] or not p["noisy"] else "noisy"
    return f"{p['family']} ({kind})" + (f", {Path(p['model']).name}" if models > 1 else "")


def frontier_plot(points: list[dict], path: Path, title: str) -> Path:
    from qmc_edge.deploy.plots import plt, save_figure

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    platforms = sorted({k for p in points for k in p["deploy"]})
    # A design that overflows a tier of a platform is no point on that platform's frontier.
    for p in points:
        p["deploy"] = {k: v for k, v in p["deploy"].items() if v.get("fits", True)}
    markers = dict(zip(platforms, "os^Dv<>", strict=False))
    n_models = len({p["model"] for p in points})
    lines = sorted({_line_key(p, n_models) for p in points})
    colors = {k: plt.cm.tab10(i % 10) for i, k in enumerate(lines)}
    panels = [
        ("whole-model bits per parameter", lambda p, _: p["whole_model_bits"], [None]),
        ("decode energy per token (mJ)", lambda p, pl: p["deploy"].get(pl, {}).get("energy_mJ_per_token"), platforms),
        ("decode latency per token (ms)", lambda p, pl: p["deploy"].get(pl, {}).get("latency_ms_per_token"), platforms),
    ]
    for ax, (xlabel, getx, plats) in zip(axes, panels, strict=True):
        for line in lines:
            for pl in plats:
                pts = [
                    (getx(p, pl), p["ppl_mean"])
                    for p in points
                    if _line_key(p, n_models) == line and p["ppl_mean"] is not None and getx(p, pl) is not None
                ]
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                label = line if pl is None else f"{line} @ {pl}"
                ax.scatter(xs, ys, color=colors[line], marker=markers.get(pl, "o"), s=22, alpha=0.6)
                fx, fy = zip(*pareto(pts), strict=True)
                ax.plot(fx, fy, color=colors[line], lw=1.2, label=label)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("WikiText-2 perplexity (mean over seeds)", fontsize=8)
        ax.set_yscale("log")
        ax.legend(fontsize=5.5)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def _fmt(v, spec: str = "{:.2f}") -> str:
    return "-" if v is None else spec.format(v)


def table_rows(points: list[dict]) -> tuple[list[str], list[list[str]]]:
    platforms = sorted({k for p in points for k in p["deploy"]})
    tasks = sorted({k for p in points for k in p["task_acc"]})
    head = ["model", "method", "bits/weight", "whole-model bits", "ppl", "seeds"]
    head += [f"{t} acc_norm" for t in tasks]
    head += [f"{pl} mJ/tok" for pl in platforms] + [f"{pl} ms/tok" for pl in platforms]
    body = []
    for p in points:
        ppl = "-" if p["ppl_mean"] is None else f"{p['ppl_mean']:.2f} ± {p['ppl_std']:.2f}"
        row = [p["model"], p["method"], _fmt(p["bits_per_weight"]), _fmt(p["whole_model_bits"]), ppl, str(p["n_seeds"])]
        row += [_fmt(p["task_acc"].get(t), "{:.3f}") for t in tasks]
        row += [_fmt(p["deploy"].get(pl, {}).get("energy_mJ_per_token"), "{:.3f}") for pl in platforms]
        row += [_fmt(p["deploy"].get(pl, {}).get("latency_ms_per_token"), "{:.3f}") for pl in platforms]
        body.append(row)
    return head, body


def _current_keys(spec_file: Path) -> set[str] | None:
    """The keys of the spec last run into the store (None when it cannot be read: then show all)."""
    if not spec_file.is_file():
        return None
    from qmc_edge.sweep.spec import expand, load_sweep_spec

    try:
        return {p.key for p in expand(load_sweep_spec(spec_file))}
    except QMCError:
        return None


def _cell(text: str) -> str:
    """A Markdown table cell: a label's | or line break would split the row."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def write_report(store_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """frontier PNG + report.md + report.html (the PNG embedded) in ``out_dir`` (default: the store)."""
    store = Store(store_dir)
    if not store.points.is_dir():
        raise QMCError(f"{store_dir} is not a results store (no points/ folder); run `qmc sweep SPEC --store DIR`")
    out = Path(out_dir or store_dir)
    if out.exists() and not out.is_dir():
        raise QMCError(f"--out {out} is a file; give a folder for report.md, report.html and frontier.png")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QMCError(f"cannot create {out} ({exc.strerror or exc}); give a writable --out folder") from None
    spec_file = store.root / "sweep.yaml"
    spec_text = spec_file.read_text(encoding="utf-8") if spec_file.is_file() else "(no spec recorded)"
    keys = _current_keys(spec_file)
    points = aggregate(store, keys)
    failed = {k: v for k, v in store.failed().items() if keys is None or k in keys}
    stale = 0 if keys is None else len(store.done() - keys)
    damaged = store.damaged()
    name = points[0]["sweep"] if points else store.root.name
    png = frontier_plot(points, out / "frontier.png", f"sweep {name}: Pareto frontiers") if points else None
    head, body = table_rows(points)
    versions = points[0]["versions_json"] if points else "{}"
    md = [f"# Sweep {name}", "", f"{len(points)} points done, {len(failed)} failed. Store: `{store.root}`."]
    if stale:
        md.append(f"{stale} other points in the store (another spec, settings or qmc-edge version) are not shown.")
    if damaged:
        md.append(f"{len(damaged)} damaged point files are left out; the next `qmc sweep` recomputes them:")
        md += [f"- `{k}`: {why}" for k, why in sorted(damaged.items())]
    md.append("")
    if png:
        md += [f"![frontier]({png.name})", ""]
    md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in body]
    if failed:
        md += ["", "## Failed points", ""] + [f"- {f['model']} / {f['method']}: {f['error']}" for f in failed.values()]
    md += ["", "## Spec", "", "```yaml", spec_text.rstrip(), "```", "", "## Environment", "", f"`{versions}`", ""]
    md += ["## Columns of the store", ""] + [f"- `{k}`: {v}" for k, v in SCHEMA.items()]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    img = ""
    if png:
        b64 = base64.b64encode(png.read_bytes()).decode()
        img = f'<img alt="frontier" src="data:image/png;base64,{b64}" style="max-width:100%">'
    rows_html = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    fail_html = "".join(
        f"<li>{html.escape(f['model'])} / {html.escape(f['method'])}: {html.escape(f['error'])}</li>"
        for f in failed.values()
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Sweep {html.escape(name)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}"
        "table{border-collapse:collapse}</style></head><body>"
        f"<h1>Sweep {html.escape(name)}</h1><p>{len(points)} points done, {len(failed)} failed, "
        f"{len(damaged)} damaged (left out; recomputed by the next sweep).</p>{img}"
        "<table><tr>"
        + "".join(f"<th>{html.escape(h)}</th>" for h in head)
        + f"</tr>{rows_html}</table>"
        + (f"<h2>Failed points</h2><ul>{fail_html}</ul>" if failed else "")
        + f"<h2>Spec</h2><pre>{html.escape(spec_text)}</pre><h2>Environment</h2><pre>{html.escape(versions)}</pre>"
        "</body></html>"
    )
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    res = {"markdown": md_path, "html": html_path, "damaged": damaged}
    if png:
        res["frontier"] = png
    return res
