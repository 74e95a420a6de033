"""What every loader returns: a torch model, its tokenizer, where it came from and its caveats."""

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
