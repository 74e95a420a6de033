"""Calibration text for GPTQ and AWQ that overlaps no evaluation set.

WikiText-2 *train* is what papers usually calibrate on, but it is not available offline here, and
WikiText-2 *test* is what we evaluate on. Instead we use the English Wikipedia excerpt that ships
in the gensim wheel (``gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-
shortened.bz2``: about 200 early articles, "Anarchism", "Autism", "Albedo", ...), with the wiki
markup stripped by gensim's own ``filter_wiki``. It is the same domain as WikiText (Wikipedia prose)
but different articles; :func:`ngram_overlap` measures the overlap with any evaluation text so the
claim can be checked rather than trusted (the benchmark records it). gensim's other bundled text,
``lee_background.cor``, is *not* used: it is the evaluation fallback of ``qmc_edge.model.perplexity``.

Samples are random windows of ``seq_len`` tokens from the tokenised excerpt, drawn with a seed, as
the GPTQ and AWQ reference scripts draw them from their calibration sets. A model whose tokenizer
prepends a BOS token (Gemma: without it the model's activations are not those it runs with) gets it
at the start of every window, as the perplexity windows do (:func:`qmc_edge.model.perplexity.bos_for`);
the window then holds BOS and ``seq_len - 1`` tokens of text.
"""

from __future__ import annotations

import bz2
import functools
import random
from dataclasses import dataclass
from pathlib import Path

from qmc_edge.errors import QMCError
from qmc_edge.loaded import bos_for

ENWIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LABEL = f"gensim test data {ENWIKI_FILE} (English Wikipedia excerpt, markup stripped)"
N_SAMPLES = 64
SEQ_LEN = 512
MIN_ARTICLE_CHARS = 500  # redirects and stubs carry no prose


@dataclass(frozen=True)
class CalibrationSet:
    """Token windows for calibration, and what they are (for the result JSON)."""

    samples: tuple[tuple[int, ...], ...]
    label: str
    seed: int
    bos: int | None = None  # the BOS id every window starts with, if the model takes one

    @property
    def n_samples(self) -> int:
        return len(self.samples)

    @property
    def seq_len(self) -> int:
        return len(self.samples[0]) if self.samples else 0

    def describe(self) -> dict:
        d = {"text": self.label, "samples": self.n_samples, "seq_len": self.seq_len, "seed": self.seed}
        return d if self.bos is None else {**d, "bos": self.bos}


def enwiki_path() -> Path:
    try:
        import gensim  # type: ignore[import-not-found]
    except ImportError:
        raise QMCError(
            "calibration text (GPTQ, AWQ, QMC+GPTQ) comes from gensim's Wikipedia excerpt; "
            "pip install 'qmc-edge[calibration]' (or pip install gensim)"
        ) from None
    p = Path(gensim.__file__).parent / "test" / "test_data" / ENWIKI_FILE
    if not p.is_file():
        raise QMCError(f"gensim is installed but {p} is missing; reinstall gensim")
    return p


@functools.lru_cache(maxsize=1)
def calibration_text() -> str:
    """Plain text of the Wikipedia excerpt: one article per paragraph, redirects and stubs dropped."""
    path = enwiki_path()  # first: it names the extra when gensim is missing
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki  # type: ignore[import-not-found]

    parts = []
    with bz2.BZ2File(path) as fh:
        for title, raw, _pid in extract_pages(fh):
            text = filter_wiki(raw)
            if len(text) < MIN_ARTICLE_CHARS or text.lstrip().upper().startswith("#REDIRECT"):
                continue
            text = text.replace("'''", "").replace("''", "")  # bold/italic markup filter_wiki keeps
            lines = [ln.strip() for ln in text.splitlines()]
            body = "\n".join(ln for ln in lines if ln)
            parts.append(f"{title}\n{body}")
    return "\n\n".join(parts)


def calibration_set(tokenizer, n_samples: int = N_SAMPLES, seq_len: int = SEQ_LEN, seed: int = 0) -> CalibrationSet:
    """``n_samples`` random windows of ``seq_len`` tokens from the excerpt; with the model's BOS first
    where its tokenizer prepends one (then ``seq_len - 1`` tokens of text follow it)."""

    if n_samples < 1 or seq_len < 2:
        raise QMCError(f"calibration needs at least 1 sample of 2 tokens, got {n_samples} x {seq_len}")
    ids = tokenizer(calibration_text(), add_special_tokens=False)["input_ids"]
    if len(ids) <= seq_len:
        raise QMCError(f"calibration text has {len(ids)} tokens, too few for windows of {seq_len}")
    rng = random.Random(seed)
    starts = [rng.randrange(0, len(ids) - seq_len) for _ in range(n_samples)]
    bos = bos_for(tokenizer)
    if bos is None:
        return CalibrationSet(tuple(tuple(ids[s : s + seq_len]) for s in starts), LABEL, seed)
    return CalibrationSet(tuple((bos, *ids[s : s + seq_len - 1]) for s in starts), LABEL, seed, bos)


def ngram_overlap(calib: str, evaluation: str, n: int = 13) -> float:
    """Share of the calibration text's word ``n``-grams that also occur in ``evaluation``.

    13-grams are the contamination test of the GPT-3 paper; whitespace words, lower-cased, so
    WikiText's tokenised spacing (" @-@ ", " , ") is normalised away by dropping punctuation-only words.
    """

    def grams(text: str) -> set[tuple[str, ...]]:
        words = [w for w in (t.strip(".,;:!?()[]\"'@-").lower() for t in text.split()) if w]
        return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}

    cg = grams(calib)
    return len(cg & grams(evaluation)) / len(cg) if cg else 0.0
