"""Deployment model: byte/energy/latency arithmetic on a hand-computed case, capacity and platform-file
errors, the packaged platforms, the sensitivity bands and the `qmc deploy` CLI on the tiny model."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import yaml
from conftest import HIDDEN, INTERMEDIATE, KV_HEADS, LAYERS
from typer.testing import CliRunner

from qmc_edge.cli.app import app
from qmc_edge.deploy.arch import Arch, resolve_arch
from qmc_edge.deploy.demand import MethodCost, Workload
from qmc_edge.deploy.headline import deploy_table, headline_rows, sensitivity
from qmc_edge.deploy.platform import load_platform, packaged_names, parse_platform
from qmc_edge.errors import QMCError


def fig(v, **kw):
    return {"value": v, "source": "test", **kw}


HAND_PLATFORM = {
    "name": "hand",
    "description": "hand-computed test platform",
    "tiers": {
        "dram": {
            "technology": "d",
            "location": "board",
            "capacity_MB": fig(1),
            "bandwidth_GBps": fig(1),
            "read_pj_per_bit": fig(10),
            "write_pj_per_bit": fig(20),
            "leakage_mW_per_MB": fig(0),
        },
        "rr": {
            "technology": "r",
            "location": "package",
            "capacity_MB": fig(1),
            "parallel_read_bits": fig(64),
            "read_ns": fig(1),
            "read_pj_per_bit": fig(1),
            "write_pj_per_bit": fig(2),
            "leakage_mW_per_MB": fig(1),
            "non_volatile": True,
            "power_gated": True,
            "active_MB": fig(0.5),
            "density_Mb_per_mm2": fig(2),
        },
        "mm": {
            "technology": "m",
            "location": "die",
            "capacity_MB": fig(1),
            "bandwidth_GBps": fig(2),
            "read_pj_per_bit": fig(0.5),
            "write_pj_per_bit": fig(1),
            "leakage_mW_per_MB": fig(0),
            "density_Mb_per_mm2": fig(1),
        },
        "sr": {
            "technology": "s",
            "location": "die",
            "capacity_MB": fig(0.5),
            "bandwidth_GBps": fig(4),
            "read_pj_per_bit": fig(0.1),
            "write_pj_per_bit": fig(0.2),
            "leakage_mW_per_MB": fig(2),
            "density_Mb_per_mm2": fig(10),
        },
    },
    "compute": {"fp16_tflops": fig(1), "efficiency": fig(1), "pj_per_flop": fig(1)},
    "latency": {"tier_combine": "max", "compute_overlap": True, "overhead_ms": fig(1), "bw_efficiency": fig(0.5)},
    "placement": {
        "reram": "rr",
        "mram": "mm",
        "dram": "dram",
        "fp16_other": "mm",
        "embeddings": "dram",
        "head": "dram",
        "kv_cache": "dram",
        "activations": "sr",
    },
}

HAND_ARCH = Arch(
    name="hand",
    layers=1,
    hidden=4,
    intermediate=8,
    heads=2,
    kv_heads=1,
    head_dim=2,
    vocab=10,
    tied=False,
    linear_params=100,
    embed_params=40,
    head_params=40,
    other_params=8,
)
HAND_COST = MethodCost("m", {"reram": 3.0, "mram": 0.5}, cell_bits=3)
HAND_WL = Workload(prompt_len=4, gen_len=3, batch=1, kv_bits=16)


def test_hand_computed_decode_bytes_energy_latency_area():
    plat = parse_platform(HAND_PLATFORM, "hand.yaml")
    (r,) = deploy_table(HAND_ARCH, {"m": HAND_COST}, [plat], HAND_WL)
    d = r["decode"]
    # Bits read per token, by hand: codes 100 x 3 (rr); metadata 100 x 0.5 + norms 8 x 16 (mm);
    # embedding row 4 x 16 + untied head 40 x 16 + KV 64 bits x 5 attended positions (dram);
    # activations (1 x (4 x 4 + 3 x 8) + 10) x 16 = 800 read and 800 written (sr); KV write 64 bits.
    assert d["bytes_read_tier"] == pytest.approx({"dram": 1024 / 8, "rr": 300 / 8, "mm": 178 / 8, "sr": 800 / 8})
    assert d["bytes_written_tier"] == pytest.approx({"dram": 64 / 8, "rr": 0, "mm": 0, "sr": 800 / 8})
    # Times at half the nominal bandwidth; rr = 64 bits / 1 ns = 8 GB/s; tiers read in parallel (max).
    assert d["time_tier_s"]["dram"] == pytest.approx(136 / 0.5e9)
    assert d["time_tier_s"]["rr"] == pytest.approx(37.5 / 4e9)
    assert d["memory_time_s"] == pytest.approx(272e-9)
    flops = 2 * (100 + 4 * 10) + 4 * 1 * 2 * 2 * (5 + 1)  # matmuls incl. head + attention over 6 positions
    assert d["compute_time_s"] == pytest.approx(flops / 1e12)
    assert d["latency_s"] == pytest.approx(1e-3 + 272e-9)
    dyn = {"dram": 1024 * 10 + 64 * 20, "rr": 300 * 1, "mm": 178 * 0.5, "sr": 800 * 0.1 + 800 * 0.2}
    assert d["energy_dynamic_tier_J"] == pytest.approx({k: v * 1e-12 for k, v in dyn.items()})
    assert d["energy_compute_J"] == pytest.approx(flops * 1e-12)
    # Static: SRAM 0.5 MB x 2 mW/MB; gated ReRAM leaks only for the 300 bits it holds; over the latency.
    static_w = 0.5 * 2e-3 + 1e-3 * 300 / 8e6
    assert d["energy_static_J"] == pytest.approx(static_w * (1e-3 + 272e-9))
    assert d["energy_J"] == pytest.approx(sum(dyn.values()) * 1e-12 + flops * 1e-12 + static_w * (1e-3 + 272e-9))
    assert d["off_die_bytes"] == pytest.approx(136 + 37.5)
    assert d["off_package_bytes"] == pytest.approx(136)
    # Footprint: dram = embeddings 640 + head 640 + KV 64 x 7 bits; weights = all but KV/activations.
    assert r["footprint_tier_bytes"]["dram"] == pytest.approx((640 + 640 + 448) / 8)
    assert r["footprint_weights_bytes"] == pytest.approx((300 + 50 + 128 + 640 + 640) / 8)
    # Area: ReRAM counts cells (300 bits / 3 per cell) at 2 Mb/mm^2; MRAM 178 bits at 1; SRAM 704 bits at 10.
    assert r["area_tier_mm2"]["rr"] == pytest.approx(100 / 2e6)
    assert r["area_die_mm2"] == pytest.approx(178 / 1e6 + 704 / 10e6)
    assert r["area_package_mm2"] == pytest.approx(100 / 2e6)
    assert r["load"] is None  # no load_from tier in this platform


def test_hand_computed_tier_efficiency_and_dequantization():
    """A tier's own bandwidth efficiency replaces the platform's for that tier only; dequantization
    adds pJ per quantized weight and per outlier read, and its time joins compute (overlapped)."""
    data = copy.deepcopy(HAND_PLATFORM)
    data["tiers"]["rr"]["bw_efficiency"] = fig(0.25)
    data["dequant"] = {"pj_per_weight": fig(2), "pj_per_outlier": fig(10), "weights_per_ns": fig(0.1)}
    plat = parse_platform(data, "hand.yaml")
    cost = MethodCost("m", {"reram": 3.0, "mram": 0.5}, cell_bits=3, outlier_share=0.05)
    (r,) = deploy_table(HAND_ARCH, {"m": cost}, [plat], HAND_WL)
    d = r["decode"]
    assert d["time_tier_s"]["rr"] == pytest.approx(37.5 / (8e9 * 0.25))  # its own 0.25
    assert d["time_tier_s"]["dram"] == pytest.approx(136 / 0.5e9)  # still the platform's 0.5
    # 100 quantized weights and 5 outliers dequantized per token: 100 x 2 + 5 x 10 pJ; 100 / 0.1 ns.
    assert d["energy_dequant_J"] == pytest.approx(250e-12)
    assert d["dequant_time_s"] == pytest.approx(1e-6)
    flops = 2 * (100 + 4 * 10) + 4 * 1 * 2 * 2 * (5 + 1)
    assert d["compute_time_s"] == pytest.approx(flops / 1e12 + 1e-6)
    assert d["latency_s"] == pytest.approx(1e-3 + 1e-6)  # compute (with dequant) now exceeds memory
    (f,) = deploy_table(HAND_ARCH, {"FP16": MethodCost.fp16()}, [plat], HAND_WL)
    assert f["decode"]["energy_dequant_J"] == 0 and f["decode"]["dequant_time_s"] == 0  # FP16: nothing to unpack
    assert plat.tier_bandwidth_GBps("rr") == pytest.approx(8.0)  # the same function as the cost model's


def test_hand_computed_sum_combine_and_prefill():
    data = copy.deepcopy(HAND_PLATFORM)
    data["latency"]["tier_combine"] = "sum"
    data["latency"]["compute_overlap"] = False
    plat = parse_platform(data, "hand.yaml")
    (r,) = deploy_table(HAND_ARCH, {"m": HAND_COST}, [plat], HAND_WL)
    t = r["decode"]["time_tier_s"]
    assert r["decode"]["memory_time_s"] == pytest.approx(sum(t.values()))
    assert r["decode"]["latency_s"] == pytest.approx(1e-3 + sum(t.values()) + r["decode"]["compute_time_s"])
    p = r["prefill"]
    # Prefill: weights once, 4 embedding rows, head once, KV written for 4 positions and read once.
    assert p["bytes_read_tier"]["dram"] == pytest.approx((4 * 64 + 640 + 4 * 64) / 8)
    assert p["bytes_written_tier"]["dram"] == pytest.approx(4 * 64 / 8)
    flops = 2 * 100 * 4 + 2 * 40 + 4 * 1 * 2 * 2 * 4 * 5 / 2
    assert p["compute_time_s"] == pytest.approx(flops / 1e12)


def test_batch_shares_weight_reads():
    plat = parse_platform(HAND_PLATFORM, "hand.yaml")
    (one,) = deploy_table(HAND_ARCH, {"m": HAND_COST}, [plat], HAND_WL)
    (four,) = deploy_table(HAND_ARCH, {"m": HAND_COST}, [plat], Workload(4, 3, batch=4))
    # Per token, codes are read once per step for 4 sequences: a quarter of the bytes each.
    assert four["decode"]["bytes_read_tier"]["rr"] == pytest.approx(one["decode"]["bytes_read_tier"]["rr"] / 4)
    assert four["footprint_tier_bytes"]["dram"] > one["footprint_tier_bytes"]["dram"]  # 4 KV caches


def test_capacity_error_names_tier_and_contents():
    data = copy.deepcopy(HAND_PLATFORM)
    data["tiers"]["dram"]["capacity_MB"] = fig(0.0001)  # 100 bytes < 216 needed
    plat = parse_platform(data, "hand.yaml")
    with pytest.raises(QMCError, match=r"tier dram holds 0\.0 MB .*embeddings .*raise tiers\.dram\.capacity_MB"):
        deploy_table(HAND_ARCH, {"m": HAND_COST}, [plat], HAND_WL)


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("tiers", "rr", "read_pj_per_bit"), fig(-1), "platform bad.yaml: tiers.rr.read_pj_per_bit: must be > 0"),
        (("tiers", "rr", "read_pj_per_bit"), 0.1, "tiers.rr.read_pj_per_bit: a bare number (0.1) has no source"),
        (("tiers", "mm", "density_Mb_per_mm2"), {"value": 1, "source": " "}, "tiers.mm.density_Mb_per_mm2: source"),
        (("latency", "bw_efficiency"), fig(1.5), "latency.bw_efficiency: must be in (0, 1]"),
        (("placement", "kv_cache"), "hbm", "placement.kv_cache: tier 'hbm' is not defined"),
        (("tiers", "dram", "location"), "moon", "tiers.dram.location:"),
        (("tiers", "sr", "colour"), "red", "tiers.sr.colour: unknown field"),
        (("compute", "fp16_tflops"), fig(2, range=[3, 4]), "compute.fp16_tflops: value 2.0 is outside its range"),
    ],
)
def test_platform_validation_names_the_field(path, value, expected):
    data = copy.deepcopy(HAND_PLATFORM)
    node = data
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(QMCError) as ei:
        parse_platform(data, "bad.yaml")
    msg = str(ei.value)
    assert expected in msg and "\n" not in msg


def test_platform_missing_field_and_file_errors(tmp_path):
    data = copy.deepcopy(HAND_PLATFORM)
    del data["tiers"]["dram"]["bandwidth_GBps"]
    with pytest.raises(QMCError, match="tiers.dram: give bandwidth_GBps"):
        parse_platform(data, "bad.yaml")
    data = copy.deepcopy(HAND_PLATFORM)
    del data["compute"]
    with pytest.raises(QMCError, match="platform bad.yaml: compute: missing"):
        parse_platform(data, "bad.yaml")
    with pytest.raises(QMCError, match="unknown platform 'nope'; use a YAML file path or one of: .*qmc_hetero"):
        load_platform("nope")
    bad = tmp_path / "x.yaml"
    bad.write_text("tiers: [unclosed", encoding="utf-8")
    with pytest.raises(QMCError, match=r"platform .*x\.yaml: not valid YAML \(.* at line 1, column 17\)"):
        load_platform(bad)
    good = tmp_path / "h.yaml"
    good.write_text(yaml.safe_dump(HAND_PLATFORM), encoding="utf-8")
    assert load_platform(good).name == "hand"


def test_packaged_platforms_validate_and_cite_every_number():
    names = packaged_names()
    assert {"orin_agx", "orin_nano", "qmc_hetero"} <= set(names)
    for n in names:
        p = load_platform(n)
        for path, f in p.figures().items():
            assert len(f.source) > 10, f"{n}: {path} has no real source"
    het = load_platform("qmc_hetero")
    assert het.tiers["reram"].location == "package" and het.tiers["mram"].location == "die"
    assert het.placement.reram == "reram" and het.placement.kv_cache == "lpddr5"
    assert het.ranged()["tiers.lpddr5.read_pj_per_bit"].range == (4.0, 20.0)


def test_tiny_arch_counts_match_the_model(tiny_model_dir, tiny_lm):
    a = resolve_arch(str(tiny_model_dir))  # meta-device build from config.json
    assert (a.layers, a.hidden, a.intermediate, a.kv_heads) == (LAYERS, HIDDEN, INTERMEDIATE, KV_HEADS)
    assert a.tied and a.head_params == 0
    n = sum(p.numel() for p in tiny_lm.model.parameters())  # parameters() de-duplicates the tied table
    assert a.total_params == n
    attn = HIDDEN * HIDDEN * 2 + 2 * HIDDEN * (KV_HEADS * HIDDEN // 4)
    assert a.linear_params == LAYERS * (attn + 3 * HIDDEN * INTERMEDIATE)
    assert a.kv_bits_per_token(16) == 2 * LAYERS * KV_HEADS * (HIDDEN // 4) * 16
    with pytest.raises(QMCError, match="unknown architecture 'nope'"):
        resolve_arch("nope")


def _report(lm, method):
    from qmc_edge.methods import parse_method
    from qmc_edge.methods.whole_model import quantize_model, storage_report

    spec = parse_method(method)
    return storage_report(lm.model, spec, quantize_model(lm.model, spec))


def test_qmc_storage_does_not_depend_on_the_clip_search(tiny_lm):
    # benchmarks/deploy.py relies on this to account QMC's storage with a short search.
    a, b = _report(tiny_lm, "qmc2"), _report(tiny_lm, "qmc2:n_clip=2")
    assert a["bits_by_component"] == b["bits_by_component"] and a["outliers"] == b["outliers"] > 0


def test_headline_rows_and_bands_on_tiny_reports(tiny_model_dir, tiny_lm):
    reps = {"RTN4": _report(tiny_lm, "rtn4"), "QMC3": _report(tiny_lm, "qmc:bits=3,n_clip=3")}
    a = resolve_arch(str(tiny_model_dir))
    rows = headline_rows(a, reps, ["orin_agx", "qmc_hetero"], Workload(16, 8))
    by = {(r["method"], r["platform"]): r for r in rows}
    assert set(by) == {(m, p) for m in ("FP16", "RTN4", "QMC3") for p in ("orin_agx", "qmc_hetero")}
    base = by[("FP16", "orin_agx")]
    assert base["ratio_energy"] == pytest.approx((1, 1, 1))
    q = by[("QMC3", "qmc_hetero")]
    lo, nom, hi = q["ratio_energy"]
    assert lo < nom < hi  # LPDDR pJ/bit and ReRAM figures move it
    assert q["ratio_memory"][0] == q["ratio_memory"][2]  # footprint does not depend on device figures
    # QMC on the heterogeneous system moves less over the board than RTN4 in LPDDR.
    assert q["off_package_MB_per_token"] < by[("RTN4", "orin_agx")]["off_package_MB_per_token"]
    s = sensitivity(
        a,
        {"FP16": MethodCost.fp16(), "QMC3": MethodCost.from_report("QMC3", reps["QMC3"], a)},
        [load_platform("orin_agx"), load_platform("qmc_hetero")],
        ("FP16", "orin_agx"),
        Workload(16, 8),
    )
    assert "tiers.lpddr5.read_pj_per_bit" in s["paths"] and s["corners"] == 2 ** len(s["paths"])
    # The nominal row of the sweep equals the plain evaluation.
    assert s["bands"]["QMC3"]["qmc_hetero"]["energy"][1] == pytest.approx(nom)


def test_vectorised_evaluation_matches_scalar():
    from qmc_edge.deploy.demand import demand
    from qmc_edge.deploy.placement import tier_names
    from qmc_edge.deploy.system import evaluate, platform_arrays

    plat = parse_platform(HAND_PLATFORM, "hand.yaml")
    pj = np.linspace(1, 30, 7)
    pa = platform_arrays(plat, tier_names([plat]), {"tiers.dram.read_pj_per_bit": pj})
    res = evaluate(demand(HAND_ARCH, HAND_COST, HAND_WL), pa)
    for i, v in enumerate(pj):
        data = copy.deepcopy(HAND_PLATFORM)
        data["tiers"]["dram"]["read_pj_per_bit"] = fig(float(v))
        (r,) = deploy_table(HAND_ARCH, {"m": HAND_COST}, [parse_platform(data, "h.yaml")], HAND_WL)
        assert res["decode"]["energy_J"][i] == pytest.approx(r["decode"]["energy_J"])


def test_cli_deploy_model_json_plots_and_report(tiny_model_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "d.json"
    res = runner.invoke(
        app,
        [
            "deploy",
            "--model",
            str(tiny_model_dir),
            "-m",
            "qmc:bits=3,n_clip=3",
            "--platform",
            "qmc_hetero",
            "--prompt-len",
            "16",
            "--gen-len",
            "8",
            "--json",
            str(out),
            "--plots",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    plats = {r["platform"] for r in data["headline"]}
    assert plats == {"orin_agx", "qmc_hetero"}  # the FP16 baseline platform is added
    methods = {r["method"] for r in data["headline"]}
    assert len(methods) == 2 and "FP16" in methods  # the baseline is added to the one method asked for
    (qmc,) = methods - {"FP16"}
    assert qmc.startswith("QMC 3b")
    assert {(r["method"], r["platform"]) for r in data["headline"]} == {
        (m, pl) for m in ("FP16", qmc) for pl in ("orin_agx", "qmc_hetero")
    }
    for row in data["table"]:  # weights copied once from Flash: all of them, at Flash speed
        assert row["load"]["bytes"] == pytest.approx(row["footprint_weights_bytes"])
    pngs = list(tmp_path.glob("deploy_*.png"))
    assert pngs and pngs[0].read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*.tmp"))

    rep = tmp_path / "q.json"
    r1 = runner.invoke(app, ["quantize", "--model", str(tiny_model_dir), "-m", "rtn4", "--json", str(rep)])
    assert r1.exit_code == 0, r1.output
    out2 = tmp_path / "d2.json"
    r2 = runner.invoke(app, ["deploy", "--report", str(rep), "--no-bands", "--json", str(out2)])
    assert r2.exit_code == 0, r2.output
    d2 = json.loads(out2.read_text())
    rtn = [r for r in d2["headline"] if r["method"].startswith("RTN-INT4")]
    assert rtn and rtn[0]["ratio_memory"][0] > 1.5
    assert d2["arch"]["hidden"] == HIDDEN


def test_cli_deploy_errors(tiny_model_dir, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["deploy", "--arch", "qwen2.5-1.5b"])
    assert r.exit_code == 2 and "needs --report" in r.output
    r = runner.invoke(app, ["deploy", "--report", str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and "report not found" in r.output
    bad = tmp_path / "bad.yaml"
    data = copy.deepcopy(HAND_PLATFORM)
    data["tiers"]["rr"]["read_pj_per_bit"] = fig(0)
    bad.write_text(yaml.safe_dump(data), encoding="utf-8")
    r = runner.invoke(app, ["deploy", "--model", str(tiny_model_dir), "-m", "rtn4", "--platform", str(bad)])
    assert r.exit_code == 2 and "tiers.rr.read_pj_per_bit: must be > 0" in r.output
    assert "Traceback" not in r.output


def test_validation_split_and_fit_are_per_platform_and_runtime():
    """Constants are fitted per (platform, runtime) on alternate ranks by bytes read; every group keeps
    held-out points, and a point is always predicted with its own group's constants."""
    from qmc_edge.deploy.validate import MEASURED, fit_and_score, group_key, summarize

    s = fit_and_score()
    groups = {group_key(m) for m in MEASURED}
    assert set(s["params"]) == groups and "agx_orin/vllm" in groups
    for g in groups:
        rows = [r for r, m in zip(s["rows"], MEASURED, strict=True) if group_key(m) == g]
        n_fit = sum(r["set"] == "fit" for r in rows)
        assert n_fit == (len(rows) + 1) // 2 and s["params"][g]["fit_points"] == n_fit
    vllm = [r for r in s["rows"] if r["runtime"] == "vllm"]
    assert [r["set"] for r in sorted(vllm, key=lambda r: r["tokens_per_s"], reverse=True)] == [
        "fit",
        "held_out",
        "fit",
    ]
    # Two constants, two fit points: the vLLM fit reproduces them.
    assert all(r["ours_tokens_per_s"] == pytest.approx(r["tokens_per_s"], rel=1e-3) for r in vllm if r["set"] == "fit")
    m = summarize(s["rows"], "ours_tokens_per_s")
    # The mean abs. % errors published in BENCHMARKS.md ("ours" row), to their one decimal.
    published = {"fit": 8.7, "held_out_mlc": 16.1, "held_out_vllm": 8.3, "held_out_all": 15.5}
    assert m == pytest.approx(published, abs=0.051)
    assert m["fit"] < m["held_out_all"] < 25  # the model is useful: held-out error under 25%


