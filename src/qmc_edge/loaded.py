"""What every loader returns: a torch model, its tokenizer, where it came from and its caveats; and
the one tokenizer fact every text reader needs (whether windows start with BOS)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    source: str  # what was loaded, resolved
    note: str  # caveats to print next to every result

    @property
    def max_context(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)


def bos_for(tokenizer) -> int | None:
    """The BOS id if this tokenizer prepends one by default (then every window starts with it)."""
    ids = tokenizer("a")["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos if bos is not None and len(ids) > 0 and ids[0] == bos else None
