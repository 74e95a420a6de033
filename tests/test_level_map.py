"""Code-to-level assignment (qmc_edge.quant.level_map): the search, the reads and the storage."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from qmc_edge.memory.cells import code_error_moments, code_transition_matrix
from qmc_edge.memory.mram import MRAMFaults
from qmc_edge.methods.registry import parse_method
from qmc_edge.quant import level_map as lm
from qmc_edge.quant.qtensor import QuantizedTensor, mram_fields
from qmc_edge.quant.read import read_mram, read_tensor
from qmc_edge.quant.stages.pipeline import quantize_qmc
from qmc_edge.quant.uniform import UniformCodes


def _brute_cost(p: np.ndarray, perm, b: np.ndarray) -> float:
    """Expected squared code error, straight from the definition (loops, no moments)."""
    n = len(perm)
    inv = {perm[q]: q for q in range(n)}
    return sum(b[q] * p[perm[q], r] * (inv[r] - q) ** 2 for q in range(n) for r in range(n))


def test_known_optimum_on_a_hand_made_case():
    # Level 1 reads as level 0 half the time; every other level is perfect. Codes 1 and 2 are the
    # frequent ones. The identity loses 100 * 0.5 * 1 = 50; the best puts a rare end code (0 or 3) on
    # level 1 with its neighbour code on level 0, losing 1 * 0.5 * 1 = 0.5.
    p = np.eye(4)
    p[1] = [0.5, 0.5, 0.0, 0.0]
    b = np.array([1.0, 100.0, 100.0, 1.0])
    a = np.zeros(4)
    perm = lm.best_level_map(p, a, b)
    assert lm.noise_cost(p, np.arange(4), a, b) == pytest.approx(50.0)
    assert lm.noise_cost(p, perm, a, b) == pytest.approx(0.5)
    assert perm.tolist().index(1) in (0, 3)  # a rare code sits on the bad level
    best = min(_brute_cost(p, q, b) for q in itertools.permutations(range(4)))
    assert lm.noise_cost(p, perm, a, b) == pytest.approx(best)


def test_exact_search_matches_brute_force_on_a_random_case():
    rng = np.random.default_rng(3)
    p = rng.random((8, 8)) ** 4
    p += np.eye(8) * 20
    p /= p.sum(axis=1, keepdims=True)
    b = rng.random(8) * 10
    perm = lm.best_level_map(p, np.zeros(8), b)
    brute = min(itertools.permutations(range(8)), key=lambda q: _brute_cost(p, q, b))
    assert lm.noise_cost(p, perm, np.zeros(8), b) == pytest.approx(_brute_cost(p, brute, b))


def test_identity_kept_on_a_near_error_free_device():
    p = np.eye(8)
    p[3, 4], p[3, 3] = 1e-14, 1 - 1e-14
    b = np.arange(8.0) + 1
    assert lm.best_level_map(p, np.zeros(8), b, floor=1.0).tolist() == list(range(8))


def test_descent_for_16_codes_never_worse_than_identity():
    dev = parse_method("qmc:bits=4,cell_bits=2,target_age=1d").cells(for_search=True)
    p = code_transition_matrix(4, dev)
    b = np.exp(-((np.arange(16) - 7.5) ** 2) / 8)
    perm = lm.best_level_map(p, np.zeros(16), b)
    assert lm.is_permutation(torch.from_numpy(perm), 16)
    assert lm.noise_cost(p, perm, np.zeros(16), b) < lm.noise_cost(p, np.arange(16), np.zeros(16), b)


def test_identity_moments_are_the_cell_moments():
    dev = parse_method("qmc3").cells(for_search=True)
    p = code_transition_matrix(3, dev)
    m1, m2 = lm.moments(p, None)
    c1, c2 = code_error_moments(3, dev)
    assert torch.allclose(m1, c1) and torch.allclose(m2, c2)


def _qt(bits: int, perm: torch.Tensor | None, n: int = 40000) -> QuantizedTensor:
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2**bits, (1, n), generator=g, dtype=torch.uint8)
    inl = UniformCodes(codes=codes, scale=torch.ones(1, 1), zero=torch.zeros(1, 1), bits=bits, group_size=n)
    return QuantizedTensor(
        shape=(1, n), inliers=inl, code_memory="reram", cell_bits=bits, meta_memory="mram", level_map=perm
    )


def test_reads_follow_the_logical_transition_matrix():
    dev = parse_method("qmc:bits=3,cell_bits=3,age=1d").cells()
    perm = torch.tensor([3, 1, 6, 0, 7, 2, 5, 4], dtype=torch.uint8)
    qt = _qt(3, perm, 200000)
    assert torch.equal(qt.dequantize(), qt.inliers.codes.float())  # noise-free: the logical codes
    read = read_tensor(qt, dev, None, torch.Generator().manual_seed(1)).round().long().reshape(-1)
    stored = qt.inliers.codes.long().reshape(-1)
    want = lm.logical_transition(code_transition_matrix(3, dev), perm.numpy())
    for q in (0, 4, 7):  # codes whose physical level fails often at this age
        sel = read[stored == q]
        emp = torch.bincount(sel, minlength=8).double() / sel.numel()
        assert np.allclose(emp.numpy(), want[q], atol=0.01), (q, emp, want[q])


def test_storage_and_mram_faults_include_the_table():
    perm = torch.tensor([7, 6, 5, 4, 3, 2, 1, 0], dtype=torch.uint8)
    qt = _qt(3, perm, 64)
    plain = _qt(3, None, 64)
    assert qt.storage().components["level_map"] == ("mram", 24)
    assert qt.storage().total - plain.storage().total == 24
    assert mram_fields(qt)["level_map"] == 24
    assert sum(mram_fields(qt).values()) == qt.storage().by_memory()["mram"]
    # Faults in the table alone: find a chip whose flips hit the table and spare the scale and zero
    # point; every code then decodes through the table as read (physical code -> faulty inverse).
    found = 0
    for seed in range(200):
        r = read_mram(qt, MRAMFaults(ber=0.05), torch.Generator().manual_seed(seed))
        hit = {n for n, f in r.fields.items() if f.raw_flips}
        if hit != {"level_map"}:
            continue
        faulty = r.level_inverse
        assert faulty is not None and not torch.equal(faulty, lm.inverse(perm).to(torch.int64))
        w = read_tensor(qt, None, MRAMFaults(ber=0.05), torch.Generator().manual_seed(seed))
        want = faulty[perm.long()[qt.inliers.codes.long()]].float()  # logical -> physical -> as read
        assert torch.equal(w, want) and not torch.equal(w, qt.dequantize())
        found += 1
    assert found >= 3, "no chip flipped only the table"


@pytest.mark.parametrize("bits,cells", [(3, 3), (4, 2)])
def test_quantize_with_level_map_never_worse_in_expected_error(bits, cells):
    """Never worse than the plain assignment; and for 4-bit codes in 2-bit cells (two cells per code,
    the high cell's errors cost 4 steps) a map is chosen and is strictly better."""
    torch.manual_seed(0)
    w = torch.randn(64, 256) * torch.linspace(0.2, 2.0, 256)
    dev = parse_method(f"qmc:bits={bits},cell_bits={cells},target_age=1d").cells(for_search=True)
    p = code_transition_matrix(bits, dev)
    errs, maps = {}, {}
    for flag in (False, True):
        qt = quantize_qmc(w, bits, dev, rho=0.01, group_size=64, level_map=flag)
        assert int(qt.inliers.codes.max()) < 2**bits
        mask = torch.ones(w.numel(), dtype=torch.bool)
        mask[qt.outliers.index] = False
        a, b, det = lm.code_weights(
            w, qt.inliers.codes, qt.inliers.scale, qt.inliers.zero, 64, mask.reshape(w.shape), 2**bits
        )
        perm = np.arange(2**bits) if qt.level_map is None else qt.level_map.numpy().astype(np.int64)
        errs[flag], maps[flag] = det + lm.noise_cost(p, perm, a, b), qt.level_map
    assert errs[True] <= errs[False]
    if cells == 2:
        assert maps[True] is not None and errs[True] < errs[False]


def test_spec_option_and_name():
    s = parse_method("qmc:bits=3,cell_bits=3,level_map=true")
    assert s.level_map and "level_map=true" in s.name
    ideal = quantize_qmc(torch.randn(8, 64), 3, parse_method("qmc:ideal_memory=true").cells(), level_map=True)
    assert ideal.level_map is None  # no errors to avoid: no table
