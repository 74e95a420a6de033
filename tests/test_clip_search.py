"""The fast paths of QMC's quantizer: the clip-ratio descent and the outlier selection on a sampled bound."""

from __future__ import annotations

import pytest
import torch

from qmc_edge.memory.cells import code_error_moments
from qmc_edge.memory.models import reram
from qmc_edge.methods import parse_method
from qmc_edge.quant import uniform
from qmc_edge.quant.stages.outliers import outlier_positions
from qmc_edge.quant.stages.pipeline import quantize_qmc
from qmc_edge.quant.uniform import clip_grid, quantize_uniform


def heavy_tailed(out: int, inf: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inf, generator=g) * 0.02
    idx = torch.randperm(w.numel(), generator=g)[: w.numel() // 200]
    w.view(-1)[idx] *= 20
    return w


def reference_positions(w: torch.Tensor, rho: float) -> torch.Tensor:
    """The definition: the k largest |w|, ties at the threshold to the lower flat index (stable sort)."""
    k = round(rho * w.numel())
    order = torch.sort(-w.abs().reshape(-1), stable=True).indices
    return torch.sort(order[:k]).values


@pytest.mark.parametrize("rho", [0.001, 0.01, 0.02, 0.03, 0.2])
@pytest.mark.parametrize("kind", ["gaussian", "ties"])
def test_outlier_positions_equal_the_stable_sort_definition(rho, kind):
    """The sampled bound (used for small rho) and the whole-tensor path select exactly the same
    positions as a stable descending sort, including many ties at the threshold."""
    if kind == "ties":  # integers: thousands of equal magnitudes at every threshold
        w = torch.randint(-12, 13, (384, 512), generator=torch.Generator().manual_seed(1)).float()
    else:
        w = heavy_tailed(384, 512, 2)
    assert torch.equal(outlier_positions(w, rho), reference_positions(w, rho))


def test_outlier_bound_is_used_and_falls_back_when_too_few_remain():
    from qmc_edge.quant.stages.outliers import _candidates

    w = heavy_tailed(256, 512, 3).reshape(-1).abs()
    k = round(0.01 * w.numel())
    cand = _candidates(w, k)
    assert cand is not None and k <= cand.numel() < w.numel() // 10  # the fast path, a small superset
    assert _candidates(w, w.numel() // 4) is None  # rho too large for a sampled bound: whole tensor
    # The sampled positions hold the only large entries: too few remain above the bound, so the
    # whole tensor is used, and the selection is still the definition's.
    a = torch.ones(64 * 1024)
    a[: 300 * 16 : 16] = 2.0
    assert _candidates(a, 2048) is None
    assert torch.equal(
        outlier_positions(a[None, :], 2048 / a.numel()), reference_positions(a[None, :], 2048 / a.numel())
    )


def expected_error(w, uc, moments):
    s = uc.scale[:, torch.arange(w.shape[1]) // uc.group_size]
    e = uc.dequantize() - w
    q = uc.codes.long()
    return (e * e + 2 * e * s * moments[0][q] + s * s * moments[1][q]).reshape(w.shape[0], -1, uc.group_size).sum(2)


@pytest.mark.parametrize("bits,cells,age", [(3, 3, 0.0), (2, 2, 0.0), (4, 2, 0.0), (3, 3, "1d")])
def test_descent_picks_from_the_grid_and_is_close_to_its_minimum(bits, cells, age):
    """The descent chooses among the grid's ratios, so no group can beat the exhaustive search; and
    on heavy-tailed weights its total expected error is within 1% of the exhaustive minimum."""
    w = heavy_tailed(128, 512, bits * 7 + cells)
    mom = code_error_moments(bits, reram(cells, age_s=age))
    kw = dict(clip_ratios=clip_grid(20), moments=mom)
    grid = quantize_uniform(w, bits, 128, search="grid", **kw)
    fast = quantize_uniform(w, bits, 128, search="descent", **kw)
    eg, ef = expected_error(w, grid, mom), expected_error(w, fast, mom)
    assert torch.all(ef >= eg * (1 - 1e-5) - 1e-12)  # exhaustive is the minimum over the same set
    assert float(ef.sum()) <= 1.01 * float(eg.sum())
    assert (ef <= eg * (1 + 1e-6)).float().mean() > 0.8  # most groups: the grid's own choice
    assert int(fast.codes.max()) < 2**bits


def test_descent_evaluates_eight_candidates_for_twenty_ratios(monkeypatch):
    monkeypatch.setattr(uniform, "COMPILED", False)  # the torch formulation counts its candidate passes
    calls = []
    real = uniform._candidate
    monkeypatch.setattr(uniform, "_candidate", lambda *a: calls.append(1) or real(*a))
    w = heavy_tailed(8, 256, 4)
    quantize_uniform(w, 3, 128, clip_ratios=clip_grid(20), search="descent")
    assert len(calls) == 8 == uniform._descent_evals(20)
    calls.clear()
    quantize_uniform(w, 3, 128, clip_ratios=clip_grid(20))
    assert len(calls) == 20
    calls.clear()
    quantize_uniform(w, 3, 128, clip_ratios=clip_grid(6), search="descent")
    assert len(calls) == 4 == uniform._descent_evals(6)
    calls.clear()
    quantize_uniform(w, 3, 128, clip_ratios=clip_grid(3), search="descent")  # too few to pay: the grid
    assert len(calls) == 3


def test_descent_finds_the_minimum_of_a_unimodal_error():
    """A group whose expected error is unimodal in the ratio: the descent lands on the grid's minimum."""
    w = torch.linspace(-1, 1, 128)[None, :] ** 3  # smooth, symmetric: error convex in the clip here
    grid = quantize_uniform(w, 3, 128, clip_ratios=clip_grid(20))
    fast = quantize_uniform(w, 3, 128, clip_ratios=clip_grid(20), search="descent")
    assert torch.equal(grid.scale, fast.scale) and torch.equal(grid.codes, fast.codes)


def test_clip_search_option_reaches_the_quantizer():
    w = heavy_tailed(64, 256, 5)
    spec = parse_method("qmc3:clip_search=descent")
    assert spec.clip_search == "descent"
    qt = spec.quantize_tensor(w)
    direct = quantize_qmc(w, 3, spec.cells(for_search=True), rho=0.01, clip_search="descent")
    assert torch.equal(qt.inliers.codes, direct.inliers.codes)
    with pytest.raises(ValueError, match="clip_search"):
        parse_method("qmc3:clip_search=golden")
    with pytest.raises(ValueError, match="clip search must be one of"):
        quantize_uniform(w, 3, 128, search="golden")


def _descent(w, bits, group, compiled, monkeypatch, search="descent", **kw):
    monkeypatch.setattr(uniform, "COMPILED", compiled)
    return quantize_uniform(w, bits, group, clip_ratios=clip_grid(20), search=search, **kw)


@pytest.mark.parametrize("search", ["grid", "descent"])
@pytest.mark.parametrize("bits,cells,age", [(3, 3, 0.0), (2, 2, 0.0), (4, 2, 0.0), (3, 3, "1d")])
@pytest.mark.parametrize("shape,group", [((96, 512), 128), ((40, 300), 128), ((17, 129), None)])
def test_compiled_search_matches_the_torch_formulation(search, bits, cells, age, shape, group, monkeypatch):
    """The compiled loop (clip_kernel) and the torch formulation (what runs on a GPU) make the same
    choices, grid and descent: both take each group's sum in the same fixed order (``_lane_sum``), so
    every group agrees, with and without device moments, with an outlier mask, ragged last groups and
    one group per row. Codes follow the chosen grid exactly."""
    w = heavy_tailed(*shape, seed=bits + cells + shape[1])
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(9)) > 0.02
    for mom in (code_error_moments(bits, reram(cells, age_s=age)), None):
        a = _descent(w, bits, group, True, monkeypatch, search, inlier_mask=mask, moments=mom)
        b = _descent(w, bits, group, False, monkeypatch, search, inlier_mask=mask, moments=mom)
        assert torch.equal(a.scale, b.scale) and torch.equal(a.zero, b.zero)
        assert torch.equal(a.codes, b.codes) and a.codes.dtype == torch.uint8 and a.codes.is_contiguous()
        zero = a.zero[:, torch.arange(shape[1]) // a.group_size]
        assert torch.equal(a.codes[~mask].float(), zero[~mask])  # non-inliers hold the zero-point code


@pytest.mark.parametrize("maxq", [1, 7, 15, 31, 255])
def test_compiled_group_error_is_the_documented_fixed_order_sum(maxq):
    """The kernel's group error is float32 terms summed element i into lane i mod 8, then the lanes
    pairwise: recomputed here with numpy in that order, it agrees to the bit, so the search does not
    depend on the machine's vector width or thread count; for codes of up to 4 bits (the select-tree
    lookup of the moments) and wider ones (an indexed load)."""
    import numpy as np

    from qmc_edge.quant.clip_kernel import LANES, _group_error, padded_scratch

    rng = np.random.default_rng(3)
    w = (rng.standard_normal(131) * 0.02).astype(np.float32)
    inl = (rng.random(131) > 0.1).astype(np.float32)
    m1 = (rng.standard_normal(maxq + 1) * 0.05).astype(np.float32)
    m2 = (rng.random(maxq + 1) * 0.1).astype(np.float32)
    s, z = np.float32(0.0123 * 7 / maxq), np.float32(maxq // 2)
    f = np.float32
    q = np.minimum(np.maximum(np.rint(w / s) + z, f(0)), f(maxq))
    assert len(np.unique(q)) > min(maxq, 6)  # the codes span the table
    e = (q - z) * s - w
    c = q.astype(np.int32)
    terms = (e * e + (f(2) * e * s * m1[c] + (s * s) * m2[c])) * inl
    acc = np.zeros(LANES, np.float32)
    for i, t in enumerate(terms):
        acc[i % LANES] = f(acc[i % LANES] + t)
    want = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    tmp, codes = padded_scratch(131), np.empty(131, np.int32)
    got = _group_error(w, inl, s, z, maxq, np.pad(m1, (0, 16)), np.pad(m2, (0, 16)), True, tmp, codes)
    assert np.float32(got).tobytes() == np.float32(want).tobytes()


@pytest.mark.parametrize("n", [1, 7, 8, 128, 131, 576])
def test_torch_lane_sum_is_the_kernels_sum_to_the_bit(n):
    """uniform._lane_sum (the torch formulation's group sum, the one a GPU runs) adds in the kernel's
    order, so the expected error of a group is the same float32 number on both, for any group length
    (ragged tails included)."""
    import numpy as np

    from qmc_edge.quant.clip_kernel import _group_error, padded_scratch

    rng = np.random.default_rng(n)
    w = (rng.standard_normal((64, n)) * 0.02).astype(np.float32)
    inl = (rng.random((64, n)) > 0.1).astype(np.float32)
    m1 = (rng.standard_normal(8) * 0.05).astype(np.float32)
    m2 = (rng.random(8) * 0.1).astype(np.float32)
    s, z = np.float32(0.0123), np.float32(3.0)
    tmp, codes = padded_scratch(n), np.empty(n, np.int32)
    m1p, m2p = np.pad(m1, (0, 8)), np.pad(m2, (0, 8))  # the kernel's tables are padded to 16 entries
    kernel = np.array([_group_error(w[i], inl[i], s, z, 7, m1p, m2p, True, tmp, codes) for i in range(64)])
    mom = (torch.from_numpy(m1), torch.from_numpy(m2))
    one = torch.ones(64, 1)
    got = uniform.group_error(
        torch.from_numpy(w)[:, None, :], torch.from_numpy(inl)[:, None, :], one * s, one * z, 7, mom
    )
    assert got.shape == (64, 1)
    assert np.array_equal(got[:, 0].numpy().view(np.int32), kernel.astype(np.float32).view(np.int32))


def test_compiled_descent_is_the_same_from_concurrent_threads(monkeypatch):
    """Quantizers run one tensor per thread (parallel.py): the kernel keeps no shared state."""
    from concurrent.futures import ThreadPoolExecutor

    ws = [heavy_tailed(64, 384, s) for s in range(4)]
    mom = code_error_moments(3, reram(3))
    alone = [_descent(w, 3, 128, True, monkeypatch, moments=mom) for w in ws]
    with ThreadPoolExecutor(4) as ex:
        together = list(ex.map(lambda w: _descent(w, 3, 128, True, monkeypatch, moments=mom), ws))
    for a, b in zip(alone, together, strict=True):
        assert torch.equal(a.codes, b.codes) and torch.equal(a.scale, b.scale)


def test_the_kernels_cache_goes_where_it_can_be_written(tmp_path):
    """A read-only install (package folder and HOME not writable) still quantizes: numba's cache goes
    to the first writable of a user cache and a temporary folder, or the kernel compiles in memory."""
    from qmc_edge.quant.clip_kernel import cache_folder

    blocked = tmp_path / "ro"
    blocked.write_text("a file where a folder would be: nothing can be created below it")
    writable_pkg, home, temp = tmp_path / "pkg", tmp_path / "home", tmp_path / "tmp"
    assert cache_folder(writable_pkg, home, temp, None) is None  # numba's default: beside the code
    assert cache_folder(blocked, home, temp, None) == home
    assert cache_folder(blocked, blocked / "h", temp, None) == temp
    assert cache_folder(blocked, blocked / "h", temp, "/some/dir") is None  # NUMBA_CACHE_DIR wins
    with pytest.raises(OSError):
        cache_folder(blocked, blocked / "h", blocked / "t", None)


def test_numba_follows_the_cache_folder_set_at_run_time(tmp_path):
    """What the package does on a read-only install, in a fresh process: the cache folder set before the
    first compilation receives the compiled kernel, and QMC quantizes."""
    import subprocess
    import sys

    code = (
        "import numba, torch; numba.config.CACHE_DIR = {d!r}\n"
        "from qmc_edge.quant.stages.pipeline import quantize_qmc\n"
        "from qmc_edge.memory.models import reram\n"
        "qt = quantize_qmc(torch.randn(8, 256, generator=torch.Generator().manual_seed(0)), 3, reram(3))\n"
        "print(int(qt.inliers.codes.sum()))\n"
    ).format(d=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert any((tmp_path / "cache").rglob("*.nbi")), "nothing was cached in the folder set at run time"
