"""A quantized model: the quantized tensors of one model under one method, and how one read of them
(noise-free, or one memory-noise realisation per seed) is written into the torch model.

Kept apart from the methods and from the whole-model driver so that both can use it without
importing each other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from qmc_edge.memory.counter_rng import CounterStream
from qmc_edge.parallel import map_tensors
from qmc_edge.quant.qtensor import QuantizedTensor
from qmc_edge.quant.read import read_tensor


class ReadSpec(Protocol):
    """What a quantized model needs of the method that made it to read its memories (every
    :class:`~qmc_edge.methods.base.MethodSpec` is one): declared here so that this module, which the
    methods build on, does not import them back."""

    @property
    def name(self) -> str: ...

    @property
    def noisy(self) -> bool: ...

    @property
    def uses_reram(self) -> bool: ...

    def cells(self, for_search: bool = False) -> Any: ...

    def mram(self) -> Any: ...

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Any: ...


def seed_for(seed: int, name: str) -> int:
    """The noise stream of tensor ``name`` under noise seed ``seed``: derived from the name, so the
    reads of a tensor do not depend on which other tensors are quantized or in which order."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    words = np.frombuffer(digest[:16], dtype="<u4").tolist()
    return int(np.random.SeedSequence([int(seed), *words]).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass
class QuantizedModel:
    """The quantized tensors of one model under one method, with the reference weights to restore."""

    spec: ReadSpec
    tensors: dict[str, QuantizedTensor]
    quantize_seconds: float
    # The weights restore() puts back: given by the method, or kept by realise() the first time it
    # overwrites a tensor (so quantizing does not hold a second copy of the model).
    reference: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    # Unquantized parameters the method changed (AWQ folds its scales into the norms): written by
    # realise, restored from ``reference`` like the quantized ones.
    overrides: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    info: dict = field(default_factory=dict)  # provenance of library baselines (versions, calibration)

    @property
    def rereads(self) -> bool:
        """Whether part of the memory error is read noise, drawn afresh at every read of one chip:
        then each evaluation pass (a perplexity window, a task run) takes a new ``read``."""
        return self.spec.noisy and self.spec.uses_reram and self.spec.cells().rereads

    def realise(self, model: torch.nn.Module, seed: int | None, read: int = 0, rng: str = "torch") -> None:
        """Write one read of every quantized tensor into ``model``: the noise-free read for ``seed``
        None, else read number ``read`` of chip ``seed`` (the same on every machine). The chip (the
        programmed cells, the MRAM faults) depends on ``seed`` only; ``read`` chooses the per-read
        noise, and changes nothing for a device without read noise.

        ``rng``: ``torch`` draws with torch's CPU generator (the numbers every stored result was
        measured with); ``philox`` with :class:`~qmc_edge.memory.counter_rng.CounterStream`, keyed the same
        way, whose draws are identical on CPU and GPU (slower than torch's generator on a CPU)."""
        if read < 0:
            raise ValueError(f"read must be >= 0, got {read}")
        if rng not in RNGS:
            raise ValueError(f"rng must be one of {', '.join(RNGS)}, got {rng!r}")
        params = dict(model.named_parameters(remove_duplicate=False))
        noisy = seed is not None and self.spec.noisy
        cell_models = self._cell_models() if noisy and self.spec.uses_reram else {}
        mram = self.spec.mram() if noisy else None
        rereads = any(d.rereads for d in cell_models.values())

        def one(name: str) -> None:
            # Each tensor draws from its own generators, so the threads of map_tensors cannot change a read.
            gen = _generator(rng, seed, name) if noisy else None
            rgen = _generator(rng, seed, f"{name}\0read {read}") if rereads else None
            with torch.no_grad():  # thread-local: set in the worker
                qt = self.tensors[name]
                cells = cell_models.get(qt.cell_bits) if qt.code_memory == "reram" else None
                w = read_tensor(qt, cells, mram, gen, rgen if cells is not None and cells.rereads else None)
                if name not in self.reference:  # the original, kept the first time it is overwritten
                    self.reference[name] = params[name].detach().clone()
                params[name].copy_(w.to(params[name].dtype))

        map_tensors(one, list(self.tensors))
        with torch.no_grad():
            for name, w in self.overrides.items():
                if name not in self.reference:
                    self.reference[name] = params[name].detach().clone()
                params[name].copy_(w)

    def _cell_models(self) -> dict:
        """The ReRAM read model per bits-per-cell that the tensors use: the spec's device, in cells of
        each tensor's size (a budget gives tensors different cells)."""
        cells = {qt.cell_bits for qt in self.tensors.values() if qt.code_memory == "reram"}
        base = getattr(self.spec, "cell_bits", None)
        out = {}
        for c in cells:
            spec = self.spec if c == base or base is None else self.spec.model_copy(update={"cell_bits": c})
            out[c] = spec.cells()
        return out

    def restore(self, model: torch.nn.Module) -> None:
        params = dict(model.named_parameters(remove_duplicate=False))
        with torch.no_grad():
            for name, w in self.reference.items():
                params[name].copy_(w)


RNGS = ("torch", "philox")


def _generator(rng: str, seed: int, name: str):
    """The generator of stream ``name`` of chip ``seed``."""
    if rng == "philox":
        return CounterStream(seed, name)
    return torch.Generator().manual_seed(seed_for(seed, name))
