"""WikiText-2 style perplexity: tokenise the whole text once, non-overlapping windows, exp(mean NLL).

Finding the text: a path the user gives; else WikiText-2 raw test in ``../shared/data`` (from the
working directory or the repository); else the Hugging Face hub when ``datasets`` is installed and
online; else real English text that a package ships (gensim's Lee corpus), labelled as such.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from qmc_edge.errors import QMCError
from qmc_edge.torch_device import model_device

WIKITEXT_REL = Path("shared/data/wikitext-2-raw/wiki.test.raw")


@dataclass
class TextSource:
    text: str
    label: str  # e.g. "wikitext-2-raw test" or "FALLBACK: gensim lee_background.cor (not WikiText-2)"
    path: str | None


def _wikitext_candidates() -> list[Path]:
    here = Path(__file__).resolve()
    roots = [Path.cwd().parent, Path.cwd(), *here.parents]
    env = os.environ.get("QMC_DATA_DIR")
    if env and not Path(env).is_dir():
        raise QMCError(f"QMC_DATA_DIR={env} is not a folder; point it at the folder that holds wikitext-2-raw/")
    cands = [Path(env) / "wikitext-2-raw/wiki.test.raw"] if env else []
    cands += [r / WIKITEXT_REL for r in roots]
    return cands


def load_text(path: str | None = None, allow_hub: bool = True) -> TextSource:
    """The evaluation text, with a label saying exactly what it is."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            raise QMCError(f"--text {path}: is a folder; give a UTF-8 text file")
        if not p.is_file():
            raise QMCError(f"text file not found: {path}; give a readable UTF-8 text file")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise QMCError(f"--text {path}: not UTF-8 text; give a UTF-8 text file") from None
        except OSError as exc:
            raise QMCError(
                f"--text {path}: cannot be read ({exc.strerror or exc}); give a readable text file"
            ) from None
        if not text.strip():
            raise QMCError(f"--text {path}: the file is empty; give a text file with content")
        label = "wikitext-2-raw test" if p.name == "wiki.test.raw" else f"text file {p.name}"
        return TextSource(text, label, str(p))
    for cand in _wikitext_candidates():
        if cand.is_file():
            return TextSource(cand.read_text(encoding="utf-8"), "wikitext-2-raw test", str(cand))
    if allow_hub:
        try:  # users with a network: the canonical copy
            import datasets  # type: ignore[import-not-found]

            ds = datasets.load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split="test")
            return TextSource("".join(ds["text"]), "wikitext-2-raw test (hub)", None)
        except Exception:  # noqa: BLE001 - offline or no datasets: fall through to the packaged text
            pass
    try:
        import gensim  # type: ignore[import-not-found]

        lee = Path(gensim.__file__).parent / "test/test_data/lee_background.cor"
        if lee.is_file():
            return TextSource(
                lee.read_text(encoding="utf-8", errors="replace"),
                "FALLBACK: gensim lee_background.cor news text (NOT WikiText-2; not comparable to papers)",
                str(lee),
            )
    except ImportError:
        pass
    raise QMCError(
        "no evaluation text: WikiText-2 not found in ../shared/data, hub unreachable, gensim not installed; "
        "pass --text PATH"
    )


@dataclass
class PerplexityResult:
    ppl: float
    nll: float
    tokens_scored: int
    windows: int
    windows_available: int
    capped: bool
    context: int
    seconds: float
    tokens_per_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def tokenize(tokenizer, text: str) -> torch.Tensor:
    """Token ids of the whole text without special tokens (BOS is added per window if expected)."""
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def check_context(context: int, max_context: int) -> None:
    if context < 2:
        raise QMCError(f"context {context} is too short; use at least 2 tokens")
    if context > max_context:
        raise QMCError(f"context {context} is longer than the model allows ({max_context}); lower --context")


@torch.no_grad()
def perplexity(
    model: torch.nn.Module,
    ids: torch.Tensor,
    context: int = 2048,
    max_windows: int | None = None,
    bos_id: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    before_window: Callable[[int], None] | None = None,
) -> PerplexityResult:
    """exp(mean token NLL) over consecutive non-overlapping windows of ``context`` tokens.

    ``before_window(i)`` runs before window ``i`` (0-based): a device with read noise is read anew
    there, each window being one pass over every weight.

    Without BOS, the first token of each window has no context and is not scored (the usual
    protocol); with BOS, each window is BOS + (context - 1) text tokens, all of them scored.
    The last partial window is dropped.
    """
    body = context - 1 if bos_id is not None else context
    available = ids.numel() // body
    if available == 0:
        raise QMCError(f"text has {ids.numel()} tokens, fewer than one window of {context}; lower --context")
    n = available if not max_windows else min(max_windows, available)
    total_nll, total_tok = 0.0, 0
    dev = model_device(model)
    t0 = time.perf_counter()
    for i in range(n):
        if before_window is not None:
            before_window(i)
        chunk = ids[i * body : (i + 1) * body]
        inp = torch.cat([torch.tensor([bos_id]), chunk]) if bos_id is not None else chunk
        inp = inp.to(dev)
        logits = model(inp[None]).logits[0, :-1].float()
        target = inp[1:]
        nll = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
        total_nll += float(nll)
        total_tok += target.numel()
        if progress:
            progress(i + 1, n)
    dt = time.perf_counter() - t0
    mean = total_nll / total_tok
    # A faulty read (an MRAM-flipped scale exponent) can make weights inf/NaN: the loss is then NaN
    # or huge, and that is reported as it is (NaN, or inf past exp's range), never an exception.
    ppl = math.exp(mean) if not mean > 709.0 else float("inf")
    return PerplexityResult(
        ppl=ppl,
        nll=mean,
        tokens_scored=total_tok,
        windows=n,
        windows_available=available,
        capped=n < available,
        context=context,
        seconds=dt,
        tokens_per_s=total_tok / dt if dt > 0 else float("inf"),
    )
