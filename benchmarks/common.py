"""What every benchmark script records about where it ran."""

from __future__ import annotations

import os
import platform

import torch


def machine_label(device: str = "cpu") -> str:
    """The machine the numbers come from: the GPU when the model ran on one, else the CPU."""
    if device.startswith("cuda"):
        gpu = torch.cuda.get_device_name()
        return f"{gpu} (fp32, TF32 off), torch {torch.__version__}; {os.cpu_count()} CPU cores"
    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} CPU"
