"""Bit packing of small unsigned integers (cell levels, codes, zero points, CSR fields).

Values are written MSB first, one after another with no padding between them, and the stream is
padded with zero bits to a whole byte at the end: ``n`` values of ``w`` bits take ceil(n * w / 8)
bytes, which is exactly what the storage report counts, so the size on disk can be checked against
it. numpy's ``packbits``/``unpackbits`` do the bit work; values are processed in chunks whose bit
length is a multiple of 8, so memory stays bounded for large tensors.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 1 << 20  # values per chunk; a multiple of 8, so every chunk starts on a byte boundary


def packed_nbytes(count: int, width: int) -> int:
    """Bytes that ``count`` values of ``width`` bits take when packed."""
    return -(-count * width // 8)


def _check_width(width: int) -> None:
    if not 1 <= width <= 32:
        raise ValueError(f"bit width must be in 1..32, got {width}")


def _work_dtype(width: int) -> type:
    return np.uint8 if width <= 8 else np.uint16 if width <= 16 else np.uint32


def pack_bits(values: np.ndarray, width: int) -> np.ndarray:
    """Pack non-negative integers < 2**width into a uint8 array, MSB first."""
    _check_width(width)
    v = np.asarray(values).reshape(-1).astype(np.int64, copy=False)
    if v.size and (v.min() < 0 or v.max() >= 1 << width):
        raise ValueError(f"values must be in [0, 2**{width}) to pack at {width} bits, got [{v.min()}, {v.max()}]")
    if width <= 8:  # 8 values fill exactly ``width`` bytes: pack them through one uint64
        return _pack_groups(v.astype(np.uint64), width)
    small = v.astype(_work_dtype(width))
    parts = []
    for start in range(0, small.size, _CHUNK):
        chunk = small[start : start + _CHUNK]
        bits = np.empty((chunk.size, width), dtype=np.uint8)
        for j in range(width):  # one pass per bit plane, in the narrowest integer type: fast
            bits[:, j] = (chunk >> (width - 1 - j)) & 1
        parts.append(np.packbits(bits.reshape(-1)))
    out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)
    assert out.size == packed_nbytes(v.size, width)
    return out


def unpack_bits(buf: np.ndarray, width: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` int64 values. Raises ValueError on a wrong length
    or non-zero padding bits (a sign that the buffer is not what was packed)."""
    _check_width(width)
    b = np.asarray(buf)
    if b.dtype != np.uint8 or b.ndim != 1:
        raise ValueError(f"packed data must be a 1-D uint8 array, got {b.dtype} with shape {b.shape}")
    need = packed_nbytes(count, width)
    if b.size != need:
        raise ValueError(f"packed data has {b.size} bytes, expected {need} for {count} values of {width} bits")
    if width <= 8:
        return _unpack_groups(b, width, count)
    wd = _work_dtype(width)
    chunk_bytes = _CHUNK * width // 8
    parts = []
    for i, start in enumerate(range(0, b.size, chunk_bytes)):
        n = min(_CHUNK, count - i * _CHUNK)
        bits = np.unpackbits(b[start : start + chunk_bytes])
        if bits[n * width :].any():
            raise ValueError("packed data has non-zero padding bits")
        planes = bits[: n * width].reshape(n, width)
        acc = planes[:, 0].astype(wd)
        for j in range(1, width):
            acc = (acc << wd(1)) | planes[:, j]
        parts.append(acc.astype(np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _pack_groups(v: np.ndarray, width: int) -> np.ndarray:
    n_groups = -(-v.size // 8)
    padded = np.zeros(n_groups * 8, dtype=np.uint64)
    padded[: v.size] = v
    vals = padded.reshape(n_groups, 8)
    acc = np.zeros(n_groups, dtype=np.uint64)
    for j in range(8):
        acc |= vals[:, j] << np.uint64(width * (7 - j))
    out = np.empty((n_groups, width), dtype=np.uint8)
    for i in range(width):
        out[:, i] = (acc >> np.uint64(8 * (width - 1 - i))) & np.uint64(0xFF)
    return out.reshape(-1)[: packed_nbytes(v.size, width)]


def _unpack_groups(b: np.ndarray, width: int, count: int) -> np.ndarray:
    n_groups = -(-count // 8)
    padded = np.zeros(n_groups * width, dtype=np.uint8)
    padded[: b.size] = b
    by = padded.reshape(n_groups, width)
    acc = np.zeros(n_groups, dtype=np.uint64)
    for i in range(width):
        acc |= by[:, i].astype(np.uint64) << np.uint64(8 * (width - 1 - i))
    mask = np.uint64((1 << width) - 1)
    vals = np.empty((n_groups, 8), dtype=np.uint8)
    for j in range(8):
        vals[:, j] = (acc >> np.uint64(width * (7 - j))) & mask
    flat = vals.reshape(-1)
    tail_bits = b.size * 8 - count * width  # padding bits at the end of the last byte
    if tail_bits and int(b[-1]) & ((1 << tail_bits) - 1):
        raise ValueError("packed data has non-zero padding bits")
    return flat[:count].astype(np.int64)
