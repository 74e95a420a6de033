"""MRAM faults in every bit a quantized tensor keeps in MRAM, with an optional SECDED ECC.

What is exposed
---------------
A tensor whose ``meta_memory == "mram"`` keeps these fields in MRAM, exactly the bits that
:meth:`QuantizedTensor.storage` bills to MRAM (:func:`mram_fields` lists them; their sum plus
:func:`ecc_check_bits` is ``storage().by_memory()["mram"]``):

=================  ====================================  =========================================
field              elements x bits                       stored representation that is flipped
=================  ====================================  =========================================
``scales``         out x n_groups, ``scale_bits`` each   16: IEEE fp16 bits; 8: OCP E8M0 byte
                                                         (2**(byte-127), 0xFF = NaN); 32: fp32 bits
``zero_points``    out x n_groups, ``zero_bits`` each    16: fp16 bits (real-valued, e.g. HQQ);
                   (code bits when None; 0: none)        otherwise an unsigned integer
``outlier_codes``  k x ``outliers.bits``                 two's complement (the same flips as the
                                                         artifact's offset-binary form)
``outlier_scale``  1 x 16                                fp16 bits of the per-tensor scale
``outlier_offset`` 1 x 16 (offset code only)           fp16 bits of the outlier threshold
``outlier_cols``   k x ceil(log2(in))                    unsigned column of each outlier (CSR)
``outlier_counts`` out x ceil(log2(in + 1))              unsigned outlier count of each row (CSR)
=================  ====================================  =========================================

Each field is one bit stream: its elements in order, each element most significant bit first (as
:mod:`qmc_edge.artifact.pack` writes them). Every bit flips independently with probability ``ber``
per read; tensors in DRAM, and all ReRAM codes, get no MRAM faults.

What a read returns (hardware semantics)
----------------------------------------
* A scale or zero point whose stored bits changed decodes as the hardware would: a flipped fp16
  exponent bit can scale a group by up to 2**15, or make it inf / NaN (exponent all ones); the
  weights of that group are then inf or NaN (NaN where the code equals the zero point, 0 * inf),
  exactly what an IEEE datapath computes. Nothing is clamped or repaired: a perplexity of inf or
  NaN is the honest result of such a fault. Elements whose bits did not change keep their exact
  in-memory value (so a library scale that is not exactly fp16 is rounded to fp16 only when one of
  its bits flipped; the outlier scale likewise).
* The CSR index is decoded as a hardware walker would: row r owns table entries
  ``[sum(counts[:r]), sum(counts[:r + 1]))``, in table order. Rules, deterministic and stated:
  entries that the counts do not reach (counts summing to less than k) are dropped; counts that run
  past the k stored entries stop at the end of the table (nothing is read past it); an entry whose
  column is >= in_features is dropped (bounds-checked decode, never written out of range); when
  two entries land on the same weight the later one in table order wins (sequential writes).
  A dropped or displaced outlier leaves its slot with the inlier value the ReRAM array holds
  there (the zero-point code, so about 0). The output always has the tensor's shape.

ECC (``ecc="secded"``)
----------------------
Extended Hamming(72,64) SECDED per 64-bit word of each field's stream: 8 check bits per word (7
Hamming bits at codeword positions 1, 2, 4, ..., 64 and an overall parity bit), the data at the 64
other positions 3..71. A field's last word is *shortened*: its missing data bits are known zeros,
never stored and never flipped, but it still has all 8 check bits. Check bits live in MRAM and
flip at the same ``ber``; they are counted in storage as the component ``ecc_check_bits``
(8 * ceil(bits / 64) per field). Decoding is simulated from the actual flipped positions, so it
behaves as the hardware decoder does:

* syndrome = XOR of the codeword positions of the flipped bits, parity = number of flips mod 2;
* parity odd: the decoder assumes one error and flips the bit at the syndrome position (a check or
  parity bit: the data is left as read). One flip is therefore always corrected; three or more odd
  flips can be *miscorrected* (a fourth data bit flipped), silently. A syndrome naming no stored
  bit (past position 71, or a missing bit of a shortened word) is flagged as detected;
* parity even and syndrome non-zero: detected uncorrectable (every double flip lands here);
* parity even and syndrome zero: no error flagged (four or more flips can cancel: silent).

Detected-uncorrectable words: ``on_detected="as_read"`` (default) delivers the word as read, with
its errors: an SECDED memory controller reports the error (an interrupt / poison flag) but an
inference accelerator with no retry path consumes the data anyway, so that is the pessimistic and
realistic default; the count of detected words is in :func:`read_mram`'s report so a benchmark
can say how often a system with a handler would have known. ``on_detected="zero"`` models a
controller that zeroes (poisons to zero) a detected word instead.

Random draws
------------
With ``ber == 0`` nothing is drawn and every value is bit for bit what it was before this module.
With ``ber > 0``: one float64 uniform per stored data bit of all fields (in :func:`mram_fields`
order), then, with ECC, one per check bit; so for one generator state the data flips are the same
with and without ECC (paired comparisons). float64 because a float32 uniform is a multiple of
2**-24, which would floor any ber below 6e-8 at 6e-8.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from qmc_edge.memory.cells import read_codes
from qmc_edge.memory.counter_rng import Generator, uniform
from qmc_edge.memory.models import CellModel
from qmc_edge.memory.mram import (
    CORRECTED,
    DETECTED,
    ECC_MODES,
    WORD_DATA_BITS,
    MRAMBitFlips,
    check_bits_for,
    secded_decode,
)
from qmc_edge.quant.level_map import inverse
from qmc_edge.quant.qtensor import QuantizedTensor, mram_layout

# --------------------------------------------------------------------------- what is stored


def effective_ecc(qt: QuantizedTensor, mram: MRAMBitFlips) -> str:
    """The ECC that decodes ``qt``'s MRAM reads: the tensor's, which ``mram.ecc`` must match."""
    want = getattr(mram, "ecc", None)
    have = qt.mram_ecc
    if have not in ECC_MODES:
        raise ValueError(f"tensor mram_ecc must be one of {', '.join(ECC_MODES)}, got {have!r}")
    if want is not None and want != have and qt.meta_memory == "mram":
        raise ValueError(
            f"MRAM faults ask for ecc={want!r} but the tensor stores mram_ecc={have!r}; "
            "set QuantizedTensor.mram_ecc when quantizing (its check bits exist only if stored)"
        )
    return have


def _fp_bits(x: torch.Tensor, width: int) -> torch.Tensor:
    """Unsigned int64 bit pattern of ``x`` as IEEE fp16 / fp32."""
    if width == 16:
        return x.to(torch.float16).view(torch.int16).to(torch.int64) & 0xFFFF
    if width == 32:
        return x.to(torch.float32).view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    raise ValueError(f"no float format of {width} bits")


def _fp_value(bits: torch.Tensor, width: int) -> torch.Tensor:
    """float32 value of unsigned fp16 / fp32 bit patterns (inf and NaN included)."""
    if width == 16:
        signed = torch.where(bits >= 1 << 15, bits - (1 << 16), bits)
        return signed.to(torch.int16).view(torch.float16).to(torch.float32)
    signed = torch.where(bits >= 1 << 31, bits - (1 << 32), bits)
    return signed.to(torch.int32).view(torch.float32)


def _e8m0_bits(scale: torch.Tensor) -> torch.Tensor:
    """OCP MX E8M0 byte of power-of-two scales: round(log2 s) + 127, in 0..254."""
    e = torch.round(torch.log2(scale.to(torch.float64)))
    e = torch.nan_to_num(e, nan=0.0, posinf=127.0, neginf=-127.0)
    return (e + 127).clamp(0, 254).to(torch.int64)


def _e8m0_value(bits: torch.Tensor) -> torch.Tensor:
    v = torch.pow(torch.tensor(2.0, dtype=torch.float64), (bits - 127).to(torch.float64)).to(torch.float32)
    return torch.where(bits == 0xFF, torch.full_like(v, float("nan")), v)


def _stored(qt: QuantizedTensor, name: str) -> torch.Tensor:
    """The stored unsigned value (int64) of every element of one MRAM field."""
    inl, o = qt.inliers, qt.outliers
    out_f, in_f = qt.shape
    n, w = mram_layout(qt)[name]
    if name == "scales":
        s = inl.scale.reshape(-1)
        if w == 8:
            return _e8m0_bits(s)
        if w in (16, 32):
            return _fp_bits(s, w)
        raise ValueError(f"cannot model MRAM faults in {w}-bit scales (16: fp16, 8: E8M0, 32: fp32)")
    if name == "zero_points":
        z = inl.zero.reshape(-1)
        if w in (16, 32):
            return _fp_bits(z, w)
        return torch.nan_to_num(torch.round(z.to(torch.float64))).clamp(0, (1 << w) - 1).to(torch.int64)
    if name == "outlier_codes":
        return o.codes.to(torch.int64) & ((1 << w) - 1)
    if name == "outlier_scale":
        return _fp_bits(torch.tensor([o.scale], dtype=torch.float64), 16)
    if name == "outlier_offset":
        return _fp_bits(torch.tensor([o.offset], dtype=torch.float64), 16)
    if name == "outlier_cols":
        return o.index.to(torch.int64) % in_f
    if name == "outlier_counts":
        return torch.bincount(o.index.to(torch.int64) // in_f, minlength=out_f)
    if name == "level_map":
        return inverse(qt.level_map).to(torch.int64)
    raise KeyError(name)


# --------------------------------------------------------------------------- SECDED


# --------------------------------------------------------------------------- one read


@dataclass
class FieldRead:
    """One MRAM field after one read: what flipped, what the ECC did, and the values read."""

    name: str
    elements: int
    width: int
    raw_flips: int = 0  # data bits flipped in the cells
    check_flips: int = 0  # check bits flipped (ECC only)
    words: int = 0  # SECDED words (ECC only)
    corrected_words: int = 0  # words the decoder corrected (or believed it did)
    detected_words: int = 0  # detected uncorrectable
    silent_words: int = 0  # not flagged as detected, data still wrong (miscorrected or undetected)
    wrong_bits: int = 0  # data bits that differ from what was stored, after the ECC
    stored: torch.Tensor | None = field(default=None, repr=False)  # (elements,) int64 stored values
    read: torch.Tensor | None = field(default=None, repr=False)  # (elements,) int64 values read
    changed: torch.Tensor | None = field(default=None, repr=False)  # indices of elements read wrong
    word_status: torch.Tensor | None = field(default=None, repr=False)  # (words,) int8, ECC only

    @property
    def bits(self) -> int:
        return self.elements * self.width


@dataclass
class MRAMRead:
    """The MRAM metadata of one tensor as one read returns it (see the module docstring)."""

    ecc: str
    fields: dict[str, FieldRead]
    scale: torch.Tensor  # (out, n_groups) float32, decoded
    zero: torch.Tensor  # (out, n_groups) float32, decoded
    outlier_index: torch.Tensor | None = None  # flat positions written (unique), or None
    outlier_values: torch.Tensor | None = None  # float32 values written there
    level_inverse: torch.Tensor | None = None  # physical -> logical code table as read, or None

    def report(self) -> dict[str, dict[str, int]]:
        """Counts per field (bits, flips, SECDED word outcomes), e.g. for a benchmark's JSON."""
        keys = ("bits", "raw_flips", "check_flips", "words", "corrected_words", "detected_words")
        return {n: {k: getattr(f, k) for k in (*keys, "silent_words", "wrong_bits")} for n, f in self.fields.items()}


