"""Calibration windows (qmc_edge.quant.calibration): the model's BOS first where it takes one."""

from __future__ import annotations

import pytest

from qmc_edge.quant import calibration


class _WordTokenizer:
    """One id per word; ``bos`` is prepended by default, as a Gemma tokenizer does, when given."""

    def __init__(self, bos: int | None) -> None:
        self.bos_token_id = bos

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        ids = [100 + len(w) for w in text.split()]
        return {
            "input_ids": ([self.bos_token_id] if add_special_tokens and self.bos_token_id is not None else []) + ids
        }


@pytest.fixture
def text(monkeypatch):
    words = " ".join(f"w{'x' * (i % 37)}" for i in range(5000))
    monkeypatch.setattr(calibration, "calibration_text", lambda: words)
    return words


def test_windows_start_with_bos_where_the_tokenizer_prepends_one(text):
    plain = calibration.calibration_set(_WordTokenizer(None), 6, 32, seed=3)
    with_bos = calibration.calibration_set(_WordTokenizer(2), 6, 32, seed=3)
    ids = _WordTokenizer(None)(text, add_special_tokens=False)["input_ids"]
    assert plain.bos is None and "bos" not in plain.describe()
    assert with_bos.bos == 2 and with_bos.describe()["bos"] == 2
    assert plain.seq_len == with_bos.seq_len == 32
    for a, b in zip(plain.samples, with_bos.samples, strict=True):
        assert 2 not in a and b[0] == 2
        assert b[1:] == a[:-1]  # the same draw of windows, BOS in front of the first 31 tokens
        assert any(tuple(ids[i : i + 32]) == a for i in range(len(ids) - 31))  # text, in order

    # a tokenizer with a BOS id that it does not prepend gets none (as the perplexity windows)
    class NoPrepend(_WordTokenizer):
        def __call__(self, text, add_special_tokens=True):
            return super().__call__(text, add_special_tokens=False)

    assert calibration.calibration_set(NoPrepend(2), 2, 16).bos is None


class _Tok:
    def __init__(self, add: bool) -> None:
        self.add_bos_token = add
        self.bos_token_id = 2


def _gguf_with(path, add_bos: bool | None):
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("file_says", [True, False, None])
@pytest.mark.parametrize("tokenizer_does", [True, False])
def test_a_gguf_tokenizer_prepends_bos_as_the_file_says(tmp_path, file_says, tokenizer_does):
    """transformers 5.17 dropped Gemma-3's add_bos_token on GGUF conversion (5.24 keeps it): the
    file's flag decides, and a file without one leaves the tokenizer as it is."""
    from qmc_edge.model.loading import _bos_as_the_file_says

    tok = _Tok(tokenizer_does)
    _bos_as_the_file_says(tok, _gguf_with(tmp_path / "m.gguf", file_says))
    assert tok.add_bos_token is (tokenizer_does if file_says is None else file_says)