# ------------------------------------------------------------------ bad input files: one QMCError line
def _set(data: dict, dotted: str, value) -> dict:
    node = data
    *path, last = dotted.split(".")
    for k in path:
        node = node[k]
    node[last] = value
    return data


def _hand_yaml(**changes) -> str:
    data = copy.deepcopy(HAND_PLATFORM)
    for dotted, value in changes.items():
        _set(data, dotted.replace("__", "."), value)
    return yaml.safe_dump(data)


def _file(content: str | bytes):
    def make(tmp_path):
        p = tmp_path / "plat.yaml"
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
        return p

    return make


def _directory(tmp_path):
    d = tmp_path / "plat.yaml"
    d.mkdir()
    return d


BAD_PLATFORM_FILES = {
    "nan": (
        _file(_hand_yaml(tiers__rr__read_pj_per_bit=fig(float("nan")))),
        "tiers.rr.read_pj_per_bit: must be a finite number, got nan",
    ),
    "inf": (_file(_hand_yaml(compute__fp16_tflops=fig(float("inf")))), "compute.fp16_tflops: must be a finite"),
    "-inf non-negative field": (
        _file(_hand_yaml(latency__overhead_ms=fig(float("-inf")))),
        "latency.overhead_ms: must be a finite number, got -inf",
    ),
    "nan in a range": (
        _file(_hand_yaml(tiers__dram__read_pj_per_bit=fig(10, range=[float("nan"), 20]))),
        "tiers.dram.read_pj_per_bit.range.0: must be a finite number",
    ),
    "nan as a string": (_file(_hand_yaml(compute__pj_per_flop=fig("nan"))), "compute.pj_per_flop: must be a finite"),
    "1e999 overflows": (_file(_hand_yaml(compute__pj_per_flop=fig("1e999"))), "compute.pj_per_flop: must be a finite"),
    "1e308": (
        _file(_hand_yaml(tiers__dram__bandwidth_GBps=fig(1e308))),
        "tiers.dram.bandwidth_GBps: value 1e+308 is beyond the sanity bound 1e+12",
    ),
    "just over the bound": (
        _file(_hand_yaml(tiers__dram__capacity_MB=fig(2e12))),
        "tiers.dram.capacity_MB: value 2e+12 is beyond the sanity bound",
    ),
    "range beyond the bound": (
        _file(_hand_yaml(tiers__dram__read_pj_per_bit=fig(10, range=[4, 1e300]))),
        "tiers.dram.read_pj_per_bit: range 1e+300 is beyond the sanity bound",
    ),
    "tiny positive": (
        _file(_hand_yaml(tiers__mm__bandwidth_GBps=fig(1e-300))),
        "tiers.mm.bandwidth_GBps: 1e-300 is below the sanity bound 1e-12",
    ),
    "tiny fraction": (_file(_hand_yaml(compute__efficiency=fig(1e-30))), "compute.efficiency: 1e-30 is below"),
    "negative": (_file(_hand_yaml(tiers__dram__leakage_mW_per_MB=fig(-1))), "leakage_mW_per_MB: must be >= 0"),
    "boolean": (_file(_hand_yaml(compute__pj_per_flop=fig(True))), "compute.pj_per_flop: must be a number, got true"),
    "duplicate top-level key": (
        _file(_hand_yaml() + "name: other\n"),
        "not valid YAML (duplicate key 'name' at line",
    ),
    "duplicate nested key": (
        _file(_hand_yaml().replace("    technology: r\n", "    technology: r\n    technology: q\n")),
        "duplicate key 'technology'",
    ),
    "duplicate key in a flow mapping": (
        _file(_hand_yaml().replace("name: hand\n", "name: hand\nextra: {value: 1, value: 2}\n")),
        "duplicate key 'value'",
    ),
    "packaged name orin_agx": (
        _file(_hand_yaml(name="orin_agx")),
        "name 'orin_agx' is taken by a packaged platform, which this file must not replace",
    ),
    "packaged name qmc_hetero": (_file(_hand_yaml(name="qmc_hetero")), "rename the `name:` field"),
    "binary": (_file(b"\x00\x01\x02\xffname: x\n"), "binary data, not a YAML text file"),
    "not UTF-8": (_file("name: caf\xe9\n".encode("latin-1")), "not UTF-8 text (byte 0xe9 on line 1)"),
    "empty": (_file(""), "the file is empty"),
    "only comments": (_file("# nothing here\n"), "the file is empty"),
    "a list": (_file("- a\n- b\n"), "must be a mapping of fields (name:, tiers:, ...), got list"),
    "a scalar": (_file("just some text\n"), "must be a mapping of fields (name:, tiers:, ...), got str"),
    "invalid YAML": (_file("tiers: [unclosed"), "not valid YAML (expected ',' or ']'"),
    "tab indentation": (_file("a:\n\tb: 1\n"), "not valid YAML (found character '\\t'"),
    "deeply nested": (_file("[" * 20000 + "]" * 20000), "platform "),
    "directory": (_directory, "is a directory; pass a platform YAML file"),
    "under a missing folder": (lambda tmp_path: tmp_path / "no" / "such" / "plat.yaml", "platform file not found"),
    "missing file": (lambda tmp_path: tmp_path / "plat.yaml", "platform file not found"),
}


