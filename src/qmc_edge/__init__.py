"""QMC: outlier-aware quantization with memory co-design for small language models."""

__version__ = "0.1.0"
