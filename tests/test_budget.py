"""Mixed precision under a whole-model bit budget (qmc_edge.quant.budget) and its sensitivity."""

from __future__ import annotations

import itertools

import pytest
import torch

from qmc_edge.artifact.export import export_artifact
from qmc_edge.artifact.load import load_artifact
from qmc_edge.errors import QMCError
from qmc_edge.methods.registry import parse_method
from qmc_edge.methods.whole_model import quantize_model, storage_report, target_weights
from qmc_edge.quant.budget import Candidate, allocate, unique_params
from qmc_edge.quant.sensitivity import fisher_diagonal, self_generated


def _brute(cands: dict[str, list[Candidate]], limit: int) -> float:
    best = float("inf")
    names = list(cands)
    for combo in itertools.product(*(range(len(cands[n])) for n in names)):
        bits = sum(cands[n][j].bits for n, j in zip(names, combo, strict=True))
        if bits <= limit:
            best = min(best, sum(cands[n][j].cost for n, j in zip(names, combo, strict=True)))
    return best


def test_allocate_respects_the_limit_and_finds_the_optimum_of_small_cases():
    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        cands = {}
        for t in range(4):
            bits = sorted(torch.randint(10, 200, (4,), generator=g).tolist())
            costs = sorted(torch.rand(4, generator=g).tolist(), reverse=True)  # more bits, less error
            cands[f"t{t}"] = [Candidate(None, b, c * (t + 1)) for b, c in zip(bits, costs, strict=True)]
        lo = sum(c[0].bits for c in cands.values())
        hi = sum(c[-1].bits for c in cands.values())
        limit = lo + (hi - lo) * (trial % 10) // 10
        choice = allocate(cands, limit)
        used = sum(cands[n][j].bits for n, j in choice.items())
        cost = sum(cands[n][j].cost for n, j in choice.items())
        assert used <= limit
        # Lagrangian + greedy is not exact in general; on these cases it stays within 5% of the optimum.
        assert cost <= _brute(cands, limit) * 1.05 + 1e-12
    with pytest.raises(QMCError, match="below the smallest"):
        allocate({"a": [Candidate(None, 10, 1.0)]}, 9)


@pytest.mark.parametrize("budget", [3.0, 4.5])
def test_budget_respected_exactly_by_the_storage_report(tiny_lm, budget):
    spec = parse_method(f"qmc:budget={budget},sensitivity=uniform")
    qm = quantize_model(tiny_lm.model, spec, tokenizer=tiny_lm.tokenizer)
    rep = storage_report(tiny_lm.model, spec, qm)
    total = unique_params(tiny_lm.model)
    whole = rep["model_MB"] * 8e6 / total
    assert whole <= budget + 1e-12
    assert whole == pytest.approx(qm.info["budget"]["reached"], rel=1e-12)
    assert whole > budget - 0.5  # the greedy fill spends the budget
    configs = qm.info["budget"]["configs"]
    assert set(configs) >= set(qm.tensors)
    for name, qt in qm.tensors.items():
        assert configs[name].startswith(f"{qt.inliers.bits}b@{qt.cell_bits}b/cell")
        assert int(qt.inliers.codes.max()) < 2**qt.inliers.bits


def test_budget_below_reach_is_refused_before_quantizing(tiny_lm):
    spec = parse_method("qmc:budget=1,sensitivity=uniform")
    with pytest.raises(QMCError, match="below what QMC's options reach"):
        quantize_model(tiny_lm.model, spec, tokenizer=tiny_lm.tokenizer)


def test_budget_options_are_validated():
    with pytest.raises(ValueError, match="needs one of them"):
        parse_method("qmc:sensitivity=uniform")
    s = parse_method("qmc:budget=2.5")
    assert s.quantizes_embeddings and "budget=2.5" in s.name and not s.calibrated
    assert parse_method("qmc:budget=2.5,sensitivity=calibration").calibrated