@pytest.mark.parametrize("make, expected", list(BAD_PLATFORM_FILES.values()), ids=list(BAD_PLATFORM_FILES))
def test_bad_platform_file_is_one_line_naming_the_file(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(QMCError) as ei:
        load_platform(path)
    msg = str(ei.value)
    assert expected in msg
    assert str(path) in msg and "\n" not in msg


def test_unreadable_platform_file(tmp_path, monkeypatch):
    # We run as root, where chmod 000 does not stop reads: simulate the failure instead.
    good = tmp_path / "mine.yaml"
    good.write_text(_hand_yaml(), encoding="utf-8")

    def denied(self, *a, **kw):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(good), "open", denied)
    with pytest.raises(QMCError) as ei:
        load_platform(good)
    msg = str(ei.value)
    assert msg == f"platform {good}: cannot read it (Permission denied); check the path and its permissions"


def test_zero_stays_valid_where_the_model_accepts_it(tmp_path):
    p = tmp_path / "z.yaml"
    p.write_text(_hand_yaml(latency__overhead_ms=fig(0), tiers__rr__active_MB=fig(0)), encoding="utf-8")
    plat = load_platform(p)
    assert plat.latency.overhead_ms.value == 0 and plat.tiers["dram"].leakage_mW_per_MB.value == 0
    (r,) = deploy_table(HAND_ARCH, {"m": HAND_COST}, [plat], HAND_WL)
    assert np.isfinite(r["decode"]["energy_J"]) and np.isfinite(r["decode"]["latency_s"])


