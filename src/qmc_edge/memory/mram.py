"""The MRAM fault model: raw bit flips at a bit error rate per read, and the SECDED code that may
protect them (extended Hamming(72,64) per 64-bit word; the decoder's rules, check-bit count and the
word status it reports are described in :mod:`qmc_edge.quant.read`, which applies them to the
fields a quantized tensor keeps in MRAM).

Written here because the simulation must follow the flipped positions through the decoder as the
hardware does (miscorrections included); no maintained library simulates SECDED on bit masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qmc_edge.memory.counter_rng import Generator, uniform

ECC_MODES = ("none", "secded")
ON_DETECTED = ("as_read", "zero")
WORD_DATA_BITS = 64
WORD_CHECK_BITS = 8

# Word status after the SECDED decoder.
CLEAN, CORRECTED, DETECTED = 0, 1, 2

# Codeword positions (1..71) of the 64 data bits: every position that is not a power of two.
_DATA_POS = torch.tensor([p for p in range(1, 72) if p & (p - 1)], dtype=torch.int64)
_POS_TO_DATA = torch.full((128,), -1, dtype=torch.int64)
_POS_TO_DATA[_DATA_POS] = torch.arange(WORD_DATA_BITS)

# Positions of the 8 check bits of a word: Hamming bits at 1, 2, ..., 64, overall parity at 0.
_CHECK_POS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 0], dtype=torch.int64)

assert _DATA_POS.numel() == WORD_DATA_BITS


@dataclass
class MRAMBitFlips:
    """STT-MRAM: independent bit flips at ``ber`` per stored bit per read.

    Default 0: with ECC, MRAM bits are usually treated as error-free (Intel 22FFL, ISSCC 2019; see
    shared/reference/devices.md); 1e-9..1e-6 is the sensitivity range the reference suggests.

    A tensor's reads go through :class:`qmc_edge.memory.mram.MRAMFaults` (a subclass adding the ECC
    option), which flips every bit the tensor keeps in MRAM; an instance of this class is accepted
    there as ``MRAMFaults(ber, ecc=None)``. :meth:`flip` stays for flipping a bare code array.
    """

    ber: float = 0.0

    def flip(self, codes: torch.Tensor, bits: int, generator: Generator) -> torch.Tensor:
        """Flip bits of two's-complement ``bits``-bit integer codes. The uniforms are float64: a
        float32 draw is a multiple of 2**-24, so ``u < ber`` would flip at 6e-8 for any ber below it."""
        if self.ber <= 0 or codes.numel() == 0:
            return codes.clone()
        mask_bits = uniform((codes.numel(), bits), generator).to(codes.device) < self.ber
        weights = (1 << torch.arange(bits, device=codes.device)).to(torch.int64)
        xor = (mask_bits.to(torch.int64) * weights).sum(dim=1).reshape(codes.shape)
        unsigned = codes.to(torch.int64) & ((1 << bits) - 1)
        flipped = unsigned ^ xor
        signed = torch.where(flipped >= (1 << (bits - 1)), flipped - (1 << bits), flipped)
        return signed.to(codes.dtype)


@dataclass
class MRAMFaults(MRAMBitFlips):
    """Bit flips at ``ber`` per stored MRAM bit per read, in every MRAM field of a tensor.

    ``ecc``: ``"none"`` or ``"secded"``, which must be what the tensor stores
    (``QuantizedTensor.mram_ecc``: its check bits exist only if they were stored); None follows the
    tensor. ``on_detected``: what a detected-uncorrectable SECDED word reads as (module docstring).
    """

    ecc: str | None = None
    on_detected: str = "as_read"

    def __post_init__(self) -> None:
        if not 0.0 <= self.ber <= 1.0:
            raise ValueError(f"MRAM bit error rate must be in [0, 1], got {self.ber}")
        if self.ecc is not None and self.ecc not in ECC_MODES:
            raise ValueError(f"MRAM ECC must be one of {', '.join(ECC_MODES)}, got {self.ecc!r}")
        if self.on_detected not in ON_DETECTED:
            raise ValueError(f"on_detected must be one of {', '.join(ON_DETECTED)}, got {self.on_detected!r}")


def check_bits_for(data_bits: int, ecc: str) -> int:
    """Check bits that protect one field of ``data_bits`` bits."""
    if ecc == "none" or data_bits <= 0:
        return 0
    if ecc == "secded":
        return WORD_CHECK_BITS * -(-data_bits // WORD_DATA_BITS)
    raise ValueError(f"MRAM ECC must be one of {', '.join(ECC_MODES)}, got {ecc!r}")


def secded_decode(n: int, data_flips: torch.Tensor, check_flips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one field of ``n`` data bits through extended Hamming(72,64), given what flipped.

    ``data_flips``: sorted indices (int64) of the flipped data bits of the field's stream (word w
    holds bits 64w..64w+63); ``check_flips``: sorted indices of flipped check bits (word w's at
    8w..8w+7: the Hamming bits of positions 1, 2, 4, ..., 64, then the overall parity bit). The
    code is linear, so decoding the error pattern alone is exactly the hardware's decoding of the
    data. Returns the sorted indices of the data bits still wrong after the decoder acted
    (corrections and miscorrections applied; detected words as read) and the status of every word
    (CLEAN, CORRECTED or DETECTED, int8).
    """
    n_words = -(-n // WORD_DATA_BITS)
    d, c = data_flips.to(torch.int64), check_flips.to(torch.int64)
    status = torch.zeros(n_words, dtype=torch.int8)
    if d.numel() + c.numel() == 0:
        return d, status
    words = torch.cat([d // WORD_DATA_BITS, c // WORD_CHECK_BITS])
    pos = torch.cat([_DATA_POS[d % WORD_DATA_BITS], _CHECK_POS[c % WORD_CHECK_BITS]])
    hit = torch.unique(words)  # only words with a flip can be flagged
    where = torch.searchsorted(hit, words)
    parity = torch.bincount(where, minlength=hit.numel()) & 1
    syndrome = torch.zeros(hit.numel(), dtype=torch.int64)
    for b in range(7):
        ones = torch.zeros(hit.numel(), dtype=torch.int64).index_add_(0, where, (pos >> b) & 1)
        syndrome |= (ones & 1) << b
    odd = parity == 1
    slot = _POS_TO_DATA[syndrome]  # data bit the syndrome names; -1 for a check position or none
    bit = hit * WORD_DATA_BITS + slot
    names_data = (slot >= 0) & (bit < n)  # a shortened word's missing bits are not stored
    names_check = (syndrome & (syndrome - 1)) == 0  # 0 (the overall parity bit) or a power of two
    detected = (odd & ~names_data & ~names_check) | (~odd & (syndrome != 0))
    status[hit[odd & (names_data | names_check)]] = CORRECTED
    status[hit[detected]] = DETECTED
    # The decoder flips the named data bit: a correction if it had flipped, else a miscorrection.
    both, counts = torch.unique(torch.cat([d, bit[odd & names_data]]), return_counts=True)
    return both[counts == 1], status


def secded_read(data_err: torch.Tensor, check_err: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`secded_decode` on boolean masks: (n,) flipped data bits and (8 * ceil(n / 64),)
    flipped check bits; returns the (n,) mask of data bits wrong after decoding, and word status."""
    n = data_err.numel()
    need = WORD_CHECK_BITS * -(-n // WORD_DATA_BITS)
    if check_err.numel() != need:
        raise ValueError(f"{n} data bits need {need} check bits, got {check_err.numel()}")
    d = torch.nonzero(data_err.reshape(-1)).squeeze(1)
    c = torch.nonzero(check_err.reshape(-1)).squeeze(1)
    wrong, status = secded_decode(n, d, c)
    after = torch.zeros(n, dtype=torch.bool)
    after[wrong] = True
    return after, status
