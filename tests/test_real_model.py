"""The embedded SmolLM2-135M on a few WikiText-2 windows (slow: ~15 s to load, seconds per window)."""

from __future__ import annotations

import math

import pytest

from qmc_edge.experiment import EvalSettings, run_method
from qmc_edge.methods import parse_method
from qmc_edge.model_io import DEFAULT_NOTE, load_model
from qmc_edge.perplexity import bos_for, load_text, tokenize

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    pytest.importorskip("gguf")
    return load_model(None)


@pytest.fixture(scope="module")
def wiki_ids(smol, wikitext_path):
    if not wikitext_path.is_file():
        pytest.skip(f"{wikitext_path} not present")
    src = load_text(str(wikitext_path))
    return tokenize(smol.tokenizer, src.text)


def test_embedded_model_loads_with_its_caveat(smol):
    assert smol.note == DEFAULT_NOTE and "4-bit" in smol.note
    assert smol.model.config.num_hidden_layers == 30
    assert smol.max_context >= 2048


def test_fp_and_qmc_perplexity_on_a_few_windows(smol, wiki_ids):
    cfg = EvalSettings(context=512, max_windows=2, seeds=(0, 1), bos_id=bos_for(smol.tokenizer))
    fp = run_method(smol, parse_method("fp"), wiki_ids, cfg)
    assert fp["eval"]["windows"] == 2 and fp["eval"]["capped"]
    assert 5 < fp["ppl_mean"] < 100  # a working 135M model on Wikipedia text, not a broken one
    qmc = run_method(smol, parse_method("qmc3"), wiki_ids, cfg)
    rtn = run_method(smol, parse_method("rtn3"), wiki_ids, cfg)
    # QMC's storage as measured on this model (see BENCHMARKS.md): ~3.36 effective bits.
    assert 3.2 < qmc["effective_bits"] < 3.5
    assert qmc["storage"]["reram_cells"] == qmc["storage"]["quantized_params"]
    assert len(qmc["ppl_per_seed"]) == 2 and qmc["ppl_per_seed"][0] != qmc["ppl_per_seed"][1]
    assert all(math.isfinite(p) for p in qmc["ppl_per_seed"])
    # The claim the project rests on, at equal-or-fewer bits than RTN-3 g128 + its metadata.
    assert fp["ppl_mean"] < qmc["ppl_mean"] < rtn["ppl_mean"]
