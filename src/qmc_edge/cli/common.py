"""What every `qmc` sub-command shares: the consoles, one-line errors, progress bars, model loading,
the run environment, the option declarations (each declared once here), and the checks that refuse
bad paths and values before any model is loaded.

The main CLI (:mod:`qmc_edge.cli.app`) and the feature CLIs (tasks, deployment, artifacts) import this
module; it imports none of them, so there is no import cycle between the CLIs.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from qmc_edge import __version__
from qmc_edge.errors import QMCError
from qmc_edge.jsonio import check_writable, probe_dir
from qmc_edge.loaded import LoadedModel

# Without a terminal (a pipe, a file, a CI log) rich would cut tables to 80 columns (or to COLUMNS,
# which shells and CI runners often export as 80): use one width wide enough for every table this tool
# prints, or QMC_WIDTH when the user sets it.
PIPE_WIDTH = 240


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty():
        env = os.environ.get("QMC_WIDTH", "")
        width = int(env) if env.isdigit() and int(env) >= 40 else PIPE_WIDTH
    # markup=False: user text (method labels, sweep names, ledger steps, error messages naming extras
    # such as qmc-edge[gptq]) is printed as written, never parsed as rich markup; our own styling
    # goes through Text objects (:func:`tagged`).
    return Console(stderr=stderr, width=width, markup=False)


def tagged(tag: str, style: str, text: str = "") -> Text:
    """``tag`` in ``style``, then ``text`` as written (never parsed as markup)."""
    return Text.assemble((tag, style), (" " + text) if text else "")


console = _console(stderr=True)
out = _console(stderr=False)

# ---------------------------------------------------------------------------- options, declared once
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="GGUF file, HF model folder, qmc artifact or hub id; default: embedded SmolLM2-135M"),
]
MethodOpt = Annotated[str, typer.Option("--method", "-m", help="method or preset (`qmc methods` lists them)")]
MethodsOpt = Annotated[list[str] | None, typer.Option("--method", "-m", help="method or preset; repeat per row")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="write results as JSON to this path")]
TextOpt = Annotated[Path | None, typer.Option("--text", help="text file; default WikiText-2 raw test")]
CtxOpt = Annotated[int, typer.Option("--context", help="tokens per window")]
WinOpt = Annotated[int | None, typer.Option("--max-windows", help="cap on windows (quick runs)")]
SeedsOpt = Annotated[int, typer.Option("--seeds", help="number of memory-noise seeds for noisy methods")]
NoiseSeedOpt = Annotated[int, typer.Option("--noise-seed", help="first memory-noise seed (then +1, +2, ...)")]
RngOpt = Annotated[
    str,
    typer.Option(
        "--rng",
        help="memory-noise generator: torch (CPU's; the stored results) or philox (the same on CPU and GPU)",
    ),
]
TaskOpt = Annotated[
    list[str] | None,
    typer.Option("--task", "-t", help="arc_easy, arc_challenge, boolq, hellaswag, or a JSON-lines file; repeat"),
]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="first N items of each task (N >= 1)")]
DataOpt = Annotated[Path | None, typer.Option("--data-dir", help="folder with arc/, boolq/, hellaswag/")]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="where the model runs: cpu, cuda, cuda:N (quantization stays on the CPU)")
]
# Method overrides: flags that set one option of the method named by --method.
BitsOpt = Annotated[int | None, typer.Option("--bits", help="code bits (inlier bits for qmc)")]
GroupOpt = Annotated[int | None, typer.Option("--group-size", help="group size, 0 = per channel")]
RhoOpt = Annotated[float | None, typer.Option("--rho", help="outlier share per tensor (qmc)")]
CellOpt = Annotated[int | None, typer.Option("--cell-bits", help="bits per ReRAM cell (emem, qmc, reram=true)")]
EmbOpt = Annotated[bool, typer.Option("--quantize-embeddings", help="quantize embeddings and head too")]


def unique_names(items: list, what: str) -> list:
    """``items`` (method specs, cell models: anything with a ``name``), refused in one line when two
    share a name: their rows could not be told apart, and a JSON keyed by name would keep one."""
    names = [i.name for i in items]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise QMCError(f"two {what} are both named {twice!r}; give each its own label (or name:)")
    return items


def spec_from_flags(method: str, bits=None, group_size=None, rho=None, cell_bits=None, embeddings=False):
    """The method named by ``--method`` with the override flags applied (an inapplicable flag is an error)."""
    from qmc_edge.methods import parse_method

    over = {"bits": bits, "group_size": group_size, "rho": rho, "cell_bits": cell_bits}
    if embeddings:
        over["quantize_embeddings"] = True
    return parse_method(method, **over)


# ---------------------------------------------------------------------------- errors and progress
def fail(msg: str) -> None:
    console.print(tagged("error:", "bold red", msg), highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@contextmanager
def errors():
    """Bad input (QMCError, ValueError from option parsing) becomes one line and exit code 2."""
    try:
        yield
    except QMCError as exc:
        fail(str(exc).splitlines()[0] if str(exc) else "failed")
    except ValueError as exc:  # bad method specs and option values
        fail(str(exc).splitlines()[0])
    except OSError as exc:  # a file the command writes or reads: read-only folders, full disks, ...
        where = f" {exc.filename}" if exc.filename else ""
        fail(f"cannot access{where}: {exc.strerror or exc}; check the path and its permissions")


@contextmanager
def progress_bars():
    """``update(description, done, total)``: one bar per description, removed when done."""
    with Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as prog:
        tasks: dict[str, int] = {}

        def update(desc: str, done: int, total: int) -> None:
            if desc not in tasks:
                tasks[desc] = prog.add_task(desc, total=total)
            prog.update(tasks[desc], completed=done, total=total)

        yield update


def load(model: str | None, device: str = "cpu") -> LoadedModel:
    from qmc_edge.model.loading import load_model

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with console.status(f"loading {model or 'embedded SmolLM2-135M-Instruct'} ..."):
        lm = load_model(model, device=device)
    if lm.note:
        console.print(tagged("note:", "yellow", lm.note), highlight=False)
    return lm


def run_env() -> dict:
    """Versions, machine and command line, written into every results file."""
    import transformers

    from qmc_edge.provenance import code_revision

    return {
        "qmc_edge": __version__,
        "code": code_revision(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
    }


# ---------------------------------------------------------------------------- checks before any work
def check_output_file(path: Path | str | None, flag: str = "--json") -> Path | None:
    """An output file that can be written (see :func:`qmc_edge.jsonio.check_writable`)."""
    return check_writable(path, flag)


def check_output_dir(path: Path | str | None, flag: str) -> Path | None:
    """An existing, writable folder (e.g. --plots)."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_dir():
        raise QMCError(f"{flag} {path}: folder does not exist; create it first")
    probe_dir(p, f"{flag} {path}")
    return p


