"""Code-to-level assignment: which stored cell pattern holds which inlier code.

Why: inlier codes are far from uniform (a group's centre codes dominate), and multi-level ReRAM
levels are far from equally reliable (the end levels of a 3-bit cell fail 10-50x less often than
the middle ones in the shipped cell model tables). The plain assignment (code q in the pattern of q)
ignores both. A permutation ``perm`` stores logical code q as the physical code ``perm[q]`` (whose
bits then go through the usual cell mapping of :mod:`qmc_edge.memory.cells`), and a read decodes the
physical code r back to ``inverse[r]``. For a tensor whose inlier codes q_i have step s_i and
deterministic rounding error e_i, the expected squared read error is

    sum_i e_i**2 + 2 e_i s_i m1(q_i) + s_i**2 m2(q_i),

with m1, m2 the first two moments of the *logical* code error under ``perm``: only
``A[q] = sum 2 e_i s_i`` and ``B[q] = sum s_i**2`` over the codes equal to q matter, so the best
permutation follows from two histograms and the code transition matrix, with no sampling.

The search is exact for up to 8 codes (8! = 40,320 permutations, evaluated at once with numpy) and a
steepest-descent over pairwise swaps from the identity (never worse than it) for 16 codes. No
quantizer or device library we compare with assigns codes to levels, so this is written here.

The table costs ``2**b * b`` bits per tensor, billed in MRAM by the storage report.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import torch

EXACT_MAX_CODES = 8  # 8! = 40,320 permutations: exhaustive; above that, swap descent
RELATIVE_GAIN = 1e-6  # a permutation must cut the read error by this share to replace the identity


def logical_transition(p: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """P[q, q']: probability that logical code q reads back as logical q' when q is stored as
    physical code ``perm[q]`` and the physical code transition matrix is ``p``."""
    perm = np.asarray(perm, dtype=np.int64)
    return p[perm[:, None], perm[None, :]]


def moments(p: np.ndarray, perm: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """First and second moments of the logical code error (read - stored) per logical code: the
    ``moments`` the clip search takes (:func:`qmc_edge.memory.cells.code_error_moments` for the identity)."""
    n = p.shape[0]
    lp = p if perm is None else logical_transition(p, perm)
    diff = np.arange(n)[None, :] - np.arange(n)[:, None]
    return torch.from_numpy((lp * diff).sum(axis=1)).float(), torch.from_numpy((lp * diff**2).sum(axis=1)).float()


def code_weights(
    w: torch.Tensor,
    codes: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group_size: int,
    mask: torch.Tensor,
    n_codes: int,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, B, D) over the inliers (``mask``): per code, A[q] = sum 2 e s and B[q] = sum s**2, where e
    is the deterministic error of each weight's code and s its step; D = sum e**2 in all."""
    idx = torch.arange(w.shape[1]) // group_size
    s = scale[:, idx]
    e = (codes.float() - zero[:, idx]) * s - w.float()
    m = mask.reshape(codes.shape)
    q = codes.long()[m]
    a = torch.bincount(q, weights=(2 * e * s)[m].double(), minlength=n_codes)
    b = torch.bincount(q, weights=(s * s)[m].double(), minlength=n_codes)
    return a.numpy(), b.numpy(), float((e[m].double() ** 2).sum())


def noise_cost(p: np.ndarray, perm: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """The expected squared error that reads add to the deterministic one, under ``perm``."""
    m1, m2 = moments(p, perm)
    return float(a @ m1.double().numpy() + b @ m2.double().numpy())


@lru_cache(maxsize=8)
def _all_perms(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))), dtype=np.int64)


def _exact(p: np.ndarray, a: np.ndarray, b: np.ndarray, floor: float) -> np.ndarray:
    n = p.shape[0]
    perms = _all_perms(n)  # (N, n), identity first
    lp = p[perms[:, :, None], perms[:, None, :]]  # (N, n, n)
    diff = (np.arange(n)[None, :] - np.arange(n)[:, None]).astype(np.float64)
    cost = ((lp * diff) @ np.ones(n)) @ a + ((lp * diff**2) @ np.ones(n)) @ b
    best = int(np.argmin(cost))
    return perms[best] if _beats(cost[best], cost[0], floor) else perms[0]  # perms[0] is the identity


def _beats(cost: float, ref: float, floor: float) -> bool:
    """A real improvement of the total expected error (``floor``: its deterministic part), not
    rounding: a near error-free device keeps the plain assignment."""
    return ref - cost > RELATIVE_GAIN * (abs(ref) + floor) and ref - cost > 1e-30


def _descent(p: np.ndarray, a: np.ndarray, b: np.ndarray, floor: float) -> np.ndarray:
    n = p.shape[0]
    perm = np.arange(n)
    cost = noise_cost(p, perm, a, b)
    while True:
        best, swap = cost, None
        for i, j in itertools.combinations(range(n), 2):
            cand = perm.copy()
            cand[i], cand[j] = cand[j], cand[i]
            c = noise_cost(p, cand, a, b)
            if _beats(c, best, floor):
                best, swap = c, cand
        if swap is None:
            return perm
        perm, cost = swap, best


def best_level_map(p: np.ndarray, a: np.ndarray, b: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """The permutation (logical code -> physical code) of least expected read error for codes with
    weights ``a``, ``b`` (see :func:`code_weights`) under the physical transition matrix ``p``:
    exhaustive up to :data:`EXACT_MAX_CODES` codes, pairwise-swap descent from the identity above.
    A permutation replaces the identity only if it cuts the total expected error (``floor``, the
    deterministic part, plus the read part) by more than :data:`RELATIVE_GAIN` of it."""
    p = np.asarray(p, dtype=np.float64)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if p.shape[0] <= EXACT_MAX_CODES:
        return _exact(p, a, b, floor)
    return _descent(p, a, b, floor)


def inverse(perm: torch.Tensor) -> torch.Tensor:
    """Physical code -> logical code."""
    inv = torch.empty_like(perm)
    inv[perm.long()] = torch.arange(perm.numel(), dtype=perm.dtype)
    return inv


def is_permutation(perm: torch.Tensor, n: int) -> bool:
    return perm.numel() == n and torch.equal(torch.sort(perm.long()).values, torch.arange(n))
