"""Two error sources: the programming error of a chip (frozen per seed) and read noise (drawn anew at
every read of that chip); and the one-search sampler every ReRAM read goes through."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qmc_edge.loaded import bos_for
from qmc_edge.memory.models import reram
from qmc_edge.methods import parse_method
from qmc_edge.methods.whole_model import quantize_model
from qmc_edge.model.perplexity import tokenize


def _comparison_read(device, levels: torch.Tensor, seed: int) -> torch.Tensor:
    """The sampler as first written: count the CDF entries of each cell's row below its uniform."""
    cdf = torch.from_numpy(np.cumsum(device.transition_matrix(), axis=1)).to(torch.float64)
    cdf[:, -1] = 1.0
    u = torch.rand(levels.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (u[:, None] > cdf[levels.long()]).sum(dim=1)


@pytest.mark.parametrize("bits", [1, 2, 3])
@pytest.mark.parametrize("age", [0, "1h", "10y"])
def test_sorted_search_read_equals_the_per_row_count(bits, age):
    d = reram(bits, age_s=age, noise_scale=2.0)
    levels = torch.randint(0, 2**bits, (200_000,), generator=torch.Generator().manual_seed(3))
    got = d.read(levels, torch.Generator().manual_seed(9)).long()
    assert torch.equal(got, _comparison_read(d, levels, 9))
    assert int(got.min()) >= 0 and int(got.max()) < 2**bits


def _empirical(device, n: int = 200_000, chip: int = 0, read: int = 1) -> np.ndarray:
    L = device.levels
    levels = torch.arange(L).repeat_interleave(n)
    out = device.read(levels, torch.Generator().manual_seed(chip), torch.Generator().manual_seed(read))
    m = np.zeros((L, L))
    np.add.at(m, (levels.numpy(), out.long().numpy()), 1)
    return m / n


@pytest.mark.parametrize("kw", [{"read_noise": True}, {"read_share": 0.5}, {"read_share": 1.0, "age_s": "1d"}])
def test_split_read_has_the_transition_matrix_of_the_total_error(kw):
    d = reram(3, **kw)
    assert d.rereads
    emp = _empirical(d)
    # 200k cells per level: a binomial sd of at most 1.2e-3; 5e-3 is about 4 sd (read noise's sigma
    # is taken at each cell's conductance, the matrix at the level mean: a small difference).
    assert np.abs(emp - d.transition_matrix()).max() < 5e-3


def test_read_share_keeps_the_error_rate_and_splits_the_sigma():
    base = reram(3, age_s="1h")
    half = reram(3, age_s="1h", read_share=0.5)
    assert np.array_equal(half.transition_matrix(), base.transition_matrix())
    total = base.level_sigmas()
    assert np.allclose(half.level_sigmas() ** 2 + half.read_sigma**2, total**2)
    assert np.allclose(half.read_sigma, total / np.sqrt(2))
    assert not reram(3, read_share=0.0).rereads
    with pytest.raises(ValueError, match="read_share"):
        reram(3, read_share=1.5)


def test_one_chip_many_reads():
    d = reram(3, read_share=0.5)
    levels = torch.randint(0, 8, (100_000,), generator=torch.Generator().manual_seed(1))

    def read(chip: int, r: int) -> torch.Tensor:
        return d.read(levels, torch.Generator().manual_seed(chip), torch.Generator().manual_seed(r))

    assert torch.equal(read(0, 0), read(0, 0))
    assert not torch.equal(read(0, 0), read(0, 1))
    # A read of the same chip agrees with another read of it far more than with another chip's read.
    same_chip = int((read(0, 0) != read(0, 1)).sum())
    other_chip = int((read(0, 0) != read(1, 1)).sum())
    assert same_chip < other_chip
    # With read_share 1 nothing is frozen: the chip draws nothing, a read is its read draw alone.
    all_read = reram(3, read_share=1.0)
    a = all_read.read(levels, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    b = all_read.read(levels, torch.Generator().manual_seed(1), torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def _weights(model, names) -> list[torch.Tensor]:
    params = dict(model.named_parameters(remove_duplicate=False))
    return [params[n].detach().clone() for n in names]


def test_realise_read_index_only_matters_with_read_noise(tiny_model):
    noisy = quantize_model(tiny_model, parse_method("qmc3:read_share=0.5"))
    plain = quantize_model(tiny_model, parse_method("qmc3"))
    names = list(noisy.tensors)
    assert noisy.rereads and not plain.rereads
    plain.realise(tiny_model, 0, read=0)
    a = _weights(tiny_model, names)
    plain.realise(tiny_model, 0, read=5)
    assert all(torch.equal(x, y) for x, y in zip(a, _weights(tiny_model, names), strict=True))
    noisy.realise(tiny_model, 0, read=0)
    r0 = _weights(tiny_model, names)
    noisy.realise(tiny_model, 0, read=1)
    r1 = _weights(tiny_model, names)
    noisy.realise(tiny_model, 0, read=0)
    assert all(torch.equal(x, y) for x, y in zip(r0, _weights(tiny_model, names), strict=True))
    assert any(not torch.equal(x, y) for x, y in zip(r0, r1, strict=True))
    with pytest.raises(ValueError, match="read"):
        noisy.realise(tiny_model, 0, read=-1)


def test_perplexity_rereads_every_window(tiny_lm, text_file, monkeypatch):
    from qmc_edge.model.runner import EvalSettings, run_method
    from qmc_edge.quant.qmodel import QuantizedModel

    ids = tokenize(tiny_lm.tokenizer, text_file.read_text(encoding="utf-8"))
    cfg = EvalSettings(context=32, max_windows=3, seeds=(0,), bos_id=bos_for(tiny_lm.tokenizer))
    calls: list[tuple[int | None, int]] = []
    real = QuantizedModel.realise

    def spy(self, model, seed, read=0, rng="torch"):
        calls.append((seed, read))
        return real(self, model, seed, read, rng)

    monkeypatch.setattr(QuantizedModel, "realise", spy)
    row = run_method(tiny_lm, parse_method("qmc3:read_share=0.5"), ids, cfg)
    # read 0 before the first window, reads 1 and 2 before the next ones, read 0 again for the tasks
    assert calls == [(0, 0), (0, 1), (0, 2), (0, 0)]
    assert row["eval"]["reads_per_seed"] == 3
    calls.clear()
    row = run_method(tiny_lm, parse_method("qmc3"), ids, cfg)
    assert calls == [(0, 0)]
    assert row["eval"]["reads_per_seed"] == 1