def test_extreme_but_allowed_figures_keep_results_finite(tmp_path):
    # At the sanity bounds every figure of the cost model is still a finite number.
    extreme = {
        "tiers__dram__bandwidth_GBps": fig(1e-12),
        "tiers__dram__read_pj_per_bit": fig(1e12),
        "tiers__dram__leakage_mW_per_MB": fig(1e12),
        "tiers__dram__capacity_MB": fig(1e12),
        "compute__efficiency": fig(1e-12),
        "compute__fp16_tflops": fig(1e-12),
        "latency__overhead_ms": fig(1e12),
    }
    p = tmp_path / "x.yaml"
    p.write_text(_hand_yaml(**extreme), encoding="utf-8")
    (r,) = deploy_table(HAND_ARCH, {"m": HAND_COST}, [load_platform(p)], HAND_WL)
    for key in ("energy_J", "latency_s", "off_die_bytes", "memory_time_s", "compute_time_s"):
        assert np.isfinite(r["decode"][key]) and r["decode"][key] > 0, key


@pytest.mark.parametrize("name", packaged_names())
def test_a_copy_of_a_packaged_platform_cannot_take_its_name(tmp_path, name):
    from importlib import resources

    text = (resources.files("qmc_edge") / "platforms" / f"{name}.yaml").read_text(encoding="utf-8")
    copy_ = tmp_path / f"{name}.yaml"
    copy_.write_text(text, encoding="utf-8")
    with pytest.raises(QMCError, match=rf"platform .*{name}\.yaml: name '{name}' is taken .*rename the `name:`"):
        load_platform(copy_)
    with pytest.raises(QMCError, match="rename the `name:` field"):
        load_platform(str(copy_))
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(text.replace(f"name: {name}\n", f"name: {name}_custom\n", 1), encoding="utf-8")
    assert load_platform(renamed).name == f"{name}_custom"
    # The packaged file itself, by its path, is the packaged platform.
    assert load_platform(str(resources.files("qmc_edge") / "platforms" / f"{name}.yaml")).name == name


