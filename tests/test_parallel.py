"""Per-tensor quantization over threads: the same codes for any number of workers, errors surface
in the caller, torch's thread count is restored, and the worker knob is checked."""

from __future__ import annotations

import time

import pytest
import torch

from qmc_edge.errors import QMCError
from qmc_edge.methods import parse_method
from qmc_edge.methods.whole_model import quantize_model
from qmc_edge.parallel import map_tensors, workers


@pytest.mark.parametrize("method", ["qmc3", "rtn3", "emem3", "mxint4"])
def test_codes_do_not_depend_on_the_number_of_workers(tiny_lm, monkeypatch, method):
    spec = parse_method(method)
    monkeypatch.setenv("QMC_QUANT_WORKERS", "1")
    one = quantize_model(tiny_lm.model, spec)
    monkeypatch.setenv("QMC_QUANT_WORKERS", "3")
    three = quantize_model(tiny_lm.model, spec)
    assert list(one.tensors) == list(three.tensors)  # the model's order, whatever finished first
    for name, a in one.tensors.items():
        b = three.tensors[name]
        assert torch.equal(a.inliers.codes, b.inliers.codes)
        assert torch.equal(a.inliers.scale, b.inliers.scale) and torch.equal(a.inliers.zero, b.inliers.zero)
        if a.outliers is not None:
            assert torch.equal(a.outliers.index, b.outliers.index) and torch.equal(a.outliers.codes, b.outliers.codes)


def test_an_error_in_one_tensor_reaches_the_caller_and_threads_are_restored():
    before = torch.get_num_threads()
    seen = []

    def fn(x: int) -> int:
        assert torch.get_num_threads() == 1  # ops run single-threaded inside the pool
        if x == 2:
            raise ValueError("tensor 2 is bad")
        time.sleep(0.01)  # tensors take time: the queue cannot drain before the error is seen
        seen.append(x)
        return x * x

    assert map_tensors(lambda x: x + 1, list(range(5)), n_workers=2) == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="tensor 2 is bad"):
        map_tensors(fn, list(range(50)), n_workers=2)
    assert torch.get_num_threads() == before
    assert len(seen) < 49  # the queued tensors were dropped after the error


def test_the_worker_knob(monkeypatch):
    monkeypatch.delenv("QMC_QUANT_WORKERS", raising=False)
    assert workers() == torch.get_num_threads()
    monkeypatch.setenv("QMC_QUANT_WORKERS", "4")
    assert workers() == 4
    for bad in ("0", "two"):
        monkeypatch.setenv("QMC_QUANT_WORKERS", bad)
        with pytest.raises(QMCError, match="QMC_QUANT_WORKERS must be a whole number"):
            workers()


@pytest.mark.parametrize("method", ["qmc3", "qmc3:read_noise=true", "emem3:mram_ber=1e-4"])
def test_noisy_reads_do_not_depend_on_the_number_of_workers(tiny_lm, monkeypatch, method):
    qm = quantize_model(tiny_lm.model, parse_method(method))
    reads = []
    for n in ("1", "3"):
        monkeypatch.setenv("QMC_QUANT_WORKERS", n)
        qm.realise(tiny_lm.model, 7, read=1)
        reads.append({k: p.detach().clone() for k, p in tiny_lm.model.named_parameters()})
        qm.restore(tiny_lm.model)
    assert all(torch.equal(reads[0][k], reads[1][k]) for k in reads[0])
    assert any(not torch.equal(reads[0][k], qm.reference[k]) for k in qm.reference)  # the read did change weights
