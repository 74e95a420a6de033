"""Methods registered by name, presets, and the parser of ``name:key=value,...`` specs.

``@register`` adds a :class:`~qmc_edge.methods.base.MethodSpec` subclass under the name in its
``method`` literal; parsing, `qmc methods`, artifacts and every command then know it.
"""

from __future__ import annotations

from pydantic import ValidationError

from qmc_edge.methods.base import MethodSpec

_REGISTRY: dict[str, type[MethodSpec]] = {}

PRESETS: dict[str, str] = {
    "fp": "fp",
    "rtn4": "rtn:bits=4",
    "rtn3": "rtn:bits=3",
    "rtn2": "rtn:bits=2",
    "rtn4-pc": "rtn:bits=4,group_size=0",
    "rtn3-pc": "rtn:bits=3,group_size=0",
    "mxint4": "mxint4",
    "emem3": "emem:bits=3,cell_bits=3",
    "emem4": "emem:bits=4,cell_bits=2",
    "qmc3": "qmc:bits=3,cell_bits=3,rho=0.01",
    "qmc2": "qmc:bits=2,cell_bits=2,rho=0.01",
    "qmc4": "qmc:bits=4,cell_bits=2,rho=0.01",
    "qmc3-gptq": "qmc:bits=3,cell_bits=3,rho=0.01,rounding=gptq",
    "qmc2-gptq": "qmc:bits=2,cell_bits=2,rho=0.01,rounding=gptq",
    "gptq4": "gptq:bits=4",
    "gptq3": "gptq:bits=3",
    "awq4": "awq:bits=4",
    "awq3": "awq:bits=3",
    "hqq4": "hqq:bits=4",
    "hqq3": "hqq:bits=3",
    "emem-gptq3": "gptq:bits=3,reram=true,cell_bits=3",
    "emem-gptq4": "gptq:bits=4,reram=true,cell_bits=2",
    "emem-awq3": "awq:bits=3,reram=true,cell_bits=3",
    "emem-awq4": "awq:bits=4,reram=true,cell_bits=2",
    "emem-hqq3": "hqq:bits=3,reram=true,cell_bits=3",
}


# Options renamed since results were first stored: old name -> new name. A stored spec (results files,
# stores, artifact manifests) is read under the new name; an option written the old way on the
# command line is refused with the new name.
LEGACY_OPTIONS: dict[str, str] = {"reram_device": "cell_model"}


def current_options(data: dict) -> dict:
    """A stored spec dump with its legacy option names replaced by today's (values unchanged)."""
    return {LEGACY_OPTIONS.get(k, k): v for k, v in data.items()}


def register(cls: type[MethodSpec]) -> type[MethodSpec]:
    """Class decorator: make ``cls`` available under the name in its ``method`` field's literal."""
    field = cls.model_fields.get("method")
    name = field.default if field is not None else None
    if not isinstance(name, str) or not name or ":" in name or "," in name:
        raise TypeError(f"{cls.__name__} needs a field `method: Literal['name'] = 'name'` to be registered")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"method {name!r} is already registered by {_REGISTRY[name].__name__}")
    _REGISTRY[name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a method (for tests and plug-ins that register temporarily)."""
    _REGISTRY.pop(name, None)


def registered() -> dict[str, type[MethodSpec]]:
    return dict(_REGISTRY)


def method_class(name: str) -> type[MethodSpec]:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join([*_REGISTRY, *(p for p in PRESETS if p not in _REGISTRY)])
        raise ValueError(f"unknown method {name!r}; use one of: {known}") from None


def options(cls: type[MethodSpec]) -> list[str]:
    return [k for k in cls.model_fields if k != "method"]


def _coerce(value: str) -> object:
    low = value.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if "_" in value:  # int("1_28") is 128: a typo must not pass as a number
        return value
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _pairs(opts: str, text: str) -> dict[str, object]:
    fields: dict[str, object] = {}
    for kv in opts.split(","):
        kv = kv.strip()
        if not kv:
            raise ValueError(f"empty method option in {text!r}; write name:key=value,key=value")
        if "=" not in kv:
            raise ValueError(f"method option {kv!r} in {text!r} is not key=value")
        k, v = (s.strip() for s in kv.split("=", 1))
        if not k or not v:
            raise ValueError(f"method option {kv!r} in {text!r} needs a key and a value")
        if k in LEGACY_OPTIONS:
            raise ValueError(
                f"option {k!r} in {text!r} is now called {LEGACY_OPTIONS[k]!r}; write {LEGACY_OPTIONS[k]}={v}"
            )
        if k in fields:
            raise ValueError(f"option {k!r} is given twice in {text!r}; give it once")
        fields[k] = _coerce(v)
    return fields


def _one_line(exc: ValidationError, text: str, cls: type[MethodSpec]) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        hint = f" ({cls.hints[loc]})" if loc in cls.hints else ""
        return f"bad method {text!r}: {cls.model_fields['method'].default} has no option {loc!r}{hint}; " + (
            f"its options are: {', '.join(options(cls))}"
        )
    if loc:
        return f"bad method {text!r}: {loc}: {msg}"
    return f"bad method {text!r}: {msg}"


def build(name: str, fields: dict[str, object], text: str | None = None) -> MethodSpec:
    """Validate ``fields`` as options of method ``name``; ValueError with one line otherwise."""
    cls = method_class(name)
    try:
        return cls(**fields)
    except ValidationError as exc:
        raise ValueError(_one_line(exc, text or name, cls)) from None


def parse_method(text: str, **overrides: object) -> MethodSpec:
    """Parse ``name`` / ``preset`` / ``name:key=value,...`` (keys once each). ``overrides`` that are
    not None (command-line flags such as --bits) replace a preset's options but must not repeat an
    option written in ``text``. Raises ValueError with a one-line reason."""
    text = text.strip()
    base, sep, opts = text.partition(":")
    base = base.strip()
    fields: dict[str, object] = {}
    if base in PRESETS and base not in _REGISTRY:
        preset = PRESETS[base]
        base, _, popts = preset.partition(":")
        if popts:
            fields.update(_pairs(popts, preset))
    if sep:
        written = _pairs(opts, text)
        fields.update(written)
    else:
        written = {}
    for k, v in overrides.items():
        if v is None:
            continue
        if k in written and written[k] != v:
            raise ValueError(f"option {k!r} is set both in {text!r} and by its flag; give it once")
        fields[k] = v
    return build(base, fields, text)


def spec_from_dict(data: dict) -> MethodSpec:
    """A spec from its ``model_dump()`` (results files, artifact manifests); ValueError if invalid."""
    if not isinstance(data, dict) or not isinstance(data.get("method"), str):
        raise ValueError("a method spec needs a 'method' name")
    fields = {k: v for k, v in current_options(data).items() if k != "method"}
    return build(data["method"], fields)