def test_a_packaged_name_is_never_a_file_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "orin_agx").write_text(_hand_yaml(name="impostor"), encoding="utf-8")
    plat = load_platform("orin_agx")
    assert plat.name == "orin_agx" and plat.description != "hand-computed test platform"
    assert load_platform("./orin_agx").name == "impostor"  # a path spelled as a path is the file
    (tmp_path / "qmc_hetero").mkdir()  # a folder of that name does not hide it either
    assert load_platform("qmc_hetero").name == "qmc_hetero"


def _cli_error_line(args) -> str:
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


@pytest.mark.parametrize("case", ["nan", "1e308", "duplicate top-level key", "packaged name orin_agx", "binary"])
def test_cli_deploy_bad_platform_file_is_one_error_line(tmp_path, case):
    make, expected = BAD_PLATFORM_FILES[case]
    path = make(tmp_path)
    line = _cli_error_line(["deploy", "--platform", path])
    assert expected in line and str(path) in line


GOOD_STORAGE = {
    "quantized_params": 1000,
    "bits_by_memory": {"dram": 4000, "unquantized_fp16_dram": 160},
    "bits_by_component": {"codes": 4000},
    "reram_bits_per_cell": None,
}


def _storage(**changes):
    return {"storage": {**GOOD_STORAGE, **changes}}


