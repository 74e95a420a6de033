"""The bad-input table: command lines a careless or hostile user might type, each of which must be
refused with exit code 2 and one line naming the problem, without a traceback and without leaving
anything on disk. Shared by tests/test_bad_inputs.py and benchmarks/reliability.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]
    needle: str  # must appear in the error line


def make_inputs(root: Path) -> dict[str, Path]:
    """Bad files to point commands at (written once under ``root``)."""
    root.mkdir(parents=True, exist_ok=True)
    f = {}

    def w(name: str, data: bytes | str) -> Path:
        p = root / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        f[name] = p
        return p

    w("binary.txt", b"\xff\xfe\x00\x81" * 64)
    w("empty.txt", "")
    w("broken.gguf", b"GGUF" + b"\x00" * 64)
    w("notes.gguf.txt", "hello")
    w("gold_float.jsonl", json.dumps({"context": "a", "choices": ["x", "y"], "gold": 1.7}) + "\n")
    w("gold_bool.jsonl", json.dumps({"context": "a", "choices": ["x", "y"], "gold": True}) + "\n")
    w("gold_range.jsonl", json.dumps({"context": "a", "choices": ["x", "y"], "gold": 2}) + "\n")
    w("empty_choices.jsonl", json.dumps({"context": "a", "choices": ["", ""], "gold": 0}) + "\n")
    w("delim_int.jsonl", json.dumps({"context": "a", "choices": ["x", "y"], "gold": 0, "delimiter": 7}) + "\n")
    w("unknown_key.jsonl", json.dumps({"context": "a", "choices": ["x", "y"], "gold": 0, "colour": 1}) + "\n")
    w("not_json.jsonl", "{context: a}\n")
    w("null_storage.json", json.dumps({"storage": None}))
    w("no_storage.json", json.dumps({"method": "x"}))
    w("report_binary.json", b"\x00\x01\x02\xff")
    import re

    from qmc_edge.deploy import platform as plat

    packaged = (Path(plat.__file__).parents[1] / "platforms" / "orin_agx.yaml").read_text(encoding="utf-8")
    mine = packaged.replace("name: orin_agx", "name: my_orin", 1)
    w("nan_platform.yaml", re.sub(r"value: [0-9.e+-]+", "value: .nan", mine, count=1))
    w("inf_platform.yaml", re.sub(r"value: [0-9.e+-]+", "value: .inf", mine, count=1))
    w("huge_platform.yaml", re.sub(r"value: [0-9.e+-]+", "value: 1e308", mine, count=1))
    w("dup_platform.yaml", "name: mine\nname: other\n")
    w("twin_a.yaml", mine.replace("name: my_orin", "name: twin", 1))
    w("twin_b.yaml", mine.replace("name: my_orin", "name: twin", 1))
    (root / "a_store" / "points").mkdir(parents=True, exist_ok=True)
    f["a_store"] = root / "a_store"
    # The audit of 2026-12 (issue 28): files that set loose values or sizes beyond any study.
    from qmc_edge.memory import files as cellfiles

    cell = (Path(cellfiles.__file__).parents[1] / "cell_models" / "nvmexplorer_rram.yaml").read_text("utf-8")
    mine_cell = cell.replace("name: nvmexplorer_rram", "name: my_rram", 1)
    w("cell_siemens.yaml", re.sub(r"(g_max_uS:\s*\n?\s*\{?\s*value:\s*)[0-9.e+-]+", r"\g<1>9e-5", mine_cell, count=1))
    block = mine_cell[mine_cell.index("\n  3:\n") : mine_cell.index("\nretention:")]
    w("cell_two_3s.yaml", mine_cell.replace(block, block + block.replace("\n  3:\n", "\n  '3':\n", 1), 1))
    w("cell_two_names_a.yaml", mine_cell)
    w("cell_two_names_b.yaml", mine_cell)
    w("arch_list.json", "[1, 2]")
    w("arch_zero_heads.json", json.dumps({"model_type": "llama", "num_attention_heads": 0, "hidden_size": 64}))
    w("arch_huge.json", json.dumps({"model_type": "llama", "num_hidden_layers": 10_000_000}))
    (root / "a_folder").mkdir(exist_ok=True)
    f["a_folder"] = root / "a_folder"
    (root / "sweeps").mkdir(exist_ok=True)
    f["sweep_dir"] = root / "sweeps"
    (root / "no_config").mkdir(exist_ok=True)
    f["no_config"] = root / "no_config"
    return f


def _sweep_yaml(model_dir: Path, seeds=1, grid_label=None, grid_values=1, platforms=None, methods=None) -> str:
    """A small valid sweep spec with one thing changed."""
    import yaml

    grid = {"method": "qmc", "options": {"rho": [0.001 * (i + 1) for i in range(grid_values)]}}
    if grid_values > 1:
        grid["options"]["n_clip"] = list(range(1, 1001))
    if grid_label is not None:
        grid["options"]["label"] = [grid_label]
    spec = {
        "name": "audit",
        "models": [str(model_dir)],
        "methods": methods or ["fp"],
        "grids": [grid] if (grid_label is not None or grid_values > 1) else [],
        "eval": {"seeds": seeds, "perplexity": {"context": 32, "windows": 1}},
    }
    if platforms is not None:
        spec["platforms"] = platforms
    return yaml.safe_dump(spec)


def cases(root: Path, model_dir: Path, text: Path, artifact: Path, platform_copy: Path | None = None) -> list[Case]:
    """Every case; outputs would go under ``root / 'out'`` (which must stay empty)."""
    inp = make_inputs(root / "inputs")
    out = root / "out"
    out.mkdir(parents=True, exist_ok=True)
    m = ["--model", str(model_dir)]
    ppl = ["ppl", *m, "--text", str(text), "--context", "32", "--max-windows", "1"]
    q = ["quantize", *m]
    missing = str(out / "no" / "such" / "dir" / "x.json")
    c: list[Case] = []

    def add(id_: str, argv: list[str], needle: str) -> None:
        c.append(Case(id_, [str(a) for a in argv], needle))

    # Method specs: unknown, inapplicable, repeated and out-of-range options.
    for spec, needle in [
        ("rtn:rho=0.05", "rtn has no option 'rho'"),
        ("rtn:cell_bits=2", "no option 'cell_bits'"),
        ("emem:rho=0.2", "emem has no option 'rho'"),
        ("mxint4:bits=3", "mxint4 has no option 'bits'"),
        ("mxint4:group_size=7", "no option 'group_size'"),
        ("fp:bits=9", "fp has no option 'bits'"),
        ("hqq:mram_ber=1e-3", "reram=true"),
        ("emem:mram_ecc=chipkill", "mram_ecc"),
        ("rtn:mram_ber=1e-3", "no option 'mram_ber'"),
        ("qmc:n_clip=0", "n_clip"),
        ("qmc:n_clip=-5", "n_clip"),
        ("qmc:bits=2,bits=4", "given twice"),
        ("qmc:bits=5", "qmc takes bits in {2, 3, 4}, got 5"),
        ("qmc:rho=0.7", "rho"),
        ("qmc:rho=-0.1", "rho"),
        ("nosuch", "unknown method"),
        ("qmc:rho", "key=value"),
        ("qmc:colour=red", "colour"),
        ("gptq:cell_bits=2", "reram=true"),
        ("qmc:calib_samples=8", "calibrated"),
        ("qmc:bits=three", "bits: Input should be a valid integer"),
        ("qmc:mram_ber=2", "mram_ber"),
    ]:
        add(f"spec {spec}", [*q, "-m", spec, "--json", out / "q.json"], needle)
    add("flag --bits on mxint4", [*q, "-m", "mxint4", "--bits", "2"], "mxint4 has no option 'bits'")
    add("flag --rho on rtn", [*q, "-m", "rtn4", "--rho", "0.1"], "no option 'rho'")
    add("flag repeats spec", [*q, "-m", "qmc:bits=3", "--bits", "2"], "both in")
    add(
        "compare bad row",
        ["compare", *m, "--text", text, "-m", "fp", "-m", "qmc:bits=9"],
        "qmc takes bits in {2, 3, 4}, got 9",
    )
    # Numbers out of range.
    add("seeds 0", [*ppl, "--seeds", "0"], "--seeds")
    add("noise seed -1", [*ppl, "--noise-seed", "-1"], "--noise-seed")
    add("rng unknown", [*ppl, "--rng", "mt19937"], "--rng mt19937")
    add("max windows 0", [*ppl, "--max-windows", "0"], "--max-windows")
    add("context 1", ["ppl", *m, "--text", text, "--context", "1"], "--context")
    add("context too long", ["ppl", *m, "--text", text, "--context", "100000"], "longer than the model allows")
    add("device nonsense", [*ppl, "--device", "nonsense"], "unknown device")
    add("device meta", [*ppl, "--device", "meta"], "only cpu and cuda")
    add("tasks limit 0", ["tasks", *m, "-t", "arc_easy", "--limit", "0"], "--limit")
    add("compare limit 0", ["compare", *m, "--text", text, "-t", "arc_easy", "--limit", "0"], "--limit")
    add("tasks seeds 0", ["tasks", *m, "--seeds", "0"], "--seeds")
    gen = ["generate", *m, "-p", "w1"]
    add("generate 0 tokens", [*gen, "--max-new-tokens", "0"], "--max-new-tokens")
    add("generate temperature 0", [*gen, "--sample", "--temperature", "0"], "--temperature")
    add("generate top-p 2", [*gen, "--top-p", "2"], "--top-p")
    add("generate sample seed -1", [*gen, "--sample", "--sample-seed", "-1"], "--sample-seed")
    add("generate noise seed -1", [*gen, "--noise-seed", "-1"], "--noise-seed")
    # Output paths, refused before any model is loaded.
    for cmd in (q, ppl, ["compare", *m, "--text", text, "-m", "fp"], ["tasks", *m, "-t", "arc_easy"]):
        add(f"{cmd[0]} --json under a missing folder", [*cmd, "--json", missing], "does not exist")
        add(f"{cmd[0]} --json is a folder", [*cmd, "--json", inp["a_folder"]], "is a folder")
    add("json under a file", [*q, "--json", inp["empty.txt"] / "x.json"], "not a folder")
    add("verify --json missing folder", ["verify", artifact, "--json", missing], "does not exist")
    add("generate --json missing folder", [*gen, "--json", missing], "does not exist")
    add("export -o under a missing folder", ["export", *m, "-o", out / "no" / "such" / "art"], "does not exist")
    add("export -o is a file", ["export", *m, "-o", inp["empty.txt"]], "not a qmc artifact")
    add("export -o existing artifact", ["export", *m, "-o", artifact], "--force")
    add("export --json missing folder", ["export", *m, "-o", out / "art", "--json", missing], "does not exist")
    add(
        "export bad dense dtype",
        ["export", *m, "-o", out / "art", "--dense-dtype", "int8"],
        "unknown --dense-dtype 'int8'",
    )
    add("export-hf -o under missing", ["export-hf", *m, "-o", out / "no" / "such" / "hf"], "does not exist")
    add("export-hf dtype int8", ["export-hf", *m, "-o", out / "hf", "--dtype", "int8"], "unknown dtype 'int8'")
    add("deploy --plots missing", ["deploy", "--report", inp["null_storage.json"], "--plots", out / "nope"], "--plots")
    add("deploy --json folder", ["deploy", "-m", "fp", "--json", inp["a_folder"]], "is a folder")
    # Inputs that are missing, unreadable or not what they claim to be.
    add("model missing", [*q[:1], "--model", "/nonexistent/model"], "not found")
    add("model folder without config", ["quantize", "--model", inp["no_config"]], "config.json")
    add("model broken gguf", ["quantize", "--model", inp["broken.gguf"]], "broken.gguf")
    add(
        "model is a text file",
        ["quantize", "--model", inp["notes.gguf.txt"]],
        "is neither a .gguf file nor a model directory",
    )
    add("text missing", [*m[:0], "ppl", *m, "--text", "/nonexistent/text.txt"], "text file not found")
    add("text binary", ["ppl", *m, "--text", inp["binary.txt"]], "UTF-8")
    add("text empty", ["ppl", *m, "--text", inp["empty.txt"]], "the file is empty")
    add("text folder", ["ppl", *m, "--text", inp["a_folder"]], "is a folder")
    add("text /proc/self/mem", ["ppl", *m, "--text", "/proc/self/mem"], "cannot be read")
    add("task file missing", ["tasks", *m, "-t", "/nonexistent/task.jsonl"], "unknown task")
    for name in ("gold_float", "gold_bool", "gold_range", "empty_choices", "delim_int", "unknown_key", "not_json"):
        add(f"task {name}", ["tasks", *m, "-t", inp[f"{name}.jsonl"]], f"{name}.jsonl")
    add("task binary", ["tasks", *m, "-t", inp["binary.txt"]], "binary.txt")
    add(
        "data dir missing",
        ["tasks", *m, "-t", "arc_easy", "--data-dir", "/nonexistent/data"],
        "/nonexistent/data for task arc_easy does not exist",
    )
    add("platform missing", ["deploy", "-m", "fp", "--platform", "/nonexistent/p.yaml"], "p.yaml")
    for bad in ("nan", "inf", "huge"):
        add(f"platform {bad}", ["deploy", "-m", "fp", "--platform", inp[f"{bad}_platform.yaml"]], "capacity_MB")
    add(
        "platform duplicate key", ["deploy", "-m", "fp", "--platform", inp["dup_platform.yaml"]], "duplicate key 'name'"
    )
    if platform_copy is not None:
        add(
            "platform copy keeps a built-in name",
            ["deploy", "-m", "fp", "--platform", platform_copy],
            "is taken by a packaged platform",
        )
    add("report missing", ["deploy", "--report", "/nonexistent/r.json"], "r.json")
    add("report null storage", ["deploy", "--report", inp["null_storage.json"]], "'storage' must be an object")
    add("report without storage", ["deploy", "--report", inp["no_storage.json"]], "has no 'storage' section")
    add("report binary", ["deploy", "--report", inp["report_binary.json"]], "report_binary.json")
    # The audit of 2026-12 (issue 28): sizes with no bound, loose values, renamed options.
    add("seeds 1e8", ["ppl", *m, "--text", text, "--seeds", "100000000"], "--seeds must be in 1..1000")
    for spec, needle in [
        ("qmc:n_clip=100000000", "n_clip must be in 1..1000"),
        ("qmc:group_size=1_28", "group_size: Input should be a valid integer"),
        ("qmc:budget=2.5,bits=4", "a budget chooses bits, cell_bits and rho per tensor; drop bits"),
        ("qmc3:reram_device=ibm_cmo_hfox", "is now called 'cell_model'"),
    ]:
        add(f"audit spec {spec}", ["quantize", *m, "-m", spec], needle)
    add("cell model in siemens", ["cells", "-f", inp["cell_siemens.yaml"]], "looks like siemens")
    add("cell model 3 and '3'", ["cells", "-f", inp["cell_two_3s.yaml"]], "are the same bits per cell")
    for name, needle in [
        ("arch_list.json", "must be a JSON object (a HF config.json), got list"),
        ("arch_zero_heads.json", "num_attention_heads must be a whole number in 1.."),
        ("arch_huge.json", "num_hidden_layers must be a whole number in 1.."),
    ]:
        add(f"arch {name}", ["claims", "--arch", inp[name]], needle)
    sweeps = {
        "seeds_true": ({"seeds": True}, "not true/false"),
        "label_injection": ({"grid_label": "mine,rho=0.3,bits=2"}, "holds , = or :"),
        "huge_grid": ({"grid_values": 1000}, "points (models x configurations); at most"),
        "unknown_platform": ({"platforms": ["/nonexistent/plat.yaml"]}, "platforms:"),
        "copied_label": ({"methods": ["rtn4", "qmc3:label=RTN-INT4 g128"]}, "both named 'RTN-INT4 g128'"),
    }
    for name, (change, needle) in sweeps.items():
        spec_file = inp["sweep_dir"] / f"{name}.yaml"
        spec_file.write_text(_sweep_yaml(model_dir, **change), encoding="utf-8")
        add(f"sweep {name}", ["sweep", spec_file, "--store", out / "st", "--dry-run"], needle)
    add(
        "two platforms one name",
        ["deploy", "-m", "fp", "--platform", inp["twin_a.yaml"], "--platform", inp["twin_b.yaml"]],
        "two platforms are named 'twin'",
    )
    add(
        "compare two rows one label",
        ["compare", *m, "--text", text, "-m", "rtn4", "-m", "qmc3:label=RTN-INT4 g128"],
        "two methods are both named 'RTN-INT4 g128'",
    )
    add(
        "cells two files one name",
        ["cells", "-f", inp["cell_two_names_a.yaml"], "-f", inp["cell_two_names_b.yaml"]],
        "two cell models are both named 'my_rram'",
    )
    add("report --out a file", ["report", inp["a_store"], "--out", inp["empty.txt"]], "is a file; give a folder")
    add("verify a plain folder", ["verify", inp["a_folder"]], "manifest.json")
    add("verify missing", ["verify", "/nonexistent/art"], "not a directory")
    return c
