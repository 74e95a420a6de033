"""The README's figures of the low-bit frontier are the results' figures: each sentence below must be
in the README and its number must be what benchmarks/results/frontier.json holds, rounded as written.
A re-measured result that moves a number fails here until the README says the new one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# (a README phrase with one {number}, the frontier row's method, its memory, the field, the format)
FIGURES = [
    (
        "the best is QMC+GPTQ under a 2.5-bit budget, {}",
        "QMC+GPTQ budget=2.5b g128 (self) calib_samples=16",
        "reram",
        "ppl",
        "{:.0f}",
    ),
    (
        "With GPTQ rounding the budget reaches {} at",
        "QMC+GPTQ budget=3b g128 (self) calib_samples=16",
        "reram",
        "ppl",
        "{:.1f}",
    ),
    (
        "3 bits and {} (2.05x FP) at 3.5 bits",
        "QMC+GPTQ budget=3.5b g128 (self) calib_samples=16",
        "reram",
        "ppl",
        "{:.1f}",
    ),
    (
        "embeddings quantized reads {} at 4.37 bits",
        "QMC 4b g128 rho=0.01 @2b/cell quantize_embeddings=true",
        "reram",
        "ppl",
        "{:.1f}",
    ),
    (
        "QMC+GPTQ with Fisher-ranked outliers reads {} in noisy ReRAM",
        "QMC+GPTQ 3b g128 rho=0.01 @3b/cell outliers_by=fisher calib_samples=16",
        "reram",
        "ppl",
        "{:.1f}",
    ),
    ("against GPTQ-INT4's {} at 4.17 bits", "GPTQ-INT4 g128 calib_samples=16", "ideal", "ppl", "{:.1f}"),
]


def _readme() -> str:
    return re.sub(r"\s+", " ", (ROOT / "README.md").read_text(encoding="utf-8"))


@pytest.mark.parametrize("phrase,method,memory,field,fmt", FIGURES)
def test_a_readme_figure_is_the_results_figure(phrase, method, memory, field, fmt):
    rows = json.loads((ROOT / "benchmarks" / "results" / "frontier.json").read_text(encoding="utf-8"))
    (row,) = [r for r in rows if r["method"] == method and r["memory"] == memory and "smollm2" in r["model"].lower()]
    want = phrase.format(fmt.format(row[field]))
    assert want in _readme(), f"README should say {want!r} (benchmarks/results/frontier.json)"


def test_the_readmes_noise_costs_are_every_measurement_of_the_results():
    """The noise costs the README quotes: noise_cost.py's measurement and the store's rows of the same
    configuration (benchmarks/frontier.py judges the target on all of them), as the README writes them."""
    results = ROOT / "benchmarks" / "results"
    nc = json.loads((results / "noise_cost_smollm2-135m.json").read_text(encoding="utf-8"))
    rows = json.loads((results / "frontier.json").read_text(encoding="utf-8"))

    def costs(text: str) -> list[str]:
        (r,) = [r for r in nc["rows"] if r["method_text"] == text]
        same = [x["ppl"] / r["clean_ppl"] - 1 for x in rows if x["method"] == r["method"] and x["memory"] == "reram"]
        return sorted(f"{100 * c:+.1f}" for c in [r["noise_cost"], *same])

    gptq = costs("qmc3-gptq:calib_samples=16,outliers_by=fisher")
    near = costs("qmc3:outliers_by=fisher")
    plain = costs("qmc:bits=3,cell_bits=3,rho=0.01")
    readme = _readme()
    assert f"costs {gptq[0]}% and {gptq[1]}% in two measurements" in readme, gptq
    assert f"nearest rounding: {near[0]}-{near[1].lstrip('+')}%" in readme, near
    assert f"plain QMC 3b: {plain[-1]}%" in readme, plain