def check_rng(rng: str) -> None:
    """``--rng`` names a generator :meth:`QuantizedModel.realise` knows, or one line saying which do."""
    from qmc_edge.quant.qmodel import RNGS

    if rng not in RNGS:
        raise QMCError(f"--rng {rng}: use one of {', '.join(RNGS)}")


MAX_SEEDS = 1000  # chips per run: beyond it a typo, not a study


def check_seeds(seeds: int, noise_seed: int) -> tuple[int, ...]:
    """Noise seeds noise_seed .. noise_seed + seeds - 1 (both non-negative)."""
    if not 1 <= seeds <= MAX_SEEDS:
        raise QMCError(f"--seeds must be in 1..{MAX_SEEDS}, got {seeds}")
    if noise_seed < 0:
        raise QMCError(f"--noise-seed must be >= 0, got {noise_seed}")
    return tuple(range(noise_seed, noise_seed + seeds))


def check_eval(context: int, max_windows: int | None) -> None:
    if context < 2:
        raise QMCError(f"--context must be at least 2 tokens, got {context}")
    if max_windows is not None and max_windows < 1:
        raise QMCError(f"--max-windows must be at least 1, got {max_windows}")


def check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise QMCError(f"--limit must be at least 1 (omit it for every item), got {limit}")
