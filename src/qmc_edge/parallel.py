"""Per-tensor work spread over threads, each running torch ops single-threaded.

Why: quantizing a model is thousands of mid-sized tensor ops (a clip search makes ~18 passes per
clip ratio over 256k-weight blocks). Run with torch's intra-op threads, every op is an OpenMP
parallel region whose threads meet at a barrier; when another process holds a core, the thread that
was descheduled keeps its partner waiting a scheduler time slice at every barrier. Measured on 2
cores with one competing process: QMC 3b on SmolLM2-135M went from 14 s to 495 s (36x) that way.
One tensor per thread with single-threaded ops has no barriers: a competing process only takes its
share of the cores. Each tensor's result does not depend on the thread that computes it, so the
codes are the same for any number of workers (tests/test_parallel.py).

The number of workers is torch's intra-op thread count (``torch.set_num_threads``, or
``OMP_NUM_THREADS``), or ``QMC_QUANT_WORKERS`` when set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from typing import TypeVar

import torch

from qmc_edge.errors import QMCError

T = TypeVar("T")
R = TypeVar("R")


def workers() -> int:
    """How many tensors are quantized at once: ``QMC_QUANT_WORKERS``, else torch's thread count."""
    env = os.environ.get("QMC_QUANT_WORKERS")
    if env is None or env == "":
        return max(1, torch.get_num_threads())
    try:
        n = int(env)
    except ValueError:
        n = 0
    if n < 1:
        raise QMCError(f"QMC_QUANT_WORKERS must be a whole number >= 1, got {env!r}; unset it to use torch's threads")
    return n


@contextmanager
def single_threaded_ops() -> Iterator[None]:
    """torch's intra-op threads set to 1 for the block (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def map_tensors(
    fn: Callable[[T], R], items: Sequence[T], done: Callable[[int], None] | None = None, n_workers: int | None = None
) -> list[R]:
    """``[fn(x) for x in items]`` over ``n_workers`` threads (default :func:`workers`) with
    single-threaded torch ops, results in input order; ``done(i)`` after each completes (any order).
    One worker runs in the caller's thread with torch's threads as they are."""
    n = workers() if n_workers is None else n_workers
    if n <= 1 or len(items) <= 1:
        out = []
        for i, x in enumerate(items):
            out.append(fn(x))
            if done:
                done(i)
        return out
    results: list[R | None] = [None] * len(items)
    with single_threaded_ops():
        pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="qmc-quant")
        try:
            futures = {pool.submit(fn, x): i for i, x in enumerate(items)}
            for count, fut in enumerate(as_completed(futures)):
                results[futures[fut]] = fut.result()  # re-raises a tensor's error here, in the caller
                if done:
                    done(count)
        finally:  # on an error (or Ctrl-C) the queued tensors are dropped, not computed
            pool.shutdown(wait=True, cancel_futures=True)
    return results  # type: ignore[return-value]
