"""Which torch device: the one ``--device`` names (checked), and the one a model's weights are on.

Kept apart from model loading so that methods and evaluation can ask where a model runs without
importing the loaders.
"""

from __future__ import annotations

import torch

from qmc_edge.errors import QMCError


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


def machine_label(device: str = "cpu") -> str:
    """The machine results come from, as benchmarks and the sweep store record it: the GPU when the
    model ran on one (TF32 is off in this project, so its numbers are fp32), else the CPU."""
    import os
    import platform

    if device.startswith("cuda"):
        gpu = torch.cuda.get_device_name(torch.device(device))
        return f"{gpu} (fp32, TF32 off), torch {torch.__version__}; {os.cpu_count()} CPU cores"
    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} CPU"
