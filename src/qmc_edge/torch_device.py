"""Which torch device: the one ``--device`` names (checked), and the one a model's weights are on.

Kept apart from model loading so that methods and evaluation can ask where a model runs without
importing the loaders.
"""

from __future__ import annotations

import torch

from .errors import QMCError


def check_device(device: str) -> torch.device:
    """The torch device named by ``--device``, or a one-line error when this machine lacks it."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise QMCError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise QMCError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise QMCError(f"--device {device}: only cpu and cuda are supported")
    return dev


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's weights are: inputs built on the CPU are moved there before each forward pass."""
    return next(model.parameters()).device
