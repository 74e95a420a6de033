"""Our scorer against lm-evaluation-harness itself: the same model and items give the same per-item
choice log-likelihoods (within 1e-4) and so the same acc / acc_norm.

lm-eval runs with its own task configs (prompts, HellaSwag preprocessing), fed the local data files
through lmeval_bridge; it needs the `lmeval` extra (in `dev`). 200 items of each task on the
embedded model: a few minutes here, so it is marked slow (it still runs in CI).
"""

from __future__ import annotations

import pytest
from conftest import SHARED_DATA

from qmc_edge.tasks import load_task, score_items, task_metrics
from qmc_edge.tasks.evaluate import has_norm

pytestmark = pytest.mark.slow
N_ITEMS = 200
TASK_NAMES = ["arc_easy", "arc_challenge", "boolq", "hellaswag"]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    pytest.importorskip("lm_eval")
    pytest.importorskip("gguf")
    if not (SHARED_DATA / "arc").is_dir():
        pytest.skip("../shared/data not present")
    from qmc_edge.model_io import load_model
    from qmc_edge.tasks.lmeval_bridge import lmeval_loglikelihoods

    lm = load_model(None)
    theirs, reported = lmeval_loglikelihoods(
        lm.model, lm.tokenizer, TASK_NAMES, N_ITEMS, tmp_path_factory.mktemp("lmeval")
    )
    ours = {}
    for name in TASK_NAMES:
        _, items = load_task(name, N_ITEMS)
        ours[name] = (items, score_items(lm.model, lm.tokenizer, items)[0])
    return ours, theirs, reported


@pytest.mark.parametrize("name", TASK_NAMES)
def test_per_item_loglikelihoods_equal_lmeval(both, name):
    ours, theirs, reported = both
    items, lls = ours[name]
    ref = theirs[name]
    assert len(lls) == len(ref) == N_ITEMS
    worst = 0.0
    for i, (a, b) in enumerate(zip(lls, ref, strict=True)):
        assert len(a) == len(b), f"item {i}: {len(a)} choices vs lm-eval's {len(b)}"
        worst = max(worst, *(abs(x - y) for x, y in zip(a, b, strict=True)))
    assert worst < 1e-4, f"{name}: largest per-choice difference {worst:.2e}"
    # Same metrics (and standard errors) as lm-eval reports for the same items.
    m = task_metrics(items, lls, has_norm(name))
    keys = ["acc", "acc_stderr"] + (["acc_norm", "acc_norm_stderr"] if has_norm(name) else [])
    for k in keys:
        assert m[k] == pytest.approx(reported[name][k], abs=1e-9), k