BAD_REPORTS = {
    "binary": (b"\x00\x01\x02\x03", "is binary or not UTF-8, not JSON text"),
    "UTF-16": ('{"storage": {}}'.encode("utf-16"), "is binary or not UTF-8, not JSON text"),
    "not JSON": (b"hello", "is not JSON (Expecting value at line 1)"),
    "empty": (b"", "is not JSON"),
    "a list": (b"[1, 2]", "has no 'storage' section; write it with `qmc quantize --json FILE`"),
    "no storage": (b'{"method": "x"}', "has no 'storage' section"),
    "storage null": (b'{"storage": null}', "'storage' must be an object (the storage report), got null"),
    "storage a list": (b'{"storage": [1]}', "'storage' must be an object (the storage report), got list"),
    "storage empty": (b'{"storage": {}}', "'storage' lacks 'quantized_params'"),
    "quantized_params a string": (json.dumps(_storage(quantized_params="many")), "storage.quantized_params must be"),
    "quantized_params NaN": (json.dumps(_storage(quantized_params=float("nan"))), "storage.quantized_params must"),
    "quantized_params zero": (json.dumps(_storage(quantized_params=0)), "has no quantized parameters"),
    "bits_by_memory a list": (json.dumps(_storage(bits_by_memory=[1])), "storage.bits_by_memory must map"),
    "bits_by_memory infinite": (
        json.dumps(_storage(bits_by_memory={"dram": float("inf")})),
        "storage.bits_by_memory must map names to finite numbers",
    ),
    "bits_by_component null": (json.dumps(_storage(bits_by_component=None)), "storage.bits_by_component must map"),
    "unknown memory": (json.dumps(_storage(bits_by_memory={"flash": 4000})), "names unknown memories ['flash']"),
    "bits per cell 0": (json.dumps(_storage(reram_bits_per_cell=0)), "storage.reram_bits_per_cell must be null"),
    "spec a string": (json.dumps({**_storage(), "spec": "fp"}), "'spec' must be an object, got str"),
    "quantize_embeddings a string": (
        json.dumps({**_storage(), "spec": {"quantize_embeddings": "yes"}}),
        "spec.quantize_embeddings must be true, false or null",
    ),
}


