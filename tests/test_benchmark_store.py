"""The published perplexity, task and baseline tables come from the results store benchmarks/store:
every row imported from the old results files must read back with the numbers it was measured with,
every configuration of the shipped sweep specs must be there, and `qmc claims` must read the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qmc_edge.claims.accuracy import find_accuracy, results_files
from qmc_edge.methods import parse_method
from qmc_edge.sweep.spec import load_sweep_spec, method_texts
from qmc_edge.sweep.tables import payloads

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
STORE = BENCH / "store"
LEGACY = {
    "ppl": "ppl.json",
    "tasks": "tasks.json",
    "baselines": "external.json",
    "tasks-baselines": "tasks_external.json",
}


@pytest.mark.parametrize("sweep", list(LEGACY))
def test_every_spec_configuration_is_in_the_store_with_its_measured_numbers(sweep):
    (d,) = payloads(STORE, sweep)
    texts = method_texts(load_sweep_spec(BENCH / "sweeps" / f"{sweep}.yaml"))
    assert sorted(r["method_text"] for r in d["rows"]) == sorted(texts)
    legacy = json.loads((BENCH / "results" / "legacy" / LEGACY[sweep]).read_text(encoding="utf-8"))
    assert len(legacy["rows"]) == len(texts)
    by_label = {r["method"].replace(" calib_samples=16", ""): r for r in d["rows"]}
    for old in legacy["rows"]:
        new = by_label[old["method"]]
        assert new["effective_bits"] == old["effective_bits"] and new["noisy"] == old["noisy"]
        assert new["seeds"] == old["seeds"] and new["machine"] == legacy["machine"]
        assert new["origin"].startswith(f"imported from results/legacy/{LEGACY[sweep]}")
        if "ppl_per_seed" in old:
            assert new["ppl_per_seed"] == old["ppl_per_seed"]
            assert new["ppl_mean"] == pytest.approx(old["ppl_mean"], rel=1e-12)
            assert new["ppl_std"] == pytest.approx(old["ppl_std"], rel=1e-9)
            assert new["eval"]["tokens_scored"] == old["eval"]["tokens_scored"]
        for task, t in (old.get("tasks") or {}).items():
            n = new["tasks"][task]
            assert n["n"] == t["n"]
            for k in ("acc", "acc_norm"):
                if k in t:
                    assert n[k] == pytest.approx(t[k], rel=1e-12)
                    assert n[f"{k}_seed_std"] == pytest.approx(t[f"{k}_seed_std"], abs=1e-12)
                    assert n[f"{k}_stderr"] == pytest.approx(t[f"{k}_stderr"], rel=1e-12)


def test_claims_reads_accuracy_from_the_store():
    files = results_files([STORE])
    assert files == [STORE]  # a store is one source, not a folder of JSON files
    (a,) = find_accuracy(parse_method("qmc3"), "smollm2-135m", files)
    ppl = json.loads((BENCH / "results" / "legacy" / "ppl.json").read_text(encoding="utf-8"))
    old = next(r for r in ppl["rows"] if r["method"] == "QMC 3b g128 rho=0.01 @3b/cell" and r["noisy"])
    # The most tokens scored wins: the whole-test-set row of the ppl sweep.
    assert a["ppl"] == pytest.approx(old["ppl_mean"]) and a["tokens_scored"] == old["eval"]["tokens_scored"]
    assert a["file"] == "store/ppl" and a["fp_ppl"] == pytest.approx(ppl["rows"][0]["ppl_mean"])


@pytest.mark.parametrize("sweep", list(LEGACY))
def test_running_a_shipped_spec_finds_every_point_done(sweep):
    """The imported rows sit under the keys `qmc sweep` computes for the shipped spec and the
    installed embedded model, so running the spec recomputes nothing."""
    from qmc_edge.sweep.spec import expand
    from qmc_edge.sweep.store import Store

    points = expand(load_sweep_spec(BENCH / "sweeps" / f"{sweep}.yaml"))
    assert {p.key for p in points} <= Store(STORE).done()
