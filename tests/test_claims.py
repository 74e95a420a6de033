"""`qmc claims`: ledger arithmetic by hand, shipped ledgers sourced, accuracy read (never invented)."""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from typer.testing import CliRunner

from qmc_edge.claims.accuracy import find_accuracy
from qmc_edge.claims.ledger import Claim, Paper, Step, load_ledger, run_ledger
from qmc_edge.cli.app import app
from qmc_edge.deploy.arch import Arch
from qmc_edge.deploy.demand import MethodCost, Workload
from qmc_edge.deploy.platform import parse_platform
from qmc_edge.errors import QMCError
from qmc_edge.methods import parse_method


def fig(v):
    return {"value": v, "source": "test"}


def _tier(bw: float, location: str = "die") -> dict:
    return {
        "technology": "t",
        "location": location,
        "capacity_MB": fig(1),
        "bandwidth_GBps": fig(bw),
        "read_pj_per_bit": fig(1),
        "write_pj_per_bit": fig(1),
        "leakage_mW_per_MB": fig(0),
        "density_Mb_per_mm2": fig(1),
    }


def _platform(name: str, tiers: dict, placement: dict) -> dict:
    return {
        "name": name,
        "description": "hand",
        "tiers": tiers,
        "compute": {"fp16_tflops": fig(1), "efficiency": fig(1), "pj_per_flop": fig(1)},
        "latency": {"tier_combine": "max", "compute_overlap": True, "overhead_ms": fig(0), "bw_efficiency": fig(1)},
        "placement": placement,
    }


ALL_DRAM = dict.fromkeys(
    ("reram", "mram", "dram", "fp16_other", "embeddings", "head", "kv_cache", "activations"), "dram"
)
BASE = _platform("hand_base", {"dram": _tier(1, "board")}, ALL_DRAM)
QMC = _platform("hand_qmc", {"rr": _tier(1, "package"), "dram": _tier(1, "board")}, {**ALL_DRAM, "reram": "rr"})
ARCH = Arch("hand", 1, 4, 8, 2, 1, 2, 10, False, 100, 40, 40, 8)
WL = Workload(prompt_len=4, gen_len=3, batch=1, kv_bits=16)
COST = MethodCost("m", {"reram": 3.0, "mram": 0.5}, cell_bits=3)


def test_ledger_arithmetic_by_hand_two_tiers_one_assumption_each():
    """Bits per token by hand (HAND_ARCH of test_deploy): FP16 baseline reads 1600 weight + 128 norm +
    64 embedding-row + 640 head + 320 KV + 800 activation bits and writes 64 KV + 800 activation bits:
    552 bytes at 1 GB/s = 552 ns. QMC: 300 code bits in `rr` (37.5 B); 50 metadata + the same rest in
    `dram` (2866 bits = 358.25 B). Latency = max over the two tiers (compute is picoseconds)."""
    claim = Claim(
        paper=Paper(text="3x", low=3, high=3, source="test"),
        metric="latency",
        steps=[
            Step(assumption="faster dram", source="assumption", set={"tiers.dram.bandwidth_GBps": 4.0}),
            Step(assumption="slower rr", source="hardware.md", set={"tiers.rr.bandwidth_GBps": 0.25}),
        ],
    )
    spec = parse_method("qmc3")
    led = run_ledger(
        ARCH,
        "latency",
        claim,
        spec,
        parse_platform(QMC, "q"),
        parse_platform(BASE, "b"),
        lambda s: COST,
        [],
        WL,
    )
    assert led["default"]["ratio"] == pytest.approx(552 / 358.25, rel=1e-6)
    assert led["steps"][0]["ratio"] == pytest.approx(552 / (358.25 / 4), rel=1e-6)  # dram now 89.6 ns
    assert led["steps"][1]["ratio"] == pytest.approx(552 / (37.5 / 0.25), rel=1e-6)  # rr now the slow one
    assert led["reached"] and led["reached_at_step"] == 1  # 6.16x >= 3x at step 1
    assert led["steps"][0]["kind"] == "assumption" and led["steps"][1]["kind"] == "sourced"
    # The baseline side was not touched by a QMC-side `set`.
    assert led["final_ratio"] == led["steps"][1]["ratio"]