def test_fisher_from_self_generated_text(tiny_lm):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    a = self_generated(model, tok, 3, 12, seed=5)
    assert a == self_generated(model, tok, 3, 12, seed=5) and len(a) == 3 and all(len(s) == 12 for s in a)
    assert a != self_generated(model, tok, 3, 12, seed=6)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    names = ["model.layers.0.mlp.down_proj.weight", "model.embed_tokens.weight"]
    f = fisher_diagonal(model, names, a)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.requires_grad == flags[n] and p.grad is None for n, p in model.named_parameters())
    # The definition, one sample at a time, by hand.
    p = dict(model.named_parameters())[names[0]]
    want = torch.zeros_like(p)
    for seq in a:
        ids = torch.tensor([seq])
        logits = model(input_ids=ids).logits[0, :-1]
        loss = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
        (g,) = torch.autograd.grad(loss, p)
        want += g**2
    assert torch.allclose(f[names[0]], want / len(a), rtol=1e-4, atol=1e-12)
    assert f[names[1]].shape == dict(model.named_parameters())[names[1]].shape and f[names[1]].sum() > 0


def test_the_budget_spends_bits_where_the_sensitivity_says(tiny_lm, monkeypatch):
    """The self-generated Fisher weighs the budget's errors: the same budget, with one tensor's Fisher
    made a million times larger, moves that tensor to one of the two most precise options (FP16, or
    4-bit codes with 2% outliers), and the allocation under the true Fisher differs from the
    allocation with every weight alike."""
    import qmc_edge.quant.budget as budget_mod

    real = budget_mod.sensitivity_for
    seen: dict = {}

    def spy(spec, model, names, tok):
        seen["f"] = real(spec, model, names, tok)
        return seen["f"]

    monkeypatch.setattr(budget_mod, "sensitivity_for", spy)
    spec = parse_method("qmc:budget=3.2")
    base = quantize_model(tiny_lm.model, spec, tokenizer=tiny_lm.tokenizer).info["budget"]["configs"]
    fisher = seen["f"]
    assert set(fisher) == set(base) and all(
        f.shape == dict(tiny_lm.model.named_parameters())[n].shape for n, f in fisher.items()
    )
    precise = ("fp16", "4b@2b/cell rho=0.02")
    target = next(n for n, c in base.items() if c not in precise and "mlp" in n)
    monkeypatch.setattr(
        budget_mod, "sensitivity_for", lambda *a: {n: f * (1e6 if n == target else 1.0) for n, f in fisher.items()}
    )
    boosted = quantize_model(tiny_lm.model, spec, tokenizer=tiny_lm.tokenizer).info["budget"]["configs"]
    assert boosted[target] in precise
    monkeypatch.setattr(budget_mod, "sensitivity_for", real)
    uniform = quantize_model(tiny_lm.model, parse_method("qmc:budget=3.2,sensitivity=uniform"))
    assert uniform.info["budget"]["configs"] != base


def test_a_budget_with_level_maps_at_an_age_round_trips_through_an_artifact(tiny_lm, tmp_path):
    spec = parse_method("qmc:budget=3.2,level_map=true,target_age=1d,age=1d")
    qm = quantize_model(tiny_lm.model, spec, tokenizer=tiny_lm.tokenizer)
    rep = storage_report(tiny_lm.model, spec, qm)
    assert rep["model_MB"] * 8e6 / unique_params(tiny_lm.model) <= 3.2
    export_artifact(tiny_lm, spec, qm, tmp_path / "a")
    art = load_artifact(tmp_path / "a")
    for name, qt in qm.tensors.items():
        got = art.quantized.tensors[name]
        assert (got.inliers.bits, got.cell_bits) == (qt.inliers.bits, qt.cell_bits)
        assert torch.equal(got.inliers.codes, qt.inliers.codes)
    qm.realise(tiny_lm.model, 3)
    art.realise(3)
    ref = dict(tiny_lm.model.named_parameters())
    for n, p in art.model.named_parameters():
        assert torch.equal(p, ref[n]), n


