"""The options methods share, declared once: code bits, groups, cells, MRAM faults, the ReRAM cell model
options (as two pydantic models to inherit, required or optional), and calibration; each with its
check, so every method validates an option the same way and says the same thing when it is wrong.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from qmc_edge.memory.models import reram


def bits_field(default: int = 4) -> Any:
    return Field(default, description="code bits per weight (inlier bits for qmc)")


def group_field() -> Any:
    return Field(128, description="weights per scale along the input dim; 0 = per channel")


def cell_field(default: int | None = 3) -> Any:
    return Field(default, description="bits per ReRAM cell: 1, 2 or 3")


def ideal_field() -> Any:
    return Field(False, description="error-free cells of the same size (ablation)")


# ReRAM cell model options (emem, qmc, and the library methods with reram=true): which cell-model file, when
# the cells are read (age since programming), and what-if knobs; declared once, here, as
# name: (type, default, help). ``target_age`` (what the clip search optimises for) is qmc's own.
RERAM_OPTIONS: dict[str, tuple[Any, object, str]] = {
    "cell_model": (
        str,
        "nvmexplorer_rram",
        "ReRAM cell-model file: a shipped name (`qmc cells`) or a path to a copy you edited",
    ),
    "age": (
        str | float | None,
        None,
        "time since programming at which the cells are read: 1s, 1h, 1d, 1y, 10y or seconds (default fresh)",
    ),
    "noise_scale": (float, 1.0, "multiplier on the programmed level sigmas (what if cells are k times as noisy)"),
    "write_verify": (bool, False, "tighter write-verify programming (narrower programmed sigmas, sourced factor)"),
    "read_noise": (
        bool,
        False,
        "add the cell-model file's per-read conductance noise, redrawn at every read of a chip",
    ),
    "read_share": (
        float | None,
        None,
        "what if a fraction (0-1) of each level's total variance were per-read noise (same error rate)",
    ),
    "read_reference": (
        Literal["fixed", "aged"],
        "fixed",
        "read thresholds: fixed (at the fresh levels) or aged (tracking the drift)",
    ),
    "cell_layout": (
        Literal["left", "spread"],
        "left",
        "partial last cell: left (low edge of the levels) or spread (over the whole range)",
    ),
}
TARGET_AGE_HELP = "age the noise-aware clip search optimises for (qmc; default fresh)"

#: Every ReRAM option's default (``target_age`` included) and help, by name.
RERAM_DEFAULTS: dict[str, object] = {k: d for k, (_, d, _) in RERAM_OPTIONS.items()} | {"target_age": None}
RERAM_HELP: dict[str, str] = {k: h for k, (_, _, h) in RERAM_OPTIONS.items()} | {"target_age": TARGET_AGE_HELP}


def check_reram_options(spec: Any) -> None:
    """Validate the ReRAM options of ``spec`` (ages parse, scale positive, the cell-model file loads)."""
    from qmc_edge.memory.files import load_cell_model, parse_age

    for key in ("age", "target_age"):
        v = getattr(spec, key, None)
        if v is not None:
            parse_age(v)
    rs = getattr(spec, "read_share", None)
    if rs is not None and not 0 <= rs <= 1:
        raise ValueError(f"read_share must be in [0, 1], got {rs}")
    ns = spec.noise_scale
    if ns is not None and not 0 < ns <= 100:
        raise ValueError(f"noise_scale must be in (0, 100], got {ns}")
    dev = spec.cell_model
    if dev is not None:
        load_cell_model(dev)
    # Options that would do nothing are refused, so that a label never claims what was not run.
    bits, cells = getattr(spec, "bits", None), getattr(spec, "cell_bits", None)
    if getattr(spec, "cell_layout", None) == "spread" and bits and cells and bits % cells == 0:
        raise ValueError(f"cell_layout=spread applies only when cell_bits does not divide bits ({bits} / {cells})")
    if getattr(spec, "read_reference", None) == "aged" and getattr(spec, "age", None) is None:
        raise ValueError("read_reference=aged applies only with an age (the fresh thresholds are the same)")
    if getattr(spec, "target_age", None) is not None and getattr(spec, "noise_aware", True) is False:
        raise ValueError("target_age applies only to the noise-aware clip search; drop noise_aware=false or target_age")


@lru_cache(maxsize=64)
def reram_for_options(
    cell_bits: int, ideal: bool, dev: str, age: object, scale: float, wv: bool, rn: bool, ref: str, share: float | None
):
    return reram(
        cell_bits,
        ideal=ideal,
        cell_model=dev,
        age_s=0.0 if age is None else age,
        noise_scale=scale,
        write_verify=wv,
        read_noise=rn,
        reference=ref,
        read_share=share,
    )


def mram_ber_field() -> Any:
    return Field(0.0, description="MRAM raw bit error rate per read, every MRAM field, in [0, 1)")


def mram_ecc_field() -> Any:
    return Field("none", description="MRAM error correction: none, or secded (Hamming(72,64) per 64-bit word)")


def check_mram(ber: float) -> None:
    if not 0.0 <= ber < 1.0:
        raise ValueError(f"mram_ber must be in [0, 1), got {ber}")


def embeddings_field() -> Any:
    return Field(False, description="also quantize the embeddings and output head (tied ones once)")


def check_bits(bits: int, allowed: tuple[int, ...], method: str) -> None:
    if bits not in allowed:
        raise ValueError(f"{method} takes bits in {{{', '.join(map(str, allowed))}}}, got {bits}")


def check_group(group_size: int) -> None:
    if group_size < 0:
        raise ValueError(f"group_size must be >= 0 (0 = per channel), got {group_size}")


def check_cells(cell_bits: int | None) -> None:
    if cell_bits is not None and cell_bits not in (1, 2, 3):
        raise ValueError(f"cell_bits must be 1, 2 or 3, got {cell_bits}")


def _reram_options(name: str, optional: bool) -> type[BaseModel]:
    """The ReRAM options as a pydantic model to inherit: defaults as declared, or None everywhere when
    ``optional`` (methods whose codes are in ReRAM only with ``reram=true``)."""

    def _check_reram(self):
        check_reram_options(self)
        return self

    fields = {
        k: ((t | None) if optional else t, Field(None if optional else d, description=h))
        for k, (t, d, h) in RERAM_OPTIONS.items()
    }
    return create_model(
        name,
        __config__=ConfigDict(extra="forbid", frozen=True, strict=True),
        __doc__="The ReRAM cell model options" + (" (None unless the codes are in ReRAM)." if optional else "."),
        __validators__={"_check_reram": model_validator(mode="after")(_check_reram)},
        **fields,
    )


#: The ReRAM options of a method whose codes always live in ReRAM (emem, qmc).
ReRAMOptions = _reram_options("ReRAMOptions", optional=False)
#: The same options where ReRAM is optional (reram=true): None unless the codes are in ReRAM.
OptionalReRAMOptions = _reram_options("OptionalReRAMOptions", optional=True)


# Calibration options (calibrated methods only: gptq, awq, qmc with a calibrated stage).
CALIB_SAMPLES, CALIB_LEN = 64, 512


def calib_fields() -> tuple[Any, Any]:
    return (
        Field(None, description="calibration windows (default 64; calibrated methods only)"),
        Field(None, description="tokens per calibration window (default 512; calibrated methods only)"),
    )


def fill_calibration(data: Any, applies: bool, what: str) -> Any:
    """Before validation: refuse calibration options where they do nothing, fill their defaults where
    they apply (so a dump of the spec names the calibration actually used)."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for key, default in (("calib_samples", CALIB_SAMPLES), ("calib_len", CALIB_LEN)):
        if applies:
            if data.get(key) is None:
                data[key] = default
        elif data.get(key) is not None:
            raise ValueError(f"{key} applies only to calibrated methods ({what})")
    return data


def check_calibration(samples: int | None, length: int | None) -> None:
    if samples is not None and samples < 1:
        raise ValueError(f"calib_samples must be >= 1, got {samples}")
    if length is not None and length < 2:
        raise ValueError(f"calib_len must be >= 2, got {length}")


c_samples, c_len = calib_fields()