def test_a_step_on_both_sides_moves_the_baseline_too_and_not_reached_says_why():
    claim = Claim(
        paper=Paper(text="100x", low=100, high=100, source="test"),
        metric="latency",
        steps=[Step(assumption="dram 2x", source="assumption", side="both", set={"tiers.dram.bandwidth_GBps": 2.0})],
    )
    led = run_ledger(
        ARCH, "latency", claim, parse_method("qmc3"), parse_platform(QMC, "q"), parse_platform(BASE, "b"),
        lambda s: COST, [], WL,
    )  # fmt: skip
    # Both dram tiers at 2 GB/s: the ratio is unchanged (552/358.25) since dram bounds both.
    assert led["steps"][0]["ratio"] == pytest.approx(552 / 358.25, rel=1e-6)
    assert not led["reached"] and "dram" in led["why_not"] and "100x" in led["why_not"]


def test_shipped_ledgers_cover_the_four_claims_and_every_step_is_sourced_or_an_assumption():
    led = load_ledger()
    assert set(led.claims) == {"memory", "off_chip", "energy", "latency"}
    for name, c in led.claims.items():
        assert c.steps, name
        for s in c.steps:
            assert s.source.strip() and (s.is_assumption or s.cited), (name, s.assumption, s.source)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["claims"]["memory"]["steps"][0].update(source=" "), "steps.0.source: is empty"),
        (lambda d: d["claims"]["memory"]["steps"][0].pop("method"), "changes nothing"),
        (lambda d: d["claims"]["memory"].update(metric="speed"), "unknown metric 'speed'"),
        (lambda d: d["claims"]["memory"]["paper"].update(low=float("nan")), "paper.low"),
        (lambda d: d["claims"]["memory"]["paper"].update(low=-6.3), "paper.low: Input should be greater than 0"),
        (lambda d: d["claims"]["memory"]["paper"].update(low=9.0, high=7.3), "low (9) is above high (7.3)"),
        (lambda d: d.update(claims={}), "claims: Dictionary should have at least 1 item"),
    ],
)
def test_a_bad_ledger_file_is_one_line(tmp_path, edit, message):
    from importlib import resources

    data = yaml.safe_load((resources.files("qmc_edge.claims") / "claims.yaml").read_text(encoding="utf-8"))
    edit(data)
    p = tmp_path / "l.yaml"
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(QMCError) as e:
        load_ledger(p)
    assert str(e.value).startswith(f"ledger {p}: claims") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_figure_path_is_one_line():
    claim = Claim(
        paper=Paper(text="3x", low=3, high=3, source="t"),
        metric="latency",
        steps=[Step(assumption="x", source="assumption", set={"tiers.nowhere.read_ns": 1.0})],
    )
    with pytest.raises(QMCError, match="no platform has the figure 'tiers.nowhere.read_ns'"):
        run_ledger(
            ARCH, "latency", claim, parse_method("qmc3"), parse_platform(QMC, "q"), parse_platform(BASE, "b"),
            lambda s: COST, [], WL,
        )  # fmt: skip


def _results_file(tmp_path, model: str, rows: list[dict]):
    p = tmp_path / "ppl.json"
    p.write_text(json.dumps({"model": model, "windows": 2, "context": 64, "rows": rows}), encoding="utf-8")
    return p


def _row(spec_text: str, ppl: float) -> dict:
    spec = parse_method(spec_text)
    return {"method": spec.name, "spec": spec.model_dump(), "ppl_mean": ppl, "ppl_per_seed": [ppl]}


def test_accuracy_is_read_for_the_matching_spec_and_architecture_only(tmp_path):
    f = _results_file(
        tmp_path,
        "/x/SmolLM2-135M-Instruct.Q4_1.gguf",
        [_row("fp", 20.0), _row("qmc3", 60.0), _row("qmc:bits=3,cell_bits=3,rho=0.02", 50.0)],
    )
    (a,) = find_accuracy(parse_method("qmc3"), "smollm2-135m", [f])
    assert a["ppl"] == 60.0 and a["fp_ppl"] == 20.0 and "upstream" in a["note"]
    assert find_accuracy(parse_method("qmc3:quantize_embeddings=true"), "smollm2-135m", [f]) == []
    assert find_accuracy(parse_method("qmc3"), "llama-3.2-3b", [f]) == []
    # An old row without a newer option counts only while that option is at its default.
    old = copy.deepcopy(_row("qmc3", 61.0))
    old["spec"].pop("outlier_code")
    f2 = _results_file(tmp_path, "/x/SmolLM2-135M.gguf", [old])
    assert find_accuracy(parse_method("qmc3"), "smollm2-135m", [f2])[0]["ppl"] == 61.0
    assert find_accuracy(parse_method("qmc3:outlier_code=offset"), "smollm2-135m", [f2]) == []
    # An aged chip is not the fresh configuration (None is a value: fresh cells).
    f3 = _results_file(tmp_path, "/x/SmolLM2-135M.gguf", [_row("qmc3:age=10y", 9e6)])
    assert find_accuracy(parse_method("qmc3"), "smollm2-135m", [f3]) == []
    assert find_accuracy(parse_method("qmc3:age=10y"), "smollm2-135m", [f3])[0]["ppl"] == 9e6


