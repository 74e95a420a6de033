"""MRAM faults in every MRAM field (qmc_edge.quant.read): reach, ECC, index safety, ber == 0 identity, storage."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import torch

from qmc_edge.artifact.decode import _decode
from qmc_edge.artifact.export import encode_tensor
from qmc_edge.artifact.manifest import TensorEntry
from qmc_edge.memory.cells import read_codes
from qmc_edge.memory.models import reram
from qmc_edge.memory.mram import CORRECTED, DETECTED, MRAMBitFlips, MRAMFaults, secded_read
from qmc_edge.model.perplexity import perplexity
from qmc_edge.quant.grids import quantize_emem_naive, quantize_mxint4, quantize_rtn
from qmc_edge.quant.qtensor import QuantizedTensor, ecc_check_bits, mram_fields
from qmc_edge.quant.read import decode_csr, read_mram, read_tensor
from qmc_edge.quant.stages.pipeline import quantize_qmc


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def heavy_tailed(out: int, inf: int, seed: int) -> torch.Tensor:
    g = gen(seed)
    w = torch.randn(out, inf, generator=g) * 0.02
    idx = torch.randperm(w.numel(), generator=g)[: max(1, w.numel() // 100)]
    w.view(-1)[idx] *= 20
    return w


def qmc_tensor(out: int = 48, inf: int = 200, seed: int = 0, ecc: str = "none") -> QuantizedTensor:
    qt = quantize_qmc(heavy_tailed(out, inf, seed), 3, reram(3), rho=0.02, group_size=64, n_clip=4)
    qt.mram_ecc = ecc
    return qt


def qmc_offset_tensor(out: int = 48, inf: int = 200, seed: int = 4, ecc: str = "none") -> QuantizedTensor:
    """QMC with the offset outlier code: its threshold is one more MRAM field."""
    qt = quantize_qmc(
        heavy_tailed(out, inf, seed), 3, reram(3), rho=0.02, group_size=64, n_clip=4, outlier_code="offset"
    )
    qt.mram_ecc = ecc
    return qt


def emem_tensor(out: int = 64, inf: int = 256, seed: int = 1, ecc: str = "none") -> QuantizedTensor:
    qt = quantize_emem_naive(heavy_tailed(out, inf, seed), 3, reram(3), group_size=64)
    qt.mram_ecc = ecc
    return qt


def hqq_like_tensor(seed: int = 2) -> QuantizedTensor:
    """Real-valued zero points stored as fp16 (zero_bits=16, as HQQ), metadata in MRAM."""
    qt = quantize_rtn(heavy_tailed(32, 128, seed), 3, 32)
    qt.inliers.zero = (qt.inliers.zero + 0.25).half().float()
    qt.zero_bits, qt.code_memory, qt.cell_bits, qt.meta_memory = 16, "reram", 3, "mram"
    return qt


def e8m0_tensor(seed: int = 3) -> QuantizedTensor:
    """MXINT4 (E8M0 scales, fixed zero point) placed in ReRAM with its scales in MRAM."""
    qt = quantize_mxint4(heavy_tailed(32, 128, seed))
    qt.code_memory, qt.cell_bits, qt.meta_memory = "reram", 2, "mram"
    return qt


ALL_KINDS = {
    "qmc": qmc_tensor,
    "qmc_offset": qmc_offset_tensor,
    "emem": emem_tensor,
    "hqq": hqq_like_tensor,
    "e8m0": e8m0_tensor,
}


def popcount(x: torch.Tensor) -> int:
    x = x.to(torch.int64)
    return sum(int(((x >> b) & 1).sum()) for b in range(32))


# --------------------------------------------------------------------------- storage


@pytest.mark.parametrize("kind", list(ALL_KINDS))
@pytest.mark.parametrize("ecc", ["none", "secded"])
def test_mram_fields_sum_to_the_mram_storage(kind, ecc):
    qt = ALL_KINDS[kind]()
    qt.mram_ecc = ecc
    fields = mram_fields(qt)
    s = qt.storage()
    checks = sum(8 * math.ceil(b / 64) for b in fields.values()) if ecc == "secded" else 0
    assert ecc_check_bits(qt) == checks
    assert sum(fields.values()) + checks == s.by_memory()["mram"]
    assert ("ecc_check_bits" in s.components) == (ecc == "secded")
    if ecc == "secded":
        assert s.components["ecc_check_bits"] == ("mram", checks) and checks > 0


def test_storage_without_ecc_is_unchanged_and_dram_tensors_have_no_mram_fields():
    qt = qmc_tensor()
    out_f, in_f = qt.shape
    k, groups = qt.outliers.count, qt.inliers.n_groups
    assert qt.storage().components == {
        "codes": ("reram", out_f * in_f * 3),
        "scales": ("mram", out_f * groups * 16),
        "zero_points": ("mram", out_f * groups * 3),
        "outlier_values": ("mram", k * 8 + 16),
        "outlier_index": ("mram", k * 8 + out_f * 8),
    }
    assert mram_fields(qt) == {
        "scales": out_f * groups * 16,
        "zero_points": out_f * groups * 3,
        "outlier_codes": k * 8,
        "outlier_scale": 16,
        "outlier_cols": k * 8,
        "outlier_counts": out_f * 8,
    }
    rtn = quantize_rtn(heavy_tailed(16, 64, 0), 3, 32)
    assert mram_fields(rtn) == {} and "mram" not in rtn.storage().by_memory()
    rtn.mram_ecc = "secded"  # nothing in MRAM: no check bits either
    assert "ecc_check_bits" not in rtn.storage().components
    rtn.mram_ecc = "parity"
    with pytest.raises(ValueError, match="mram_ecc"):
        rtn.storage()


# --------------------------------------------------------------------------- faults reach every field


@pytest.mark.parametrize("kind", list(ALL_KINDS))
@pytest.mark.parametrize("ecc", ["none", "secded"])
def test_faults_reach_every_mram_field_at_the_expected_rate(kind, ecc):
    qt = ALL_KINDS[kind]()
    qt.mram_ecc = ecc
    ber, seeds = 0.05, 12
    bits = mram_fields(qt)
    flipped = dict.fromkeys(bits, 0)
    raw = dict.fromkeys(bits, 0)
    checks = dict.fromkeys(bits, 0)
    for s in range(seeds):
        r = read_mram(qt, MRAMFaults(ber=ber, ecc=ecc), gen(s))
        assert set(r.fields) == set(bits)
        for name, fr in r.fields.items():
            # The bits read differ from the bits stored exactly where the read went wrong.
            assert popcount(fr.stored ^ fr.read) == fr.wrong_bits
            flipped[name] += fr.wrong_bits
            raw[name] += fr.raw_flips
            checks[name] += fr.check_flips
    for name, n in bits.items():
        total = seeds * n
        sd = math.sqrt(total * ber * (1 - ber))
        assert abs(raw[name] - total * ber) < 5 * sd + 1, (name, raw[name], total * ber)
        if ecc == "none":
            assert flipped[name] == raw[name] and checks[name] == 0
            assert flipped[name] > 0, name
        else:
            ctotal = seeds * 8 * math.ceil(n / 64)
            assert abs(checks[name] - ctotal * ber) < 5 * math.sqrt(ctotal * ber * (1 - ber)) + 1
            # At 5% nearly every word holds several flips: the ECC cannot save these fields.
            assert flipped[name] > 0, name


@pytest.mark.parametrize("kind", list(ALL_KINDS))
def test_dequantize_uses_every_faulty_field_as_hardware_decodes_it(kind):
    """The faulty weight equals an independent, element-by-element decode of the fields as read."""
    qt = ALL_KINDS[kind]()
    faults = MRAMFaults(ber=0.02)
    out_f, in_f = qt.shape
    for seed in range(4):
        w = read_tensor(qt, None, faults, gen(seed))
        r = read_mram(qt, faults, gen(seed))
        f = r.fields
        inl = qt.inliers

        def fp16(bits: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(bits.numpy().astype(np.uint16).view(np.float16).astype(np.float32))

        if qt.scale_bits == 8:
            scale = torch.tensor([2.0 ** (int(b) - 127) if b != 255 else float("nan") for b in f["scales"].read])
        else:
            scale = fp16(f["scales"].read)
        scale = scale.reshape(out_f, -1)
        if "zero_points" not in f:
            zero = inl.zero
        elif qt.zero_bits == 16:
            zero = fp16(f["zero_points"].read).reshape(out_f, -1)
        else:
            zero = f["zero_points"].read.float().reshape(out_f, -1)
        g = torch.arange(in_f) // inl.group_size
        want = (inl.codes.float() - zero[:, g]) * scale[:, g]
        if qt.outliers is not None:
            o = qt.outliers
            codes = [(int(c) - 256 if c >= 128 else int(c)) for c in f["outlier_codes"].read]
            fs = f["outlier_scale"]
            oscale = o.scale if int(fs.read[0]) == int(fs.stored[0]) else float(fp16(fs.read)[0])
            t = None
            if o.offset is not None:
                ft = f["outlier_offset"]
                t = o.offset if int(ft.read[0]) == int(ft.stored[0]) else float(fp16(ft.read)[0])
            cols, counts = f["outlier_cols"].read.tolist(), f["outlier_counts"].read.tolist()
            e = 0
            for row in range(out_f):  # the hardware walk: counts, then columns, in table order
                for _ in range(counts[row]):
                    if e >= o.count:
                        break
                    if cols[e] < in_f:
                        c = torch.tensor([float(codes[e])])
                        if t is None:
                            v = c * oscale
                        else:  # sign + magnitude above the threshold, in float32 as the datapath computes
                            v = t + c * oscale if codes[e] >= 0 else -(t + (-c - 1) * oscale)
                        want[row, cols[e]] = v[0]
                    e += 1
        torch.testing.assert_close(w, want, rtol=0, atol=0, equal_nan=True)
        assert not torch.equal(w, qt.dequantize()), "2% BER must change the weight"


def test_emem_scales_are_now_exposed():
    """eMEM keeps scales and zero points in MRAM: it used to ignore the MRAM BER entirely."""
    qt = emem_tensor()
    w = read_tensor(qt, None, MRAMFaults(ber=1e-3), gen(0))
    assert not torch.equal(w, qt.dequantize())


def test_flipped_fp16_exponent_decodes_to_inf_and_nan_without_error():
    # Groups [0, 7 * 2**15, 0, 0]: scale 2**15, fp16 0x7800 (exponent 11110), one flip from inf.
    w = torch.zeros(1, 256)
    w[0, 1::4] = 7 * 2.0**15
    qt = quantize_emem_naive(w, 3, reram(3), group_size=4)
    assert bool((qt.inliers.scale == 2.0**15).all())
    hits = set()
    for s in range(40):
        w = read_tensor(qt, None, MRAMFaults(ber=0.05), gen(s))
        assert w.shape == (1, 256)
        hits.add("inf" if torch.isinf(w).any() else "nan" if torch.isnan(w).any() else "finite")
    assert hits == {"inf", "nan", "finite"}


# --------------------------------------------------------------------------- ECC


def test_secded_corrects_every_single_flip_in_a_word():
    for n in (64, 64 * 3, 64 + 10):  # whole words and a shortened last word
        n_words = -(-n // 64)
        for word in range(n_words):
            width = min(64, n - 64 * word)
            for b in range(width + 8):  # every stored data bit, then every check bit
                data, check = torch.zeros(n, dtype=torch.bool), torch.zeros(8 * n_words, dtype=torch.bool)
                if b < width:
                    data[64 * word + b] = True
                else:
                    check[8 * word + b - width] = True
                after, status = secded_read(data, check)
                assert not after.any(), (n, word, b)
                assert status[word] == CORRECTED and int((status != 0).sum()) == 1


def test_secded_detects_every_double_flip_in_a_word():
    for n in (64, 64 + 10):
        word = (n - 1) // 64  # the last word (shortened for n = 74)
        width = n - 64 * word
        n_words = word + 1
        pairs = list(itertools.combinations(range(width + 8), 2))
        # All pairs at once: one copy of the field per pair, laid end to end.
        data = torch.zeros(len(pairs), n, dtype=torch.bool)
        check = torch.zeros(len(pairs), 8 * n_words, dtype=torch.bool)
        for i, pair in enumerate(pairs):
            for b in pair:
                if b < width:
                    data[i, 64 * word + b] = True
                else:
                    check[i, 8 * word + b - width] = True
        for i in range(len(pairs)):
            after, status = secded_read(data[i], check[i])
            assert status[word] == DETECTED, (n, pairs[i])
            assert torch.equal(after, data[i])  # detected words are delivered as read


def _reference_secded(data: list[int], flips: list[int]) -> tuple[list[int], str]:
    """Textbook extended Hamming(72,64) on real data: encode, flip codeword positions, decode."""
    data_pos = [p for p in range(1, 72) if p & (p - 1)][: len(data)]
    cw = [0] * 72
    for p, v in zip(data_pos, data, strict=True):
        cw[p] = v
    for i in range(7):
        cw[1 << i] = sum(cw[p] for p in range(1, 72) if p & (1 << i) and p != 1 << i) & 1
    cw[0] = sum(cw[1:]) & 1
    for p in flips:
        cw[p] ^= 1
    syndrome = 0
    for p in range(1, 72):
        if cw[p]:
            syndrome ^= p
    parity = sum(cw) & 1
    stored = set(data_pos) | {0, 1, 2, 4, 8, 16, 32, 64}
    if parity == 0 and syndrome == 0:
        status = "clean"
    elif parity == 1 and syndrome in stored:
        cw[syndrome] ^= 1
        status = "corrected"
    else:
        status = "detected"
    return [cw[p] for p in data_pos], status


def test_secded_matches_a_textbook_decoder_including_miscorrection():
    rng = random.Random(0)
    seen = {"clean": 0, "corrected": 0, "detected": 0, "miscorrected": 0}
    names = {0: "clean", CORRECTED: "corrected", DETECTED: "detected"}
    for trial in range(1500):
        width = 64 if trial % 3 else rng.randint(1, 63)  # shortened words too
        data = [rng.randint(0, 1) for _ in range(width)]
        data_pos = [p for p in range(1, 72) if p & (p - 1)][:width]
        check_pos = [1, 2, 4, 8, 16, 32, 64, 0]
        stored = data_pos + check_pos
        flips = rng.sample(stored, rng.randint(1, 6))
        want, status = _reference_secded(data, flips)
        derr = torch.tensor([p in flips for p in data_pos])
        cerr = torch.tensor([p in flips for p in check_pos])
        after, st = secded_read(derr, cerr)
        got = [d ^ int(e) for d, e in zip(data, after.tolist(), strict=True)]
        assert got == want and names[int(st[0])] == status, (width, flips)
        if status == "corrected" and got != data:
            seen["miscorrected"] += 1
        seen[status] += 1
    assert all(v > 0 for v in seen.values()), seen  # 3+ flips do get miscorrected, silently


def test_ecc_through_a_read_corrects_isolated_flips_and_pairs_draws_with_no_ecc():
    qt = emem_tensor(out=128, inf=512)
    isolated = 0
    for s in range(6):
        plain = read_mram(qt, MRAMFaults(ber=3e-4, ecc=None), gen(s))
        qt.mram_ecc = "secded"
        prot = read_mram(qt, MRAMFaults(ber=3e-4, ecc="secded"), gen(s))
        qt.mram_ecc = "none"
        for name, fr in prot.fields.items():
            assert fr.raw_flips == plain.fields[name].raw_flips  # same data flips for a seed
            if fr.corrected_words == fr.raw_flips + fr.check_flips:  # every flip alone in its word
                assert fr.wrong_bits == 0 and fr.detected_words == 0
                isolated += fr.raw_flips > 0
    assert isolated >= 4


def test_detected_words_can_read_as_zero():
    qt = emem_tensor(ecc="secded")
    for s in range(3):
        r = read_mram(qt, MRAMFaults(ber=0.01, ecc="secded", on_detected="zero"), gen(s))
        n_det = 0
        for fr in r.fields.values():
            for word in torch.nonzero(fr.word_status == DETECTED).squeeze(1).tolist():
                n_det += 1
                for b in range(64 * word, min(64 * word + 64, fr.bits)):
                    assert (int(fr.read[b // fr.width]) >> (fr.width - 1 - b % fr.width)) & 1 == 0
        assert n_det > 0


def test_ecc_must_match_what_the_tensor_stores():
    qt = qmc_tensor()
    with pytest.raises(ValueError, match="mram_ecc"):
        read_tensor(qt, None, MRAMFaults(ber=0.0, ecc="secded"), gen(0))
    qt.mram_ecc = "secded"
    read_tensor(qt, None, MRAMFaults(ber=0.0, ecc="secded"), gen(0))
    read_tensor(qt, None, MRAMBitFlips(ber=1e-3), gen(0))  # no ecc given: the tensor's
    with pytest.raises(ValueError):
        MRAMFaults(ber=0.1, ecc="chipkill")
    with pytest.raises(ValueError):
        MRAMFaults(ber=1.5)
    with pytest.raises(ValueError):
        MRAMFaults(ber=0.1, on_detected="retry")


# --------------------------------------------------------------------------- index safety


def test_decode_csr_rules():
    shape = (3, 4)
    # Counts past the table stop at its end; columns >= in are dropped; later entries win.
    pos, ent = decode_csr(torch.tensor([2, 5, 0]), torch.tensor([1, 1, 3, 9, 3]), shape)
    assert pos.tolist() == [1, 4 + 3] and ent.tolist() == [1, 4]
    # Counts that do not reach every entry drop the rest.
    pos, ent = decode_csr(torch.tensor([1, 0, 1]), torch.tensor([0, 2, 3, 1]), shape)
    assert pos.tolist() == [0, 8 + 2] and ent.tolist() == [0, 1]
    pos, ent = decode_csr(torch.tensor([0, 0, 0]), torch.tensor([0, 1]), shape)
    assert pos.numel() == 0 and ent.numel() == 0


@pytest.mark.parametrize("ecc", ["none", "secded"])
def test_a_flipped_index_never_leaves_the_tensor(ecc):
    rng = random.Random(7)
    tensors = [qmc_tensor(out=o, inf=i, seed=o, ecc=ecc) for o, i in ((17, 33), (8, 64), (24, 129))]
    for s in range(40):
        qt = tensors[s % len(tensors)]
        ber = rng.choice([rng.uniform(0, 0.5), 10 ** rng.uniform(-4, -0.3), 0.5])
        faults = MRAMFaults(ber=ber, ecc=ecc, on_detected=rng.choice(["as_read", "zero"]))
        r = read_mram(qt, faults, gen(s))
        idx = r.outlier_index
        assert idx.numel() == r.outlier_values.numel() <= qt.outliers.count
        if idx.numel():
            assert int(idx.min()) >= 0 and int(idx.max()) < qt.numel
            assert torch.unique(idx).numel() == idx.numel()
        w = read_tensor(qt, reram(3), faults, gen(s))
        assert w.shape == qt.shape and w.dtype == torch.float32


# --------------------------------------------------------------------------- ber == 0


@pytest.mark.parametrize("ecc", ["none", "secded"])
def test_zero_ber_is_todays_dequantize_bit_for_bit(ecc):
    for qt in (qmc_tensor(ecc=ecc), emem_tensor(ecc=ecc)):
        dev = reram(3)
        # Today's dequantize, written out: a ReRAM read, then the outliers as stored.
        g_ref = gen(5)
        want = qt.inliers.dequantize(read_codes(qt.inliers.codes, qt.inliers.bits, dev, g_ref))
        if qt.outliers is not None:
            want.view(-1)[qt.outliers.index] = qt.outliers.values()
        for mram in (None, MRAMBitFlips(0.0), MRAMFaults(0.0), MRAMFaults(0.0, ecc=ecc, on_detected="zero")):
            g = gen(5)
            got = read_tensor(qt, dev, mram, g)
            assert torch.equal(got, want)
            assert torch.equal(g.get_state(), g_ref.get_state())  # no MRAM draws at all
        assert torch.equal(read_tensor(qt, None, MRAMFaults(0.0)), qt.dequantize())


# --------------------------------------------------------------------------- artifacts and evaluation


def test_artifact_entry_round_trips_mram_ecc_and_omits_the_default(tmp_path):
    for ecc in ("none", "secded"):
        qt = qmc_tensor(ecc=ecc)
        files = {f: {} for f in ("reram.safetensors", "codes.safetensors", "meta.safetensors", "mram.safetensors")}
        entry = encode_tensor("w", qt, files)
        dumped = entry.model_dump(mode="json")
        assert ("mram_ecc" in dumped) == (ecc != "none")
        back = _decode(tmp_path, TensorEntry.model_validate(dumped), files)
        assert back.mram_ecc == ecc and back.storage().components == qt.storage().components
        assert torch.equal(
            read_tensor(back, None, MRAMFaults(0.01), gen(1)), read_tensor(qt, None, MRAMFaults(0.01), gen(1))
        )


def test_perplexity_reports_nan_for_non_finite_weights(tiny_model):
    ids = torch.randint(3, 150, (64,), generator=gen(0))
    with torch.no_grad():
        tiny_model.model.layers[0].mlp.down_proj.weight[0, 0] = float("inf")
    res = perplexity(tiny_model, ids, context=16, max_windows=2)
    assert math.isnan(res.ppl) or math.isinf(res.ppl)
