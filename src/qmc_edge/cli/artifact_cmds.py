"""CLI for artifacts: `qmc export`, `qmc verify`, `qmc generate`, `qmc export-hf`.

Registered into the main app by :func:`register` (see qmc_edge.cli.app). Helpers of the main CLI are
imported inside the functions: qmc_edge.cli.app imports this module while it is itself being imported.
"""

from pathlib import Path
from typing import Annotated

import typer

from qmc_edge.cli.common import tagged


def _quantize(lm, spec, progress=None):
    """quantize_model with the model's tokenizer (calibrated methods such as GPTQ need it)."""
    from qmc_edge.methods.whole_model import quantize_model

    return quantize_model(lm.model, spec, progress, tokenizer=lm.tokenizer)


def _read_model(lm, method: str, noise_seed: int | None, spec_over: dict | None = None):
    """Apply ``method`` to a loaded model and write one read into it: the noise realisation for
    ``noise_seed``, or the noise-free read without one. Returns (spec, QuantizedModel or None, note)."""
    from qmc_edge.artifact.load import ArtifactModel
    from qmc_edge.methods import parse_method

    spec = parse_method(method, **(spec_over or {}))
    notes = []
    if spec.method == "fp":
        qm = lm.quantized if isinstance(lm, ArtifactModel) else None
        qspec = qm.spec if qm is not None else spec
    else:
        if isinstance(lm, ArtifactModel) and lm.quantized is not None:
            notes.append(f"re-quantizing the already quantized artifact ({lm.manifest.method_name}) with {spec.name}")
        qm = _quantize(lm, spec)
        qspec = spec
    if qm is None:
        if noise_seed is not None:
            notes.append("the model has no quantized weights; --noise-seed ignored")
        return spec, None, notes
    if noise_seed is not None and not qspec.noisy:
        notes.append(f"{qspec.name} reads are deterministic; --noise-seed ignored")
        noise_seed = None
    qm.realise(lm.model, noise_seed)  # None: the noise-free read (AWQ's folded norms included)
    return spec, qm, notes


