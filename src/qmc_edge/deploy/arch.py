"""Model architecture for the deployment model: parameter counts per tensor class and KV bytes per token.

Counts are exact, never a formula: the model (or, without weights, the transformers class built on
the meta device from its config) is walked with the same rule that the quantizer uses to choose its
tensors (:func:`qmc_edge.methods.whole_model.target_weights`), so "linear" here is exactly what a method
quantizes. Why exact: for 0.1-3B models the embeddings/head are 10-35 % of the weights and norms and
biases are not negligible for the tiny test models; a formula that forgets one is off by that much.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from qmc_edge.errors import QMCError


@dataclass(frozen=True)
class Arch:
    """Shapes and exact parameter counts by class (tied embeddings counted once)."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    linear_params: int  # decoder Linear weights: what the quantizers quantize
    embed_params: int  # input embedding table
    head_params: int  # output head when untied, else 0 (it is the embedding table)
    other_params: int  # norms, biases, anything else
    source: str = ""

    @property
    def total_params(self) -> int:
        return self.linear_params + self.embed_params + self.head_params + self.other_params

    @property
    def head_read_params(self) -> int:
        """Weights the output head multiplies per token (vocab x hidden), tied or not."""
        return self.vocab * self.hidden

    @property
    def mlp_matrices(self) -> int:
        """3 for gated MLPs (gate/up/down), 2 for plain ones (fc1/fc2), read from the exact counts."""
        attn = self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim + self.heads * self.head_dim * self.hidden
        mlp = self.linear_params / self.layers - attn
        return round(mlp / (self.hidden * self.intermediate))

    def kv_bits_per_token(self, kv_bits: int = 16) -> int:
        """K and V of every layer for one position."""
        return 2 * self.layers * self.kv_heads * self.head_dim * kv_bits

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total_params"] = self.total_params
        return d


def _cfg_int(cfg, *names: str, default: int | None = None) -> int:
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return int(v)
    if default is None:
        raise QMCError(f"config has none of {names}; cannot read the architecture")
    return default


def from_model(model, name: str, source: str = "") -> Arch:
    """Exact counts from an instantiated model (real weights or meta tensors)."""
    import torch

    from qmc_edge.methods.whole_model import target_weights

    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    hidden = _cfg_int(cfg, "hidden_size", "n_embd", "d_model")
    heads = _cfg_int(cfg, "num_attention_heads", "n_head")
    unique: dict[int, tuple[str, int]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        unique.setdefault(id(p), (n, p.numel()))
    linear = set(target_weights(model, include_embeddings=False))
    emb = model.get_input_embeddings().weight
    head_mod = model.get_output_embeddings()
    tied = head_mod is None or head_mod.weight is emb
    n_linear = sum(c for n, c in unique.values() if n in linear)
    n_embed = emb.numel()
    n_head = 0 if tied else head_mod.weight.numel()
    total = sum(c for _, c in unique.values())
    del torch
    return Arch(
        name=name,
        layers=_cfg_int(cfg, "num_hidden_layers", "n_layer"),
        hidden=hidden,
        intermediate=_cfg_int(cfg, "intermediate_size", "n_inner", default=4 * hidden),
        heads=heads,
        kv_heads=_cfg_int(cfg, "num_key_value_heads", default=heads),
        head_dim=_cfg_int(cfg, "head_dim", default=hidden // heads),
        vocab=int(emb.shape[0]),
        tied=tied,
        linear_params=n_linear,
        embed_params=n_embed,
        head_params=n_head,
        other_params=total - n_linear - n_embed - n_head,
        source=source,
    )


def from_config(cfg, name: str, source: str = "") -> Arch:
    """Build the transformers class on the meta device (no memory, no weights) and count it."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds for unknown configs
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise QMCError(f"cannot build architecture {name!r} from its config ({first})") from None
    return from_model(model, name, source)


@lru_cache(maxsize=1)
def known_archs() -> dict[str, dict]:
    raw = (resources.files("qmc_edge.deploy") / "known_archs.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(raw)


@lru_cache(maxsize=64)
def known_arch(name: str) -> Arch:
    from transformers import AutoConfig

    table = known_archs()
    key = name.lower()
    if key not in table:
        raise QMCError(f"unknown architecture {name!r}; use a config.json path or one of: {', '.join(table)}")
    e = table[key]
    cfg = AutoConfig.for_model(e["model_type"], **e["config"])
    return from_config(cfg, key, f"HF config.json of {e['hf_id']} ({e['checked']}), known_archs.yaml")


#: A config.json is a few kB; sizes beyond these bounds are a typo or an attack, and building such a model
#: (even without weights) would hang or run out of memory.
MAX_CONFIG_BYTES = 4 * 2**20
CONFIG_BOUNDS = {
    "num_hidden_layers": 1024,
    "hidden_size": 65536,
    "intermediate_size": 1 << 20,
    "num_attention_heads": 1024,
    "num_key_value_heads": 1024,
    "vocab_size": 1 << 22,
}


def _check_config(data: object, p: Path) -> None:
    """A config.json is a mapping with a model type and sizes in range; one line otherwise."""
    if not isinstance(data, dict):
        raise QMCError(f"architecture config {p} must be a JSON object (a HF config.json), got {type(data).__name__}")
    if not isinstance(data.get("model_type"), str):
        raise QMCError(f"architecture config {p} has no model_type; give a HF config.json")
    for key, top in CONFIG_BOUNDS.items():
        v = data.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
            raise QMCError(f"architecture config {p}: {key} must be a whole number in 1..{top:,}, got {v!r}")


def resolve_arch(spec: str) -> Arch:
    """A known architecture name, a config.json, or a folder holding one (weights not needed)."""
    p = Path(spec).expanduser()
    if p.is_dir():
        p = p / "config.json"
    if p.suffix == ".json" or p.exists():
        if not p.is_file():
            raise QMCError(f"architecture config not found: {spec}; give a config.json or a known name")
        from transformers import AutoConfig

        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise QMCError(f"architecture config {p} is larger than {MAX_CONFIG_BYTES // 2**20} MiB; not a config.json")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise QMCError(f"cannot read architecture from {p}: {type(exc).__name__}: {exc}") from None
        _check_config(data, p)
        try:
            model_type = data.pop("model_type")
            cfg = AutoConfig.for_model(model_type, **data)
        except (KeyError, ValueError, TypeError) as exc:
            raise QMCError(f"cannot read architecture from {p}: {type(exc).__name__}: {exc}") from None
        return from_config(cfg, p.parent.name or p.stem, f"config {p}")
    return known_arch(spec)
