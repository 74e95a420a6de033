"""Our scorer against lm-evaluation-harness itself: the same model and items give the same per-item
choice log-likelihoods (within 1e-4) and the same acc / acc_norm and standard errors.

lm-eval runs with its own task configs (prompts, HellaSwag preprocessing), fed the local data files
through lmeval_bridge; it needs the `lmeval` extra (in `dev`).

- 200 items of each task on a small random Llama that uses the embedded model's real BPE tokenizer:
  tokenisation and scoring are what parity is about, and any model exercises them; a random model
  makes the 800 items cost seconds rather than the ~15 minutes lm-eval needs for SmolLM2 here.
- A handful of items on the embedded SmolLM2 itself, so the real weights are checked too.
"""

from __future__ import annotations

import pytest
import torch
from conftest import SHARED_DATA

from qmc_edge.tasks import load_task, score_items, task_metrics
from qmc_edge.tasks.evaluate import has_norm

pytestmark = pytest.mark.slow
TASK_NAMES = ["arc_easy", "arc_challenge", "boolq", "hellaswag"]


def _requirements():
    pytest.importorskip("lm_eval")
    pytest.importorskip("gguf")
    if not (SHARED_DATA / "arc").is_dir():
        pytest.skip("../shared/data not present")


def _both(model, tokenizer, n_items: int, work_dir, names=TASK_NAMES):
    from qmc_edge.tasks.lmeval_bridge import lmeval_loglikelihoods

    theirs, reported = lmeval_loglikelihoods(model, tokenizer, list(names), n_items, work_dir)
    ours = {}
    for name in names:
        _, items = load_task(name, n_items)
        ours[name] = (items, score_items(model, tokenizer, items)[0])
    return ours, theirs, reported


@pytest.fixture(scope="module")
def smol_tokenizer():
    _requirements()
    from transformers import AutoTokenizer

    from qmc_edge.model.loading import embedded_gguf

    g = embedded_gguf()
    return AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name)


@pytest.fixture(scope="module")
def random_model(smol_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(smol_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    # Scale up the logits so log-likelihoods differ clearly between choices (a plain random init is
    # nearly uniform, which would make acc comparisons vacuous), to magnitudes like a real model's.
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(4)
    return model


def _check(ours, theirs, reported, name, n_items):
    items, lls = ours[name]
    ref = theirs[name]
    assert len(lls) == len(ref) == n_items
    worst = 0.0
    for i, (a, b) in enumerate(zip(lls, ref, strict=True)):
        assert len(a) == len(b), f"item {i}: {len(a)} choices vs lm-eval's {len(b)}"
        worst = max(worst, *(abs(x - y) for x, y in zip(a, b, strict=True)))
    assert worst < 1e-4, f"{name}: largest per-choice difference {worst:.2e}"
    # Choices are really told apart (the check above is not comparing constants).
    spread = max(max(a) - min(a) for a in lls)
    assert spread > 0.1
    # Same metrics (and standard errors) as lm-eval reports for the same items.
    m = task_metrics(items, lls, has_norm(name))
    keys = ["acc", "acc_stderr"] + (["acc_norm", "acc_norm_stderr"] if has_norm(name) else [])
    for k in keys:
        assert m[k] == pytest.approx(reported[name][k], abs=1e-9), k


@pytest.mark.parametrize("name", TASK_NAMES)
def test_200_items_equal_lmeval_with_the_real_tokenizer(random_model, smol_tokenizer, tmp_path, name):
    _check(*_both(random_model, smol_tokenizer, 200, tmp_path, [name]), name, 200)


@pytest.fixture(scope="module")
def smol_5(tmp_path_factory):
    _requirements()
    from qmc_edge.model.loading import load_model

    lm = load_model(None)
    return _both(lm.model, lm.tokenizer, 5, tmp_path_factory.mktemp("lmeval5"))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_embedded_model_items_equal_lmeval(smol_5, name):
    _check(*smol_5, name, 5)
