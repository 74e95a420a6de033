"""Log-likelihood scoring of multiple-choice items, numerically the same as lm-eval's HFLM.

Tokenisation mirrors lm-eval's ``_encode_pair``: trailing spaces of the context move to the
continuation, the pair is encoded whole and the continuation is what follows the separately encoded
context; an empty context is replaced by the BOS (else EOS) token. Speed comes from a prefix cache:
the context runs once and all choices of an item run as one batch on its KV cache, which gives the
same logits as separate full passes (checked in the tests) at a fraction of the cost.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .data import MCItem


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text)["input_ids"])


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) exactly as lm-eval builds them for a causal LM."""
    if context == "":
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [prefix], _encode(tokenizer, continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = _encode(tokenizer, context + continuation)
    ctx = _encode(tokenizer, context)
    return ctx, whole[len(ctx) :]


def _max_length(model: torch.nn.Module) -> int:
    return int(getattr(model.config, "max_position_embeddings", 2048) or 2048)


@torch.no_grad()
def _score_shared_context(model: torch.nn.Module, ctx: list[int], conts: list[list[int]]) -> list[float]:
    """Sum of log-probabilities of each continuation after one shared context."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model(torch.tensor([ctx]), use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        lls = [float(first[c[0]]) for c in conts]
        # Second pass: each continuation minus its last token, on the shared cache; the output at
        # continuation position j predicts token j + 1 (token 0 was predicted by the context pass).
        feed = [c[:-1] for c in conts]
        longest = max(len(f) for f in feed)
        if longest == 0:
            return lls
        n = len(conts)
        ids = torch.zeros((n, longest), dtype=torch.long)
        mask = torch.zeros((n, len(ctx) + longest), dtype=torch.long)
        mask[:, : len(ctx)] = 1
        for i, f in enumerate(feed):
            ids[i, : len(f)] = torch.tensor(f, dtype=torch.long)
            mask[i, len(ctx) : len(ctx) + len(f)] = 1
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        cache.batch_repeat_interleave(n)
        pos = (len(ctx) + torch.arange(longest))[None].expand(n, -1)
        logits = model(ids, past_key_values=cache, attention_mask=mask, position_ids=pos).logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    for i, c in enumerate(conts):
        if len(c) > 1:
            tgt = torch.tensor(c[1:], dtype=torch.long)
            lls[i] += float(logp[i, : len(c) - 1].gather(1, tgt[:, None]).sum())
    return lls


def score_items(
    model: torch.nn.Module,
    tokenizer,
    items: Sequence[MCItem],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[list[float]], float]:
    """Per item, the log-likelihood of every choice; and the wall seconds taken.

    Inputs longer than the model's context are left-truncated as lm-eval does; a choice whose
    truncated context differs from its siblings' is scored in its own group.
    """
    max_len = _max_length(model)
    out: list[list[float]] = []
    t0 = time.perf_counter()
    for k, item in enumerate(items):
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        for j, choice in enumerate(item.choices):
            ctx, cont = encode_pair(tokenizer, item.context, item.delimiter + choice)
            if not cont:
                raise ValueError(f"item {k}: choice {j} encodes to no tokens")
            whole = (ctx + cont)[-(max_len + 1) :]
            ctx_t = tuple(whole[: len(whole) - len(cont)])
            groups.setdefault(ctx_t, []).append((j, cont))
        lls = [0.0] * len(item.choices)
        for ctx_t, members in groups.items():
            scores = _score_shared_context(model, list(ctx_t), [c for _, c in members])
            for (j, _), s in zip(members, scores, strict=True):
                lls[j] = s
        out.append(lls)
        if progress:
            progress(k + 1, len(items))
    return out, time.perf_counter() - t0


def _mean_stderr(x: np.ndarray) -> float:
    """lm-eval's stderr of a mean: sample standard deviation (n - 1) over sqrt(n)."""
    n = len(x)
    return float(np.std(x, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")


def task_metrics(items: Sequence[MCItem], lls: Sequence[Sequence[float]], with_norm: bool = True) -> dict:
    """acc and (when ``with_norm``) acc_norm with standard errors, as lm-eval defines them:
    acc_norm divides each choice's log-likelihood by the choice's length in characters."""
    acc = np.array([float(np.argmax(ll) == it.gold) for it, ll in zip(items, lls, strict=True)])
    res = {"n": len(items), "acc": float(acc.mean()), "acc_stderr": _mean_stderr(acc)}
    if with_norm:
        norm = np.array(
            [
                float(np.argmax(np.array(ll) / np.array([float(len(c)) for c in it.choices])) == it.gold)
                for it, ll in zip(items, lls, strict=True)
            ]
        )
        res.update(acc_norm=float(norm.mean()), acc_norm_stderr=_mean_stderr(norm))
    return res