def register(app: typer.Typer) -> None:
    """Add the artifact commands to the main `qmc` app."""
    from qmc_edge.cli.common import BitsOpt, CellOpt, EmbOpt, GroupOpt, JsonOpt, ModelOpt, RhoOpt

    @app.command("export")
    def export_cmd(
        out_dir: Annotated[Path, typer.Option("--out", "-o", help="artifact directory to write")],
        method: Annotated[str, typer.Option("--method", "-m", help="method or preset; fp = dense FP16")] = "qmc3",
        model: ModelOpt = None,
        bits: BitsOpt = None,
        group_size: GroupOpt = None,
        rho: RhoOpt = None,
        cell_bits: CellOpt = None,
        embeddings: EmbOpt = False,
        dense_dtype: Annotated[
            str, typer.Option(help="unquantized tensors: float16 (as the storage report counts), bfloat16, float32")
        ] = "float16",
        force: Annotated[bool, typer.Option("--force", help="replace an existing artifact at --out")] = False,
        json_path: JsonOpt = None,
    ) -> None:
        """Quantize a model and write it as a packed artifact (ReRAM image, MRAM outlier table, scales)."""
        from contextlib import ExitStack

        from qmc_edge.artifact.export import DENSE_DTYPES, check_destination, export_artifact
        from qmc_edge.artifact.fsutil import export_lock
        from qmc_edge.artifact.load import ArtifactModel
        from qmc_edge.cli.common import console, out
        from qmc_edge.cli.common import errors as _errors
        from qmc_edge.cli.common import load as _load
        from qmc_edge.cli.common import progress_bars as _progress
        from qmc_edge.cli.common import run_env as _env
        from qmc_edge.cli.common import spec_from_flags as _spec
        from qmc_edge.jsonio import check_writable, write_json

        def _note(note: str) -> None:  # what the stale cleanup of --out did
            console.print(tagged("note:", "yellow", note), highlight=False)

        with _errors(), ExitStack() as stack:
            spec = _spec(method, bits, group_size, rho, cell_bits, embeddings)
            if dense_dtype not in DENSE_DTYPES:
                raise ValueError(f"unknown --dense-dtype {dense_dtype!r}; use one of: {', '.join(DENSE_DTYPES)}")
            check_destination(out_dir.expanduser(), force)
            if json_path:
                check_writable(json_path)
            # Held from here, before the model loads, until the artifact is in place: a second
            # export to the same --out is refused at once instead of after its quantization.
            stack.enter_context(export_lock(out_dir.expanduser(), force, check_destination, _note))
            lm = _load(model)
            if isinstance(lm, ArtifactModel) and lm.quantized is not None:
                console.print(
                    tagged("note:", "yellow", f"re-quantizing the artifact's dequantized weights with {spec.name}")
                )
            with _progress() as prog:
                qm = _quantize(lm, spec, lambda i, n: prog(f"quantize {spec.name}", i, n))
                res = export_artifact(
                    lm, spec, qm, out_dir, dense_dtype, force, lambda i, n: prog(f"export {out_dir}", i, n)
                )
            stack.close()  # the lock, now the artifact is in place
            _print_summary(out, _summary_of(res))
            out.print(f"exported {spec.name} to {res.path} in {res.seconds:.1f} s")
            if json_path:
                write_json(json_path, {"export_seconds": res.seconds, **_summary_of(res), "env": _env()})
                out.print(f"wrote {json_path}")

    @app.command("verify")
    def verify_cmd(
        path: Annotated[Path, typer.Argument(help="artifact directory written by `qmc export`")],
        json_path: JsonOpt = None,
    ) -> None:
        """Check every file of an artifact (checksums, shapes, dtypes, codes) and print its summary."""
        from qmc_edge.artifact.load import verify_artifact
        from qmc_edge.cli.common import errors as _errors
        from qmc_edge.cli.common import out
        from qmc_edge.jsonio import check_writable, write_json

        with _errors():
            if json_path:
                check_writable(json_path)
            s = verify_artifact(path)
            _print_summary(out, s)
            out.print(f"OK: {path} verified ({len(s['files'])} files, sha256, shapes, dtypes and codes checked)")
            if json_path:
                write_json(json_path, {"ok": True, **s})
                out.print(f"wrote {json_path}")

    @app.command("generate")
    def generate_cmd(
        prompts: Annotated[list[str], typer.Option("--prompt", "-p", help="prompt text (repeat for several)")],
        model: ModelOpt = None,
        method: Annotated[str, typer.Option("--method", "-m", help="quantize first (fp = as loaded)")] = "fp",
        noise_seed: Annotated[
            int | None,
            typer.Option("--noise-seed", help="memory-noise realisation to read; default: the noise-free read"),
        ] = None,
        max_new_tokens: Annotated[int, typer.Option(help="tokens to generate per prompt")] = 64,
        sample: Annotated[bool, typer.Option("--sample/--greedy", help="sampling or greedy decoding")] = False,
        temperature: Annotated[float, typer.Option(help="sampling temperature")] = 0.8,
        top_p: Annotated[float, typer.Option(help="nucleus sampling mass")] = 0.95,
        top_k: Annotated[int, typer.Option(help="top-k for sampling, 0 = off")] = 50,
        seed: Annotated[int, typer.Option("--sample-seed", help="sampling seed (with --sample)")] = 0,
        chat: Annotated[bool, typer.Option("--chat", help="wrap prompts in the tokenizer's chat template")] = False,
        json_path: JsonOpt = None,
    ) -> None:
        """Generate text from any loadable model (reference, quantized, artifact), streamed to the terminal."""
        from qmc_edge.artifact.generate import GenerationSettings, generate_text
        from qmc_edge.cli.common import console, out
        from qmc_edge.cli.common import errors as _errors
        from qmc_edge.cli.common import load as _load
        from qmc_edge.cli.common import run_env as _env
        from qmc_edge.jsonio import check_writable, write_json

        with _errors():
            settings = GenerationSettings(max_new_tokens, sample, temperature, top_p, top_k, seed, chat)
            settings.check()
            from qmc_edge.methods import parse_method

            parse_method(method)  # a bad method is refused before the model loads
            if noise_seed is not None and noise_seed < 0:
                raise ValueError(f"--noise-seed must be >= 0, got {noise_seed}")
            if json_path:
                check_writable(json_path)
            lm = _load(model)
            spec, qm, notes = _read_model(lm, method, noise_seed)
            for n in notes:
                console.print(tagged("note:", "yellow", n), highlight=False)
            read = "noise-free read" if noise_seed is None or not (qm and qm.spec.noisy) else f"noise seed {noise_seed}"
            what = qm.spec.name if qm is not None else spec.name
            mode = f"sampling (sample seed {seed}, T={temperature}, top-p {top_p})" if sample else "greedy"
            console.print(f"{what}, {read}, {mode}", highlight=False)
            results = []
            for prompt in prompts:
                out.print(prompt, end="", markup=False, highlight=False, soft_wrap=True)
                r = generate_text(
                    lm.model,
                    lm.tokenizer,
                    prompt,
                    settings,
                    lambda t: out.print(t, end="", markup=False, highlight=False, soft_wrap=True),
                )
                out.print()
                console.print(tagged(f"{r.new_tokens} tokens in {r.seconds:.1f} s ({r.tokens_per_s:.1f} tok/s)", "dim"))
                results.append(r.to_dict())
            if json_path:
                payload = {"model": lm.source, "note": lm.note, "method": what, "read": read, "results": results}
                write_json(json_path, {**payload, "env": _env()})
                out.print(f"wrote {json_path}")

    @app.command("export-hf")
    def export_hf_cmd(
        out_dir: Annotated[Path, typer.Option("--out", "-o", help="HF checkpoint folder to write")],
        model: ModelOpt = None,
        method: Annotated[str, typer.Option("--method", "-m", help="quantize first (fp = as loaded)")] = "fp",
        noise_seed: Annotated[
            int | None, typer.Option("--noise-seed", help="bake this memory-noise realisation in")
        ] = None,
        dtype: Annotated[
            str, typer.Option(help="float32 keeps the dequantized values exact; float16/bfloat16 round them")
        ] = "float32",
        force: Annotated[bool, typer.Option("--force", help="replace an existing checkpoint at --out")] = False,
        json_path: JsonOpt = None,
    ) -> None:
        """Save the dequantized (optionally noise-realised) weights as a standard HF checkpoint."""
        from contextlib import ExitStack

        from qmc_edge.artifact.fsutil import export_lock
        from qmc_edge.artifact.hf_export import check_hf_destination, check_hf_options, export_hf
        from qmc_edge.cli.common import console, out
        from qmc_edge.cli.common import errors as _errors
        from qmc_edge.cli.common import load as _load
        from qmc_edge.cli.common import run_env as _env
        from qmc_edge.jsonio import check_writable, write_json
        from qmc_edge.methods import parse_method

        def _note(note: str) -> None:  # what the stale cleanup of --out did
            console.print(tagged("note:", "yellow", note), highlight=False)

        with _errors(), ExitStack() as stack:
            check_hf_options(out_dir.expanduser(), dtype, force)  # before the model loads
            parse_method(method)  # a bad method is refused before the model loads, too
            if noise_seed is not None and noise_seed < 0:
                raise ValueError(f"--noise-seed must be >= 0, got {noise_seed}")
            if json_path:
                check_writable(json_path)
            stack.enter_context(export_lock(out_dir.expanduser(), force, check_hf_destination, _note))
            lm = _load(model)
            spec, qm, notes = _read_model(lm, method, noise_seed)
            for n in notes:
                console.print(tagged("note:", "yellow", n), highlight=False)
            if dtype != "float32":
                console.print(
                    tagged("note:", "yellow", f"{dtype} rounds the dequantized weights; float32 keeps them exact")
                )
            path = export_hf(lm.model, lm.tokenizer, out_dir, dtype, force)
            stack.close()  # the lock, now the checkpoint is in place
            what = qm.spec.name if qm is not None else spec.name
            read = "noise-free" if noise_seed is None or not (qm and qm.spec.noisy) else f"noise seed {noise_seed}"
            out.print(f"wrote HF checkpoint of {what} ({read}, {dtype}) to {path}")
            if json_path:
                payload = {"path": str(path), "model": lm.source, "method": what, "read": read, "dtype": dtype}
                write_json(json_path, {**payload, "env": _env()})
                out.print(f"wrote {json_path}")