def decode_csr(counts: torch.Tensor, cols: torch.Tensor, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat positions and table entries of a CSR outlier index as read (possibly corrupted).

    Row r owns entries [sum(counts[:r]), sum(counts[:r+1])) of the k-entry table. Entries no row
    reaches are dropped, counts past the table stop at its end, columns >= in_features are dropped,
    and of entries that land on one position the last in table order is kept. Returns (positions,
    entries): unique positions in [0, out * in), and for each the table entry written there.
    """
    out_f, in_f = shape
    k = cols.numel()
    ptr = torch.cumsum(counts.to(torch.int64), 0)
    entry = torch.arange(k, dtype=torch.int64)
    rows = torch.searchsorted(ptr, entry, right=True)
    col = cols.to(torch.int64)
    ok = (rows < out_f) & (col < in_f)
    entry = entry[ok]
    pos = rows[ok] * in_f + col[ok]
    if pos.numel() == 0:
        return pos, entry
    order = torch.argsort(pos, stable=True)  # table order within equal positions
    pos, entry = pos[order], entry[order]
    last = torch.ones(pos.numel(), dtype=torch.bool)
    last[:-1] = pos[1:] != pos[:-1]
    return pos[last], entry[last]


def _element_xor(wrong: torch.Tensor, elements: int, width: int) -> torch.Tensor:
    """Per element, the XOR mask of its wrong bits (``wrong``: bit indices, each at most once;
    each element MSB first in the stream)."""
    shift = width - 1 - wrong % width
    return torch.zeros(elements, dtype=torch.int64).index_add_(0, wrong // width, torch.ones_like(wrong) << shift)


def _zero_detected(wrong: torch.Tensor, status: torch.Tensor, stored: torch.Tensor, n: int, width: int) -> torch.Tensor:
    """Wrong bits when every detected word reads as all zeros (its wrong bits: its stored ones)."""
    words = torch.nonzero(status == DETECTED).squeeze(1)
    bit = (words[:, None] * WORD_DATA_BITS + torch.arange(WORD_DATA_BITS)).reshape(-1)
    bit = bit[bit < n]
    ones = bit[((stored[bit // width] >> (width - 1 - bit % width)) & 1).bool()]
    keep = wrong[status[wrong // WORD_DATA_BITS] != DETECTED]
    return torch.sort(torch.cat([keep, ones])).values


def read_mram(qt: QuantizedTensor, mram: MRAMBitFlips, generator: Generator | None) -> MRAMRead:
    """One read of every MRAM field of ``qt`` under ``mram`` faults, decoded (module docstring).

    Draws nothing when ``mram.ber == 0`` or nothing of ``qt`` is in MRAM."""
    ecc = effective_ecc(qt, mram)
    on_detected = getattr(mram, "on_detected", "as_read")
    layout = mram_layout(qt)
    inl = qt.inliers
    res = MRAMRead(ecc=ecc, fields={}, scale=inl.scale, zero=inl.zero)
    if qt.level_map is not None:
        res.level_inverse = inverse(qt.level_map).to(torch.int64)
    o = qt.outliers
    if o is not None and o.count:
        res.outlier_index, res.outlier_values = o.index, o.values()
    ber = float(mram.ber)
    if ber <= 0 or not layout:
        res.fields = {name: FieldRead(name, n, w) for name, (n, w) in layout.items()}
        return res
    sizes = [n * w for n, w in layout.values()]
    checks = [check_bits_for(b, ecc) for b in sizes]
    # One uniform per stored bit, data of all fields first, then check bits (module docstring).
    flips = torch.nonzero(uniform((sum(sizes),), generator) < ber).squeeze(1)
    cflips = torch.empty(0, dtype=torch.int64)
    if sum(checks):
        cflips = torch.nonzero(uniform((sum(checks),), generator) < ber).squeeze(1)
    off = coff = 0
    for (name, (n, w)), size, csize in zip(layout.items(), sizes, checks, strict=True):
        d = _window(flips, off, size)
        fr = FieldRead(name, n, w, raw_flips=d.numel(), stored=_stored(qt, name))
        wrong = d
        if ecc != "none":
            c = _window(cflips, coff, csize)
            wrong, status = secded_decode(size, d, c)
            fr.check_flips, fr.words, fr.word_status = c.numel(), status.numel(), status
            fr.corrected_words = int((status == CORRECTED).sum())
            fr.detected_words = int((status == DETECTED).sum())
            if on_detected == "zero" and fr.detected_words:
                wrong = _zero_detected(wrong, status, fr.stored, size, w)
            bad_words = torch.unique(wrong // WORD_DATA_BITS)
            fr.silent_words = int((status[bad_words] != DETECTED).sum())
        fr.wrong_bits = wrong.numel()
        xor = _element_xor(wrong, n, w)
        fr.read = fr.stored ^ xor
        fr.changed = torch.nonzero(xor).squeeze(1)
        res.fields[name] = fr
        off, coff = off + size, coff + csize
    _decode_fields(qt, res)
    return res


def _window(sorted_idx: torch.Tensor, start: int, size: int) -> torch.Tensor:
    """The indices in [start, start + size) of a sorted index list, relative to ``start``."""
    lo, hi = torch.searchsorted(sorted_idx, torch.tensor([start, start + size])).tolist()
    return sorted_idx[lo:hi] - start


def _decode_fields(qt: QuantizedTensor, res: MRAMRead) -> None:
    """Decoded values of the fields that changed (the others keep their exact in-memory values)."""
    f = res.fields
    inl, o = qt.inliers, qt.outliers
    if (fr := f.get("level_map")) is not None and fr.changed.numel():
        res.level_inverse = fr.read.to(torch.int64)  # b-bit entries: a flipped one is still a code
    if (fr := f.get("scales")) is not None and fr.changed.numel():
        bits = fr.read[fr.changed]
        res.scale = inl.scale.clone()
        res.scale.view(-1)[fr.changed] = _e8m0_value(bits) if fr.width == 8 else _fp_value(bits, fr.width)
    if (fr := f.get("zero_points")) is not None and fr.changed.numel():
        bits = fr.read[fr.changed]
        res.zero = inl.zero.clone()
        res.zero.view(-1)[fr.changed] = _fp_value(bits, fr.width) if fr.width in (16, 32) else bits.to(torch.float32)
    if o is None or not o.count:
        return
    codes, scale, offset = o.codes, o.scale, o.offset
    if (fr := f["outlier_codes"]).changed.numel():
        top = 1 << (o.bits - 1)
        codes = torch.where(fr.read >= top, fr.read - 2 * top, fr.read).to(o.codes.dtype)
    if (fr := f["outlier_scale"]).changed.numel():
        scale = float(_fp_value(fr.read, 16)[0])
    if (fr := f.get("outlier_offset")) is not None and fr.changed.numel():
        offset = float(_fp_value(fr.read, 16)[0])
    index, entries = o.index, None
    if f["outlier_cols"].changed.numel() or f["outlier_counts"].changed.numel():
        index, entries = decode_csr(f["outlier_counts"].read, f["outlier_cols"].read, qt.shape)
    values = o.values(codes, scale, offset)
    res.outlier_index = index
    res.outlier_values = values if entries is None else values[entries]


def read_tensor(
    qt: QuantizedTensor,
    cell_model: CellModel | None = None,
    mram: MRAMBitFlips | None = None,
    generator: torch.Generator | None = None,
    read_generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The weight as the accelerator would see it after one read (noise-free without a device).

    ``generator`` draws the chip: the programming error of the cells and the MRAM faults, the
    same for every read of that chip; ``read_generator`` draws the per-read noise of a device that
    :attr:`~qmc_edge.memory.models.CellModel.rereads` (none: the whole error comes from ``generator``).

    ``mram`` (an :class:`qmc_edge.memory.mram.MRAMFaults`, or a plain ``MRAMBitFlips``) flips bits in
    every MRAM field when the metadata is in MRAM, decoded through the tensor's ``mram_ecc``
    (see :mod:`qmc_edge.quant.read`). ReRAM reads are drawn first, then MRAM faults; with
    ``mram.ber == 0`` nothing is drawn and nothing changes.
    """
    codes = qt.inliers.codes
    lmap = None if qt.level_map is None else qt.level_map.long()
    phys = None  # the physical codes a ReRAM read returned, still to decode through the table
    if cell_model is not None and qt.code_memory == "reram" and not cell_model.is_ideal:
        phys = codes if lmap is None else lmap[codes.long()].to(codes.dtype)
        phys = read_codes(phys, qt.inliers.bits, cell_model, generator, qt.cell_layout, None, read_generator)
    in_mram = mram is not None and qt.meta_memory == "mram"
    if in_mram:
        effective_ecc(qt, mram)  # a mismatched ECC is a bug even when nothing flips
    if in_mram and mram.ber > 0:
        r = read_mram(qt, mram, generator)
        if r.level_inverse is not None:  # every read decodes through the (possibly faulty) table
            phys = lmap[codes.long()] if phys is None else phys
            codes = r.level_inverse[phys.long()].to(codes.dtype)
        elif phys is not None:
            codes = phys
        w = replace(qt.inliers, scale=r.scale, zero=r.zero).dequantize(codes)
        if r.outlier_index is not None:
            w.view(-1)[r.outlier_index] = r.outlier_values
        return w
    if phys is not None:
        codes = phys if lmap is None else inverse(lmap)[phys.long()].to(codes.dtype)
    w = qt.inliers.dequantize(codes)
    if qt.outliers is not None and qt.outliers.count:
        w.view(-1)[qt.outliers.index] = qt.outliers.values()
    return w
