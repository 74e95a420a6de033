"""Text generation from any loaded model (reference, quantized in memory, or an artifact, with or
without a memory-noise realisation): greedy or seeded sampling, streamed as it is produced.

transformers' ``generate`` does the decoding; this module fixes the options that make runs
reproducible (explicit do_sample, a forked and seeded torch RNG for sampling, so the caller's global
RNG is untouched) and streams through a ``TextStreamer`` whose output goes to a callback.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from qmc_edge.errors import QMCError


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 64
    sample: bool = False  # False: greedy (deterministic)
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 50
    seed: int = 0  # sampling seed
    chat: bool = False  # wrap the prompt in the tokenizer's chat template

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise QMCError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.sample and self.temperature <= 0:
            raise QMCError(f"--temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise QMCError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise QMCError(f"--top-k must be >= 0 (0 = off), got {self.top_k}")
        if self.seed < 0:
            raise QMCError(f"--sample-seed must be >= 0, got {self.seed}")


@dataclass
class GenerationResult:
    prompt: str
    text: str  # the new text only
    prompt_tokens: int
    new_tokens: int
    seconds: float
    settings: dict

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens_per_s": self.tokens_per_s}


def _streamer(tokenizer, on_text: Callable[[str], None]):
    from transformers import TextStreamer

    class _Callback(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                on_text(text)

    return _Callback(tokenizer, skip_prompt=True, skip_special_tokens=True)


def encode_prompt(tokenizer, prompt: str, chat: bool) -> torch.Tensor:
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise QMCError("this tokenizer has no chat template; drop --chat")
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
    else:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    if ids.shape[1] == 0:
        raise QMCError("the prompt is empty after tokenization; give some text")
    return ids


def generate_text(
    model: torch.nn.Module,
    tokenizer,
    prompt: str,
    settings: GenerationSettings = GenerationSettings(),
    on_text: Callable[[str], None] | None = None,
) -> GenerationResult:
    """Generate a continuation of ``prompt``; ``on_text`` receives it piece by piece as it is decoded."""
    settings.check()
    if tokenizer is None:
        raise QMCError("this model has no tokenizer; export or load it with its tokenizer files")
    ids = encode_prompt(tokenizer, prompt, settings.chat)
    limit = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    if limit and ids.shape[1] + settings.max_new_tokens > limit:
        raise QMCError(
            f"prompt ({ids.shape[1]} tokens) + --max-new-tokens {settings.max_new_tokens} exceeds the model's "
            f"context of {limit}; shorten one"
        )
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    kwargs: dict = {"max_new_tokens": settings.max_new_tokens, "do_sample": settings.sample, "pad_token_id": pad}
    if settings.sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k or None)
    else:  # explicit, so a model's generation_config cannot turn sampling on behind the user's back
        kwargs.update(temperature=None, top_p=None, top_k=None)
    streamer = _streamer(tokenizer, on_text) if on_text else None
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(settings.seed)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), streamer=streamer, **kwargs)
    secs = time.perf_counter() - t0
    new = out[0, ids.shape[1] :]
    text = tokenizer.decode(new, skip_special_tokens=True)
    return GenerationResult(prompt, text, int(ids.shape[1]), int(new.numel()), secs, asdict(settings))
