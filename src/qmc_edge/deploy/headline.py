"""The cost model's tables for people: one flat row per (method, platform) design point
(:func:`deploy_table`), the ratios against a baseline (:func:`headline`, :func:`headline_rows`), the
one-off cost of loading weights into non-volatile tiers (:func:`load_cost`), and the sensitivity bands
over the ranged figures of the platform files (:func:`sensitivity`). The paper's own figures are
:data:`PAPER_HEADLINE`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from qmc_edge.deploy.arch import Arch
from qmc_edge.deploy.demand import Demand, MethodCost, Workload, demand
from qmc_edge.deploy.placement import CLASSES, WEIGHT_CLASSES, check_capacity, placement_matrix, tier_names
from qmc_edge.deploy.platform import Platform, load_platform
from qmc_edge.deploy.system import evaluate, platform_arrays, to_tiers
from qmc_edge.errors import QMCError

#: The QMC paper's abstract (arXiv 2601.14549, via ../shared/reference/hardware.md): ratios vs FP16.
PAPER_HEADLINE = {
    "memory": "6.3-7.3x",
    "off_chip": "7.6x",
    "energy": "11.7x (10.98x in body summaries)",
    "latency": "12.5x",
    "area_mm2": "21.6",
}


# ------------------------------------------------------------------------------- high-level API
def resolve_platforms(platforms: Sequence[str | Platform]) -> list[Platform]:
    """The platforms, loaded; two under one ``name:`` are refused (their rows could not be told apart,
    and a JSON keyed by name would keep one)."""
    out = [p if isinstance(p, Platform) else load_platform(p) for p in platforms]
    names = [p.name for p in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise QMCError(f"two platforms are named {twice[0]!r}; give each file its own name:")
    return out


def _scalar(x):
    a = np.asarray(x)
    if a.ndim == 0:
        return float(a)
    return a.tolist()


def _flatten(res: dict, i: int | tuple) -> dict:
    """One design point of an evaluate() result as plain Python (per-tier arrays become dicts)."""
    tiers = res["tiers"]
    out: dict = {}
    for k, v in res.items():
        if k == "tiers":
            continue
        if isinstance(v, dict):
            out[k] = _flatten({"tiers": tiers, **v}, i)
        elif k.endswith("_tier") or "_tier_" in k:
            a = np.asarray(v)
            a = a[i] if a.ndim >= 2 else a  # platform-only arrays have no design-point axis
            out[k] = {t: float(a[j]) for j, t in enumerate(tiers)}
        else:
            a = np.asarray(v)
            out[k] = _scalar(a[i] if a.ndim >= 1 else a)
    return out


def deploy_table(
    arch: Arch,
    costs: dict[str, MethodCost],
    platforms: Sequence[str | Platform],
    workload: Workload | None = None,
    check: bool = True,
) -> list[dict]:
    """Every method on every platform at the platforms' nominal figures: one dict per (method, platform)
    with footprint, per-token decode and per-prompt prefill figures. ``check`` raises on overflow."""
    wl = workload or Workload()
    plats = resolve_platforms(platforms)
    tiers = tier_names(plats)
    names = list(costs)
    dem = Demand.stack([demand(arch, costs[m], wl) for m in names])  # (M, C)
    rows = []
    for plat in plats:
        if check:
            for m in names:
                check_capacity(plat, dem.stored[names.index(m)], f"{arch.name} with {m}")
        pa = platform_arrays(plat, tiers)
        res = evaluate(dem, pa)
        for i, m in enumerate(names):
            r = _flatten(res, i)
            r.update(method=m, platform=plat.name, arch=arch.name, effective_bits=costs[m].effective_bits)
            r["decode"]["tokens_per_s"] = wl.batch / r["decode"]["latency_s"]
            r["load"] = load_cost(plat, tiers, dem.stored[i])
            rows.append(r)
    return rows


def load_cost(plat: Platform, tiers: list[str], stored_c: np.ndarray) -> dict | None:
    """One-time cost of copying the weights from the ``load_from`` tier (Flash) into their tiers at
    start-up: read at the source's bandwidth and pJ/bit, written at each destination's write pJ/bit.
    Non-volatile destinations (ReRAM, MRAM) keep the weights across power cycles, so for them this is
    paid once per deployment, not once per boot; volatile ones (LPDDR, SRAM) pay it at every boot."""
    src = plat.placement.load_from
    if src is None:
        return None
    wmask = np.isin(np.array(CLASSES), WEIGHT_CLASSES)
    per_tier = to_tiers(stored_c * wmask, placement_matrix(plat, tiers))
    bits = float(per_tier.sum())
    s = plat.tiers[src]
    write = sum(per_tier[j] * plat.tiers[t].write_pj_per_bit.value for j, t in enumerate(tiers) if t in plat.tiers)
    volatile = sum(per_tier[j] for j, t in enumerate(tiers) if t in plat.tiers and not plat.tiers[t].non_volatile)
    return {
        "from": src,
        "bytes": bits / 8,
        "seconds": bits / 8 / (plat.tier_bandwidth_GBps(src) * 1e9),
        "energy_J": (bits * s.read_pj_per_bit.value + write) * 1e-12,
        "bytes_reloaded_every_boot": float(volatile) / 8,
    }


def sweep_levels(platforms: Sequence[Platform]) -> dict[str, list[tuple[float, float, float]]]:
    """Ranged figure paths over the platforms: path -> per-platform (lo, nominal, hi)."""
    paths: list[str] = []
    for p in platforms:
        for k in p.ranged():
            if k not in paths:
                paths.append(k)
    out = {}
    for k in paths:
        vals = []
        for p in platforms:
            f = p.figures().get(k)
            vals.append((f.range[0], f.value, f.range[1]) if f is not None and f.range else (np.nan,) * 3)
        out[k] = vals
    return out


def sensitivity(
    arch: Arch,
    costs: dict[str, MethodCost],
    platforms: Sequence[str | Platform],
    baseline: tuple[str, str],
    workload: Workload | None = None,
) -> dict:
    """Band of every ratio vs the baseline (method, platform) over all corners of the ranged figures.

    A figure path present in several platforms (``tiers.lpddr5.read_pj_per_bit``) is one physical
    quantity and moves jointly: at each corner every platform takes its own low or high end. The ratio
    of two affine functions of one figure is monotone in it, so corners bound the band.
    Returns {method: {platform: {metric: (min, nominal, max)}}} and the paths swept."""
    wl = workload or Workload()
    plats = resolve_platforms(platforms)
    tiers = tier_names(plats)
    levels = sweep_levels(plats)
    paths = list(levels)
    corners = np.array(list(itertools.product((0, 2), repeat=len(paths))) or [()], dtype=int).reshape(-1, len(paths))
    grid = np.vstack([np.ones((1, len(paths)), int), corners])  # row 0 = nominal
    names = list(costs)
    if baseline[0] not in names:
        raise QMCError(f"baseline method {baseline[0]!r} is not among the methods {names}")
    dem = Demand.stack([demand(arch, costs[m], wl) for m in names])
    res = {}
    for pi, plat in enumerate(plats):
        over = {}
        for k, path in enumerate(paths):
            lo_nom_hi = levels[path][pi]
            if not np.isnan(lo_nom_hi[0]):
                over[path] = np.asarray(lo_nom_hi)[grid[:, k]]
        pa = platform_arrays(
            plat, tiers, over or {"compute.efficiency": np.full(len(grid), plat.compute.efficiency.value)}
        )
        # Broadcast (M, 1, C) demand against (G, ...) platform variants -> (M, G).
        d = Demand(**{k: np.expand_dims(getattr(dem, k), 1) for k in Demand.__dataclass_fields__})
        res[plat.name] = evaluate(d, pa)
    bp = baseline[1]
    if bp not in res:
        raise QMCError(f"baseline platform {bp!r} is not among the platforms {list(res)}")
    bi = names.index(baseline[0])
    metrics = ratio_metrics()
    out: dict = {}
    for m_i, m in enumerate(names):
        out[m] = {}
        for pname, r in res.items():
            out[m][pname] = {}
            for metric, get in metrics.items():
                ratio = get(res[bp])[bi] / get(r)[m_i]
                out[m][pname][metric] = (float(ratio.min()), float(ratio[0]), float(ratio.max()))
    return {"paths": paths, "levels": {k: v for k, v in levels.items()}, "corners": len(grid) - 1, "bands": out}


def ratio_metrics():
    return {
        "memory": lambda r: r["footprint_weights_bytes"],
        "off_die": lambda r: r["decode"]["off_die_bytes"],
        "off_package": lambda r: r["decode"]["off_package_bytes"],
        "energy": lambda r: r["decode"]["energy_J"],
        "latency": lambda r: r["decode"]["latency_s"],
    }


def headline_rows(*args, **kwargs) -> list[dict]:
    """The rows of :func:`headline` (same arguments)."""
    return headline(*args, **kwargs)["rows"]


def headline(
    arch: Arch | str,
    reports: dict[str, dict | MethodCost],
    platforms: Sequence[str | Platform] = ("orin_agx", "qmc_hetero"),
    workload: Workload | None = None,
    baseline: tuple[str, str] = ("FP16", "orin_agx"),
    bands: bool = True,
) -> dict:
    """The paper-style headline: per (method, platform), ratios vs FP16 on the conventional platform.

    Returns ``rows`` (below), the full ``table`` of :func:`deploy_table` and the ``sensitivity`` (None
    without ``bands``), each computed once, so callers that show all three need not recompute them.

    ``arch``: an :class:`Arch` or a name/config accepted by :func:`~qmc_edge.deploy.arch.resolve_arch`.
    ``reports``: method label -> storage report (``storage_report(...)`` dict, or the ``storage`` of a
    ``qmc quantize --json`` file) or a ready :class:`MethodCost`. An ``FP16`` row is added when absent.
    Each row: method, platform, absolute figures (weights MB, off-die/off-package MB per token, mJ and
    ms per token, tok/s, on-die area) and ``ratio_<metric>`` = (min, nominal, max) over the
    sensitivity corners (min = max = nominal when ``bands`` is False)."""
    from qmc_edge.deploy.arch import resolve_arch

    a = resolve_arch(arch) if isinstance(arch, str) else arch
    costs: dict[str, MethodCost] = {}
    for name, rep in reports.items():
        costs[name] = rep if isinstance(rep, MethodCost) else MethodCost.from_report(name, rep, a)
    if baseline[0] not in costs:
        costs = {baseline[0]: MethodCost.fp16(), **costs}
    plats = resolve_platforms(platforms)
    if baseline[1] not in [p.name for p in plats]:
        plats = [load_platform(baseline[1]), *plats]
    table = deploy_table(a, costs, plats, workload)
    sens = sensitivity(a, costs, plats, baseline, workload) if bands else None
    base = next(r for r in table if r["method"] == baseline[0] and r["platform"] == baseline[1])
    rows = []
    for r in table:
        row = {
            "arch": a.name,
            "method": r["method"],
            "platform": r["platform"],
            "effective_bits": r["effective_bits"],
            "weights_MB": r["footprint_weights_bytes"] / 1e6,
            "off_die_MB_per_token": r["decode"]["off_die_bytes"] / 1e6,
            "off_package_MB_per_token": r["decode"]["off_package_bytes"] / 1e6,
            "energy_mJ_per_token": r["decode"]["energy_J"] * 1e3,
            "latency_ms_per_token": r["decode"]["latency_s"] * 1e3,
            "tokens_per_s": r["decode"]["tokens_per_s"],
            "area_die_mm2": r["area_die_mm2"],
            "area_package_mm2": r["area_package_mm2"],
        }
        for metric, get in ratio_metrics().items():
            nominal = get_scalar(get, base) / get_scalar(get, r)
            if sens is not None:
                row[f"ratio_{metric}"] = sens["bands"][r["method"]][r["platform"]][metric]
            else:
                row[f"ratio_{metric}"] = (nominal, nominal, nominal)
        rows.append(row)
    return {"rows": rows, "table": table, "sensitivity": sens, "arch": a, "costs": costs, "platforms": plats}


def get_scalar(get, flat_row: dict) -> float:
    v = get(flat_row)
    return float(v) if np.ndim(v) == 0 else float(np.asarray(v).ravel()[0])
