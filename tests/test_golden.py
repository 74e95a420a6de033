"""Numbers move only with the results version: a handful of small results recomputed and compared
with tests/golden.json (written by tests/golden_values.py under the version that produced them)."""

from __future__ import annotations

import json

import pytest
from conftest import synthetic_text
from golden_values import GOLDEN, compute, differences

from qmc_edge.provenance import RESULTS_VERSION


def test_the_golden_results_hold_under_their_version(tiny_lm):
    stored = json.loads(GOLDEN.read_text(encoding="utf-8"))
    if stored["results_version"] != RESULTS_VERSION:
        pytest.fail(
            f"tests/golden.json holds results version {stored['results_version']}, the code is at "
            f"{RESULTS_VERSION}: run python tests/golden_values.py --write"
        )
    bad = differences(compute(tiny_lm, synthetic_text()), stored["values"])
    assert not bad, (
        "numbers moved while qmc_edge.provenance.RESULTS_VERSION stayed "
        f"{RESULTS_VERSION}:\n" + "\n".join(bad) + "\nbump the version (stored points are then recomputed)"
    )


def test_a_deliberate_change_of_a_number_is_caught(tiny_lm, monkeypatch):
    """The check itself: a clip grid that starts at 0.51 instead of 0.5 moves QMC's codes and perplexity."""
    import qmc_edge.quant.stages.grid as grid

    stored = json.loads(GOLDEN.read_text(encoding="utf-8"))["values"]
    real = grid.clip_grid
    monkeypatch.setattr(grid, "clip_grid", lambda n, lowest=0.5: real(n, 0.51))
    got = compute(tiny_lm, synthetic_text(), only=["qmc3 clean"])
    bad = differences(got, stored)
    assert bad and bad[0].startswith("qmc3 clean")
