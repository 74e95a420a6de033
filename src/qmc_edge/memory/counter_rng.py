"""A counter-based random stream that gives the same numbers on every device: Philox4x32-10.

Why by hand: torch's generators differ by device (the CPU's Mersenne Twister, CUDA's Philox with
its own offsets and launch-dependent layout), so a seed gives other memory errors on a GPU than on
the CPU, and numpy's Philox is the 4x64 variant, which needs 64 x 64-bit products that tensors do not
have. Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11; the
Random123 library) needs only 32 x 32 -> 64-bit products; here each is computed from 16-bit halves in
int64 arithmetic, which is exact on every backend, so the words, and the uniforms made from them,
are bit-identical on CPU and GPU. The known-answer vectors of Random123's ``tests/kat_vectors`` pin
the implementation (tests/test_counter_rng.py).

A stream is keyed by (seed, name) and draws by counter: the i-th number of a draw is a pure function
of the key, the draw's position in the stream and i, so any slice of a tensor can be drawn alone, in
any order, on any device. Uniforms have 53 random bits, ``(m + 0.5) / 2**53``, never 0 or 1; normals
are their inverse normal CDF (``torch.special.ndtri``, float64), which a GPU may round differently
in the last bit: a read level then differs only where a conductance lands within about 1e-16 of a
threshold.
"""

from __future__ import annotations

import hashlib
import math

import torch

_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox4x32 multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments
_MASK32 = 0xFFFFFFFF
ROUNDS = 10
_CHUNK = 1 << 16  # Philox blocks per piece of work


def _mulhilo(m: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit words of the 64-bit product of the constant ``m`` and ``x`` (int64 tensors
    holding unsigned 32-bit values), from 16-bit halves of ``x`` so no int64 product overflows."""
    lo16 = m * (x & 0xFFFF)  # < 2**48
    hi16 = m * (x >> 16)  # < 2**48
    t = lo16 + ((hi16 & 0xFFFF) << 16)  # < 2**49
    return (hi16 >> 16) + (t >> 32), t & _MASK32


def philox4x32(ctr: torch.Tensor, key: tuple[int, int], rounds: int = ROUNDS) -> torch.Tensor:
    """Philox4x32 of counters ``ctr`` ((4, n) int64, each word in [0, 2**32)) under ``key`` (two 32-bit
    words): (4, n) int64 words in [0, 2**32), on ``ctr``'s device."""
    c0, c1, c2, c3 = (ctr[i] for i in range(4))
    k0, k1 = key[0] & _MASK32, key[1] & _MASK32
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return torch.stack([c0, c1, c2, c3])


def stream_key(seed: int, name: str) -> tuple[int, int]:
    """The 64-bit key of stream ``name`` of ``seed`` (SHA-256: the same on every machine)."""
    h = hashlib.sha256(f"{int(seed)}\0{name}".encode()).digest()
    return int.from_bytes(h[0:4], "little"), int.from_bytes(h[4:8], "little")


class CounterStream:
    """Random draws keyed by (seed, name), by counter: draw k of a stream uses counter word 2 = k, so
    consecutive draws never overlap and each is reproducible alone. Accepted wherever the device
    models take a ``torch.Generator`` (see :func:`uniform`, :func:`normal`)."""

    def __init__(self, seed: int, name: str, device: str | torch.device = "cpu") -> None:
        self.key = stream_key(seed, name)
        self.device = torch.device(device)
        self.draws = 0

    def uniform(self, n: int) -> torch.Tensor:
        """``n`` float64 uniforms in (0, 1), 53 random bits each: (m + 0.5) / 2**53 from the 27 high
        bits of one word and 26 of the next; block b of draw k is the counter (b, 0, k, 0)."""
        out = torch.empty(n, dtype=torch.float64, device=self.device)
        draw = self.draws & _MASK32
        self.draws += 1
        step = 2 * _CHUNK
        for start in range(0, n, step):
            # In chunks that stay in cache: over whole tensors the ~200 int64 passes of 10 rounds
            # were 13x slower (memory-bound) than the same work in 64k-block pieces.
            m = min(step, n - start)
            b = torch.arange(start // 2, start // 2 + -(-m // 2), dtype=torch.int64, device=self.device)
            zero = torch.zeros_like(b)
            w = philox4x32(torch.stack([b & _MASK32, b >> 32, torch.full_like(b, draw), zero]), self.key)
            bits = torch.stack([(w[0] >> 5) << 26 | (w[1] >> 6), (w[2] >> 5) << 26 | (w[3] >> 6)], dim=1)
            out[start : start + m] = (bits.reshape(-1)[:m].to(torch.float64) + 0.5) * 2.0**-53
        return out

    def normal(self, n: int) -> torch.Tensor:
        """``n`` standard normals (float64): the inverse normal CDF of :meth:`uniform`."""
        return torch.special.ndtri(self.uniform(n))


Generator = torch.Generator | CounterStream


def uniform(shape: tuple[int, ...] | torch.Size, generator: Generator) -> torch.Tensor:
    """float64 uniforms of ``shape`` from a torch generator (``torch.rand``, as before) or a stream."""
    if isinstance(generator, CounterStream):
        return generator.uniform(math.prod(shape)).reshape(shape)
    return torch.rand(shape, generator=generator, dtype=torch.float64)


def normal(shape: tuple[int, ...] | torch.Size, generator: Generator) -> torch.Tensor:
    """float64 standard normals of ``shape`` (``torch.randn`` for a torch generator)."""
    if isinstance(generator, CounterStream):
        return generator.normal(math.prod(shape)).reshape(shape)
    return torch.randn(shape, generator=generator, dtype=torch.float64)
