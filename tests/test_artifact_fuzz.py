"""Loader fuzzing: damaged or hand-edited artifacts are refused with one QMCError line naming the
file, never another exception and never a silently wrong model.

A seeded loop over random damage (byte flips, truncations, appended bytes, deleted files, edited
manifest fields, a newer format version), plus consistent forgeries (a file replaced and its
checksums recomputed) that only the shape/dtype/code checks can catch.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from qmc_edge.artifact import MANIFEST_NAME
from qmc_edge.artifact.export import export_artifact
from qmc_edge.artifact.load import load_artifact
from qmc_edge.artifact.manifest import body_checksum, manifest_text
from qmc_edge.errors import QMCError
from qmc_edge.methods import parse_method
from qmc_edge.methods.whole_model import quantize_model

N_CASES = 60


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_model_dir):
    """One ReRAM+MRAM artifact (qmc) and one ideal-memory one (mxint4), with their clean weights."""
    from qmc_edge.model.loading import load_model

    root = tmp_path_factory.mktemp("fuzz")
    out = {}
    for m in ("qmc:bits=3,cell_bits=2", "mxint4"):
        lm = load_model(str(tiny_model_dir))
        spec = parse_method(m)
        res = export_artifact(lm, spec, quantize_model(lm.model, spec), root / spec.method)
        weights = {n: p.detach().clone() for n, p in load_artifact(res.path).model.named_parameters()}
        out[spec.method] = (res.path, weights)
    return out


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file())


def _rewrite_manifest(path: Path, edit, reseal: bool) -> None:
    data = json.loads((path / MANIFEST_NAME).read_text())
    edit(data)
    if reseal:
        data["checksum"] = body_checksum(data)
    (path / MANIFEST_NAME).write_text(manifest_text(data))


def _manifest_edit(rng: random.Random, data: dict) -> None:
    """A plausible hand edit of one field."""
    t = rng.choice(data["tensors"])
    choice = rng.randrange(8)
    if choice == 0:
        t["shape"][rng.randrange(2)] += rng.choice([-1, 1, 64])
    elif choice == 1:
        t["bits"] = rng.choice([b for b in (2, 3, 4, 8) if b != t["bits"]])
    elif choice == 2:
        data["method"]["rho"] = 0.02
    elif choice == 3:
        name = rng.choice(sorted(data["files"]))
        data["files"][name]["sha256"] = "0" * 64
    elif choice == 4:
        t["scale_encoding"] = "float16" if t["scale_encoding"] != "float16" else "float32"
    elif choice == 5:
        data["dense"][0]["dtype"] = "float32"
    elif choice == 6:
        del data[rng.choice(["tensors", "files", "method", "model_dtype"])]
    else:
        data["format_version"] = 0


def _damage(rng: random.Random, path: Path) -> str:
    """Apply one random kind of damage; returns a description for the failure message."""
    files = _files(path)
    f = rng.choice(files)
    kind = rng.choice(["flip", "truncate", "append", "delete", "edit", "edit_resealed", "newer", "json"])
    if kind in ("flip", "truncate", "append", "delete"):
        data = bytearray(f.read_bytes())
        if kind == "flip" and data:
            i = rng.randrange(len(data))
            data[i] ^= rng.randrange(1, 256)
        elif kind == "truncate":
            data = data[: rng.randrange(len(data))]
        elif kind == "append":
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
        if kind == "delete":
            f.unlink()
        else:
            f.write_bytes(bytes(data))
        return f"{kind} {f.name}"
    if kind == "newer":
        _rewrite_manifest(path, lambda d: d.update(format_version=d["format_version"] + 1), reseal=True)
    elif kind == "json":
        (path / MANIFEST_NAME).write_text('{"format": "qmc-edge-artifact", "format_version": 1, ')
    else:
        _rewrite_manifest(path, lambda d: _manifest_edit(rng, d), reseal=kind == "edit_resealed")
    return f"{kind} manifest"


def _assert_refused(path: Path, what: str, weights: dict) -> str:
    try:
        lm = load_artifact(path)
    except QMCError as exc:
        msg = str(exc)
        assert "\n" not in msg, f"{what}: multi-line error {msg!r}"
        names = [p.name for p in path.iterdir()] + ["manifest.json", ".safetensors", "tokenizer", "config.json"]
        assert str(path) in msg and any(n in msg for n in names), f"{what}: error names no file: {msg}"
        return msg
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{what}: {type(exc).__name__} instead of QMCError: {exc}")
    # Accepted: only allowed if nothing that matters changed (e.g. a method option edited and resealed).
    for n, p in lm.model.named_parameters():
        assert torch.equal(p, weights[n]), f"{what}: loaded a silently different model"
    return ""


@pytest.mark.parametrize("which", ["qmc", "mxint4"])
def test_random_damage_is_refused(artifacts, tmp_path, which):
    src, weights = artifacts[which]
    rng = random.Random(f"fuzz-{which}")
    refused = 0
    for case in range(N_CASES // 2):
        dst = tmp_path / f"c{case}"
        shutil.copytree(src, dst)
        what = f"case {case}: " + _damage(rng, dst)
        refused += bool(_assert_refused(dst, what, weights))
        shutil.rmtree(dst)
    # Every kind of damage is refused now, a resealed edit of a method option included: the options are
    # checked against the label, the tensor entries and the recomputed storage report.
    assert refused == N_CASES // 2


def test_specific_messages(artifacts, tmp_path):
    src, weights = artifacts["qmc"]

    def fresh(name):
        d = tmp_path / name
        shutil.copytree(src, d)
        return d

    d = fresh("newer")
    _rewrite_manifest(d, lambda m: m.update(format_version=99), reseal=True)
    assert "format version 99 is newer" in _assert_refused(d, "newer", weights)
    d = fresh("edited")
    _rewrite_manifest(d, lambda m: m["method"].update(rho=0.5), reseal=False)
    assert "manifest.json: manifest checksum mismatch" in _assert_refused(d, "edited", weights)
    d = fresh("ws")
    (d / MANIFEST_NAME).write_bytes((d / MANIFEST_NAME).read_bytes().replace(b"\n", b"\r\n", 1))
    assert "byte for byte" in _assert_refused(d, "whitespace", weights)
    d = fresh("gone")
    (d / "mram.safetensors").unlink()
    assert "mram.safetensors: missing" in _assert_refused(d, "deleted", weights)
    d = fresh("short")
    (d / "reram.safetensors").write_bytes((d / "reram.safetensors").read_bytes()[:-10])
    assert "reram.safetensors: size" in _assert_refused(d, "truncated", weights)
    (fresh("nomanifest") / MANIFEST_NAME).unlink()
    assert "missing" in _assert_refused(tmp_path / "nomanifest", "no manifest", weights)


def _forge(path: Path, fname: str, mutate) -> None:
    """Replace a tensor file with a mutated one and recompute every checksum (a consistent forgery)."""
    from safetensors.torch import load_file, save_file

    from qmc_edge.artifact.export import _file_entry

    tensors = load_file(str(path / fname))
    mutate(tensors)
    save_file(tensors, str(path / fname))
    entry = _file_entry(path / fname).model_dump()
    _rewrite_manifest(path, lambda d: d["files"].__setitem__(fname, entry), reseal=True)


def test_consistent_forgeries_are_caught_by_structure(artifacts, tmp_path):
    src, weights = artifacts["qmc"]
    name = "model.layers.0.self_attn.q_proj.weight"
    cases = {
        "short image": ("reram.safetensors", lambda t: t.__setitem__(name, t[name][:-1].clone())),
        "wrong dtype": ("meta.safetensors", lambda t: t.__setitem__(f"{name}.scale", t[f"{name}.scale"].double())),
        "missing": ("mram.safetensors", lambda t: t.pop(f"{name}.outlier_cols")),
        "extra": ("dense.safetensors", lambda t: t.__setitem__("bogus", torch.zeros(2))),
        "csr counts": ("mram.safetensors", lambda t: t[f"{name}.outlier_counts"].fill_(255)),
        "bad level": ("reram.safetensors", lambda t: t[name].fill_(0b01010101)),  # 2nd cell holds 1 bit: odd = bad
    }
    for label, (fname, mutate) in cases.items():
        d = tmp_path / label.replace(" ", "_")
        shutil.copytree(src, d)
        _forge(d, fname, mutate)
        msg = _assert_refused(d, label, weights)
        assert fname in msg, f"{label}: {msg}"