@pytest.mark.parametrize("content, expected", list(BAD_REPORTS.values()), ids=list(BAD_REPORTS))
def test_bad_report_is_one_line_naming_the_file(tiny_model_dir, tmp_path, content, expected):
    from qmc_edge.cli.deploy_cmds import _costs_from_reports

    p = tmp_path / "rep.json"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(QMCError) as ei:
        _costs_from_reports([p], str(tiny_model_dir))
    msg = str(ei.value)
    assert expected in msg and str(p) in msg and "\n" not in msg


def test_report_files_that_are_not_files_or_lack_a_model(tmp_path):
    from qmc_edge.cli.deploy_cmds import _costs_from_reports

    with pytest.raises(QMCError, match=r"report .* is a directory; pass the file written by `qmc quantize --json"):
        _costs_from_reports([tmp_path], None)
    p = tmp_path / "r.json"
    p.write_text(json.dumps({**_storage(), "model": 5}))
    with pytest.raises(QMCError, match=rf"report {p}: 'model' must be a string"):
        _costs_from_reports([p], None)
    p.write_text(json.dumps({**_storage(), "model": "nowhere\x00"}))
    with pytest.raises(QMCError, match=rf"report {p}: cannot tell the architecture .* pass --arch"):
        _costs_from_reports([p], None)