def test_outliers_by_fisher(tiny_lm):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    mag = quantize_model(model, parse_method("qmc:rho=0.02"), tokenizer=tok)
    fis = quantize_model(model, parse_method("qmc:rho=0.02,outliers_by=fisher"), tokenizer=tok)
    names = list(mag.tensors)
    assert names == list(fis.tensors)
    f = fisher_diagonal(model, names, self_generated(model, tok, 16, 128, seed=0))  # what it ranks by
    params = dict(model.named_parameters())
    moved = 0
    for n in names:
        a, b = mag.tensors[n].outliers, fis.tensors[n].outliers
        assert a.count == b.count  # the same share ...
        score = (f[n] * params[n].detach() ** 2).reshape(-1)
        chosen = score[b.index]
        rest = torch.ones(score.numel(), dtype=torch.bool)
        rest[b.index] = False
        assert chosen.min() >= score[rest].max()  # ... of the largest F w^2
        moved += int((~torch.isin(b.index, a.index)).sum())
    assert moved > 0  # and not the magnitude rule's
    with pytest.raises(ValueError, match="needs a Fisher"):
        parse_method("qmc:outliers_by=fisher,sensitivity=uniform")


def test_budget_with_gptq_rounding_keeps_the_options_and_the_budget(tiny_lm):
    """budget + rounding=gptq: the per-tensor options of the nearest budget, the same storage (so the
    budget holds exactly), GPTQ's codes inside the decoder blocks (not nearest ones), nearest rounding
    outside them (the embedding), codes in range."""
    from test_gptq import _calib

    from qmc_edge.quant.stages.pipeline import run_stages

    model, tok = tiny_lm.model, tiny_lm.tokenizer
    spec = parse_method("qmc:budget=3.2,sensitivity=uniform,rounding=gptq,group_size=32")
    assert spec.calibrated and spec.name.startswith("QMC+GPTQ budget=3.2b")
    near_spec = parse_method("qmc:budget=3.2,sensitivity=uniform,group_size=32")
    names = target_weights(model, spec.quantizes_embeddings)
    near = quantize_model(model, near_spec, tokenizer=tok)
    assert any(not n.startswith("model.layers.") for n in near.tensors)  # the embedding is quantized here
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    gq = run_stages(spec, model, names, tok, None, _calib(tok))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # the model is left as it was
    assert gq.info["budget"]["configs"] == near.info["budget"]["configs"]
    assert set(gq.tensors) == set(near.tensors) and list(gq.tensors) == list(near.tensors)
    rep_g = storage_report(model, spec, gq)
    rep_n = storage_report(model, near_spec, near)
    assert rep_g["model_MB"] == rep_n["model_MB"]
    assert rep_g["model_MB"] * 8e6 / unique_params(model) <= 3.2
    assert gq.info["budget"]["reached"] == pytest.approx(near.info["budget"]["reached"], rel=1e-12)
    moved = 0
    for n, qt in gq.tensors.items():
        q0 = near.tensors[n]
        assert (qt.inliers.bits, qt.cell_bits) == (q0.inliers.bits, q0.cell_bits)
        assert torch.equal(qt.inliers.scale, q0.inliers.scale) and torch.equal(qt.outliers.index, q0.outliers.index)
        assert int(qt.inliers.codes.max()) < 2**qt.inliers.bits
        if n.startswith("model.layers."):
            moved += int((qt.inliers.codes != q0.inliers.codes).sum())
        else:
            assert torch.equal(qt.inliers.codes, q0.inliers.codes), n  # outside the blocks: nearest
    assert moved > 0
    assert set(gq.info["gptq_loss"]) == {n for n in gq.tensors if n.startswith("model.layers.")}
