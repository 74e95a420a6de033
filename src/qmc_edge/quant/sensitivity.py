"""How much each weight matters: the diagonal Fisher information of the model's own predictions.

Why: under a whole-model bit budget the bits must go where errors hurt. A small weight perturbation
``d`` raises the expected loss (the KL divergence from the reference model's predictions) by about
``1/2 sum_i F_i d_i**2``, with ``F`` the Fisher information. Its diagonal is estimated per parameter
as the mean over sequences of the squared gradient of the sequences' log-likelihood (SqueezeLLM's
sensitivity, there on calibration text).

Calibration-free by default: the sequences are sampled from the reference model itself (from its
BOS token, temperature 1, no top-k/top-p), so the gradients are those of the model's own
distribution, which is what the true Fisher is (an empirical Fisher needs text from outside; that is
the ``calibration`` option). Nothing here needs a dataset, and the draw takes a seed.

Written here because no maintained library exposes a per-parameter Fisher for a whole HF causal LM
as a tensor-by-tensor weight for a quantizer; the computation itself is plain autograd.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from qmc_edge.torch_device import model_device

SELF_SAMPLES, SELF_LEN = 16, 128  # sequences drawn from the model, tokens each


def start_token(tokenizer: object) -> int:
    """The token a self-generated sequence starts from: BOS, else EOS (a document boundary)."""
    for attr in ("bos_token_id", "eos_token_id"):
        tid = getattr(tokenizer, attr, None)
        if tid is not None:
            return int(tid)
    raise ValueError("the tokenizer has neither a BOS nor an EOS token to start generating from")


def self_generated(model: torch.nn.Module, tokenizer: object, n: int, length: int, seed: int) -> list[list[int]]:
    """``n`` sequences of ``length`` tokens sampled from ``model`` itself (seeded; the model's global
    RNG state is left as it was). End-of-text is not allowed to stop a sequence early."""
    start = start_token(tokenizer)
    dev = model_device(model)
    ids = torch.full((n, 1), start, dtype=torch.long, device=dev)
    with torch.random.fork_rng(devices=[] if dev.type == "cpu" else [dev]), torch.no_grad():
        torch.manual_seed(seed)
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=length - 1,
            min_new_tokens=length - 1,
            pad_token_id=start,
        )
    return [row.tolist() for row in out.cpu()]


def fisher_diagonal(
    model: torch.nn.Module,
    names: Sequence[str],
    samples: Sequence[Sequence[int]],
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Per parameter in ``names``: the mean over ``samples`` of the squared gradient of each sample's
    summed token log-likelihood (float32, on the CPU, shaped like the parameter). Tied parameters
    are one parameter: its gradient sums both uses. The model's weights and flags are unchanged."""
    params = dict(model.named_parameters(remove_duplicate=False))
    flags = {id(p): p.requires_grad for p in model.parameters()}
    targets = {n: params[n] for n in names}
    acc = {n: torch.zeros(p.shape, dtype=torch.float32) for n, p in targets.items()}
    dev = model_device(model)
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in targets.values():
            p.requires_grad_(True)
        for i, seq in enumerate(samples):
            for p in targets.values():
                p.grad = None
            ids = torch.tensor([list(seq)], dtype=torch.long, device=dev)
            logits = model(input_ids=ids).logits[0, :-1].float()
            loss = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
            loss.backward()
            for n, p in targets.items():
                acc[n] += p.grad.detach().float().cpu() ** 2
            if progress:
                progress(i + 1, len(samples))
    finally:
        for p in model.parameters():
            p.grad = None
            p.requires_grad_(flags[id(p)])
    k = max(1, len(samples))
    return {n: a / k for n, a in acc.items()}


def sensitivity_for(spec, model: torch.nn.Module, names: Sequence[str], tokenizer: object) -> dict[str, torch.Tensor]:
    """The per-weight sensitivity a QMC spec asks for (``spec.sensitivity``): the Fisher diagonal on
    text the model samples itself (``self``) or on the calibration text (``calibration``), or {} for
    ``uniform`` (every weight alike)."""
    from qmc_edge.errors import QMCError

    if spec.sensitivity == "uniform":
        return {}
    if tokenizer is None:
        raise QMCError(f"sensitivity={spec.sensitivity} reads text and needs the model's tokenizer")
    if spec.sensitivity == "self":
        samples = self_generated(model, tokenizer, SELF_SAMPLES, SELF_LEN, seed=0)
    else:
        from qmc_edge.quant.calibration import calibration_set

        samples = list(calibration_set(tokenizer, spec.calib_samples, spec.calib_len).samples)
    return fisher_diagonal(model, names, samples)