def test_good_hand_written_report(tiny_model_dir, tmp_path):
    from qmc_edge.cli.deploy_cmds import _costs_from_reports

    p = tmp_path / "rtn.json"
    p.write_text(json.dumps({**_storage(), "method": "RTN"}))
    arch, costs = _costs_from_reports([p], str(tiny_model_dir))
    assert arch.hidden == HIDDEN and costs["RTN"].bits_per_weight == {"dram": 4.0}


@pytest.mark.parametrize("case", ["binary", "storage null", "bits_by_memory a list", "spec a string"])
def test_cli_deploy_bad_report_is_one_error_line(tiny_model_dir, tmp_path, case):
    content, expected = BAD_REPORTS[case]
    p = tmp_path / "rep.json"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    line = _cli_error_line(["deploy", "--report", p, "--arch", tiny_model_dir])
    assert expected in line and str(p) in line


def test_cli_quantize_and_deploy_a_budget_model(tiny_model_dir, tmp_path):
    """A budget's tensors take different bits and cells: the report's totals and mean bits per cell
    reach the deployment model, and the whole-model bits respect the budget."""
    runner = CliRunner()
    rep = tmp_path / "q.json"
    r1 = runner.invoke(
        app,
        ["quantize", "--model", str(tiny_model_dir), "-m", "qmc:budget=3.5,sensitivity=uniform", "--json", str(rep)],
    )
    assert r1.exit_code == 0, r1.output
    d = json.loads(rep.read_text())
    st = d["storage"]
    params = st["quantized_params"] + st["unquantized_params"]
    assert st["model_MB"] * 8e6 / params <= 3.5
    assert 1 <= st["reram_bits_per_cell"] <= 3
    out = tmp_path / "d.json"
    r2 = runner.invoke(app, ["deploy", "--report", str(rep), "--no-bands", "--json", str(out)])
    assert r2.exit_code == 0, r2.output
    rows = [r for r in json.loads(out.read_text())["headline"] if r["method"].startswith("QMC budget")]
    assert rows and rows[0]["ratio_memory"][0] > 3