def _summary_of(res) -> dict:
    from qmc_edge.artifact.load import ArtifactContents, summary

    m = res.manifest
    return summary(ArtifactContents(res.path, m, None, {}, {}))  # type: ignore[arg-type]


def _print_summary(console, s: dict) -> None:
    from rich.table import Table

    t = Table(title=f"artifact {s['path']}")
    t.add_column("item")
    t.add_column("value", justify="right")
    t.add_row("format", s["format"])
    t.add_row("model", f"{s['model_source']}" + (f" @ {s['model_revision']}" if s["model_revision"] else ""))
    t.add_row("method", s["method"])
    t.add_row("quantized / dense tensors", f"{s['quantized_tensors']} / {s['dense_tensors']}")
    t.add_row("dense dtype", f"{s['dense_dtype']}" + ("" if s["dense_exact"] else " (rounded)"))
    for name, size in s["files"].items():
        if name.endswith(".safetensors"):
            t.add_row(f"  {name}", f"{size / 1e6:.3f} MB")
    t.add_row("packed tensors on disk", f"{s['packed_MB']:.3f} MB")
    if s["storage_report_model_MB"]:
        t.add_row("storage report (model_MB)", f"{s['storage_report_model_MB']:.3f} MB")
        t.add_row("on disk / report", f"{s['packed_vs_report']:.4f}")
    t.add_row("whole folder (incl. tokenizer, config)", f"{s['total_MB']:.3f} MB")
    console.print(t)
