"""The counter-based stream (Philox4x32-10): known answers, pinned output, counter semantics, and
device reads drawn from it (``realise(rng="philox")``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from qmc_edge.memory.counter_rng import CounterStream, philox4x32, stream_key
from qmc_edge.memory.models import reram
from qmc_edge.memory.mram import MRAMBitFlips

# Random123 tests/kat_vectors, the three "philox4x32 10" lines: counter[4], key[2] -> result[4].
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_philox_known_answers(ctr, key, expected):
    out = philox4x32(torch.tensor(ctr, dtype=torch.int64)[:, None], key)
    assert tuple(out[:, 0].tolist()) == expected


def test_stream_output_is_pinned():
    """The first draws of one stream, bit for bit: a change here changes every philox read."""
    s = CounterStream(0, "model.layers.0.self_attn.q_proj.weight")
    assert [x.hex() for x in s.uniform(4).tolist()] == [
        "0x1.e3f4187d02c64p-1",
        "0x1.6c3afd428afb8p-1",
        "0x1.29a4b20514d1cp-1",
        "0x1.f460f196b3149p-2",
    ]
    assert [x.hex() for x in s.uniform(2).tolist()] == ["0x1.35ea2eb9ea1b0p-1", "0x1.493cfac8cab58p-5"]
    assert stream_key(0, "x") == stream_key(0, "x") != stream_key(1, "x")


def test_a_draw_is_a_function_of_the_counter_alone():
    """Any prefix of a draw is the draw of that length (across the chunk boundaries), and
    consecutive draws of a stream, and streams of other seeds or names, differ."""
    n = 3 * (1 << 17) + 5  # more than two chunks, odd
    a = CounterStream(3, "t").uniform(n)
    for m in (1, 2, 7, 1 << 17, (1 << 17) + 1, n):
        assert torch.equal(CounterStream(3, "t").uniform(m), a[:m])
    s = CounterStream(3, "t")
    first, second = s.uniform(1000), s.uniform(1000)
    assert not torch.equal(first, second)
    assert not torch.equal(CounterStream(4, "t").uniform(1000), first)
    assert not torch.equal(CounterStream(3, "u").uniform(1000), first)


def test_uniforms_and_normals_have_their_distributions():
    u = CounterStream(11, "dist").uniform(200_000).numpy()
    assert 0.0 < u.min() and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    z = CounterStream(12, "dist").normal(200_000).numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # 53 random bits: far more distinct values than a float32 draw could give
    assert np.unique(u).size == u.size


def _empirical(device, levels: torch.Tensor, read) -> np.ndarray:
    out = read(levels)
    L = device.levels
    counts = np.zeros((L, L))
    np.add.at(counts, (levels.numpy(), out.numpy()), 1)
    return counts / counts.sum(1, keepdims=True)


@pytest.mark.parametrize("age", [0.0, "1d"])
def test_reads_from_the_stream_follow_the_transition_matrix(age):
    dev = reram(3, age_s=age)
    levels = torch.arange(8).repeat_interleave(40_000)
    emp = _empirical(dev, levels, lambda x: dev.read(x, CounterStream(0, "cells")))
    p = dev.transition_matrix()
    n = 40_000
    # every entry within 5 binomial standard errors (plus a floor for the near-zero ones)
    assert np.all(np.abs(emp - p) <= 5 * np.sqrt(p * (1 - p) / n) + 2e-4)
    # the same stream key: the same read, cell for cell
    assert torch.equal(dev.read(levels, CounterStream(0, "cells")), dev.read(levels, CounterStream(0, "cells")))


def test_read_noise_and_mram_flips_draw_from_the_stream():
    dev = reram(3, read_noise=True)
    levels = torch.arange(8).repeat_interleave(5_000)
    a = dev.read(levels, CounterStream(0, "chip"), CounterStream(0, "read 0"))
    b = dev.read(levels, CounterStream(0, "chip"), CounterStream(0, "read 0"))
    c = dev.read(levels, CounterStream(0, "chip"), CounterStream(0, "read 1"))
    assert torch.equal(a, b) and not torch.equal(a, c)
    codes = torch.zeros(200_000, dtype=torch.int16)
    flipped = MRAMBitFlips(1e-3).flip(codes, 8, CounterStream(0, "mram"))
    rate = float((flipped != 0).float().mean())
    assert rate == pytest.approx(1 - (1 - 1e-3) ** 8, rel=0.1)


def test_realise_with_philox(tiny_lm):
    from qmc_edge.methods import parse_method
    from qmc_edge.methods.whole_model import quantize_model

    model = tiny_lm.model
    spec = parse_method("qmc:bits=3,cell_bits=3,age=1d,target_age=1d")
    qm = quantize_model(model, spec)
    params = dict(model.named_parameters())

    def read(seed, rng):
        qm.realise(model, seed, rng=rng)
        out = {n: params[n].detach().clone() for n in qm.tensors}
        qm.restore(model)
        return out

    clean = read(None, "philox")
    a, b, t = read(0, "philox"), read(0, "philox"), read(0, "torch")
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], clean[n]) for n in a)  # the cells do err at one day
    assert any(not torch.equal(a[n], t[n]) for n in a)  # another generator, another chip
    assert all(torch.equal(clean[n], read(None, "torch")[n]) for n in a)  # no noise: no generator
    with pytest.raises(ValueError, match="rng must be one of"):
        qm.realise(model, 0, rng="mt")