def test_qmc_claims_prints_not_measured_for_an_architecture_without_measurements(tiny_model_dir, tmp_path):
    f = _results_file(tmp_path, "/x/SmolLM2-135M-Instruct.Q4_1.gguf", [_row("fp", 20.0), _row("qmc3", 60.0)])
    out = tmp_path / "claims.json"
    runner = CliRunner()
    args = ["claims", "--storage-model", str(tiny_model_dir), "--results", str(f), "--claim", "memory"]
    r = runner.invoke(app, [*args, "--arch", "llama-3.2-3b", "--json", str(out)], terminal_width=250)
    assert r.exit_code == 0, r.output
    assert "not measured" in r.output and "ppl 60.0" not in r.output
    d = json.loads(out.read_text(encoding="utf-8"))
    (c,) = d["claims"]
    assert c["claim"] == "memory" and c["paper"]["text"] == "6.3-7.3x"
    assert all(a.get("ppl") is None for a in c["accuracy"])
    assert {"claim", "paper", "default", "steps", "reached", "accuracy"} <= set(c)
    assert all({"assumption", "source", "ratio"} <= set(s) for s in c["steps"])
    # The same ledger on the architecture the file measured shows the measured number.
    r2 = runner.invoke(app, [*args, "--arch", "smollm2-135m"], terminal_width=250)
    assert r2.exit_code == 0, r2.output
    assert "ppl 60.0 (FP 20.0)" in r2.output


def test_qmc_claims_bad_input_is_one_line_before_work(tmp_path):
    r = CliRunner().invoke(app, ["claims", "--claim", "speed"])
    assert r.exit_code != 0 and "unknown claim 'speed'" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["claims", "--results", str(tmp_path / "none.json")])
    assert r.exit_code != 0 and "results path not found" in r.output
    r = CliRunner().invoke(app, ["claims", "--ledger", str(tmp_path / "none.yaml")])
    assert r.exit_code != 0 and "ledger file not found" in r.output and "--show-ledger" in r.output
    dup = tmp_path / "dup.yaml"
    dup.write_text("claims: {}\nclaims: {}\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["claims", "--ledger", str(dup)])
    assert r.exit_code != 0 and "duplicate key 'claims'" in r.output


@pytest.mark.parametrize(
    "content,needle",
    [
        ("{not json", "not JSON"),
        ("", "not JSON"),
        (json.dumps({"model": "m.gguf", "rows": {"a": 1}}), "'rows' must be a list"),
        (json.dumps({"model": "m.gguf", "rows": [_row("qmc3", -5.0)]}), "ppl_mean must be a perplexity"),
        (json.dumps({"model": "m.gguf", "rows": [{**_row("qmc3", 60.0), "eval": [1]}]}), "eval must be a mapping"),
        (
            json.dumps({"model": "m.gguf", "rows": [{**_row("qmc3", 60.0), "eval": {"tokens_scored": "9"}}]}),
            "tokens_scored must be a whole number",
        ),
        (json.dumps({"model": "m.gguf", "rows": [{**_row("qmc3", 60.0), "tasks": []}]}), "tasks must be a mapping"),
    ],
)
def test_a_bad_results_file_is_one_line_naming_it(tmp_path, content, needle):
    from qmc_edge.claims.accuracy import results_with_rows

    f = tmp_path / "r.json"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(QMCError, match=needle) as exc:
        results_with_rows([f])
    assert str(f) in str(exc.value) and "\n" not in str(exc.value)


def test_json_of_another_kind_is_not_counted_as_a_results_file(tmp_path):
    from qmc_edge.claims.accuracy import results_files, results_with_rows

    (tmp_path / "summary.json").write_text(json.dumps({"cost": [1, 2]}), encoding="utf-8")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    good = _results_file(tmp_path, "/x/SmolLM2-135M.gguf", [_row("qmc3", 60.0)])
    assert results_with_rows(results_files([tmp_path])) == [good]
