"""The results store: one Parquet file per completed point, one JSON file per failed point.

Layout of a store folder::

    points/<key>.parquet     one row per (point, seed): the schema below
    failures/<key>.json      {key, model, method, error (one line), traceback, date}
    sweep.yaml               the last spec run into this store (for the report)

A point's file is written to a temporary name and renamed when complete, so a sweep killed at any
moment leaves whole points or nothing; a point whose file exists is done and is skipped by the next
run (its key is a hash of everything that changes its result, :func:`~qmc_edge.sweep.spec.point_key`).
Only the driver writes. Any Parquet reader queries it, e.g. DuckDB
``SELECT method, avg(ppl) FROM 'STORE/points/*.parquet' GROUP BY method`` or
``pandas.read_parquet('STORE/points')``.

Why Parquet files per point and not one database: a file per point is atomic with a rename on every
file system, needs no lock, and merges stores by copying folders.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from qmc_edge.errors import QMCError

#: The columns of every row, with their meaning (README and `qmc report` refer to this).
SCHEMA: dict[str, str] = {
    "key": "hash of everything that changes the point's result (model, method options, eval, platforms)",
    "sweep": "the spec's name",
    "model": "the model as the spec names it (embedded, a path or a hub id)",
    "model_source": "what was loaded (and the note that the reference was quantized upstream, for GGUF)",
    "method": "the method configuration's label (every non-default option in it)",
    "method_text": "the method text as the spec wrote it (or a grid produced it)",
    "family": "the method's registry name (qmc, rtn, emem, gptq, ...)",
    "spec_json": "every option of the method configuration, JSON",
    "noisy": "whether reads are random (ReRAM noise or MRAM faults): seeds are chips",
    "ideal_memory": "the codes are read without memory error",
    "seed": "the memory-noise seed (chip) of this row; null for deterministic methods",
    "ppl": "WikiText-2 perplexity of this seed (null without a perplexity evaluation)",
    "text": "the perplexity text (its label: dataset, split and where it was read)",
    "tokens_scored": "tokens scored for ppl",
    "windows": "perplexity windows evaluated",
    "windows_available": "windows of context tokens the whole text has",
    "context": "tokens per window",
    "tasks_json": "per task, this seed's n (items), acc and acc_norm (where the task has it) with their "
    "standard errors over items (acc_stderr, acc_norm_stderr) and items_per_s, JSON",
    "bits_per_weight": "bits per quantized weight, all metadata included",
    "whole_model_bits": "bits per parameter over the whole model (unquantized tensors at FP16)",
    "weights_MB": "whole-model weight storage, MB",
    "storage_json": "the storage report, JSON",
    "deploy_json": "per platform: energy mJ/token, latency ms/token, off-die MB/token (decode), fits, JSON",
    "quantize_seconds": "wall time of the quantization (once per point)",
    "gptq_fallback": "layers GPTQ rounded to nearest because their Hessian was not positive definite, JSON "
    "list (null for methods without GPTQ rounding)",
    "eval_seconds": "wall time of the point's evaluations, all seeds",
    "versions_json": "qmc-edge, torch, transformers and Python versions and the code's git commit and "
    "dirty flag (uncommitted changes to tracked files), JSON",
    "machine": "where the model ran: the GPU's name, or the CPU's architecture and cores; with torch's version",
    "origin": "how the row came into the store: the command that measured it",
    "date": "UTC time the point completed",
}


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise QMCError("the results store needs pyarrow; pip install pyarrow") from None
    return pa, pq


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise QMCError(f"store {root} is a file; give a folder (it is created if missing)")
        self.points = self.root / "points"
        self.failures = self.root / "failures"
        self._scanned: tuple[dict, dict] | None = None  # the last scan; a write through this object drops it

    def create(self) -> Store:
        try:
            self.points.mkdir(parents=True, exist_ok=True)
            self.failures.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise QMCError(f"store {self.root}: cannot create it ({exc.strerror or exc})") from None
        return self

    @contextmanager
    def locked(self):
        """Hold the store for one writer: a second ``qmc sweep`` into the same store is refused in one
        line instead of computing every point twice. Holding it, temporary files that a killed sweep
        left behind (a point being written when it died) are removed: no other writer can own them."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no advisory locks; one writer is the user's care
            yield self
            return
        try:
            fh = open(self.root / ".lock", "a+", encoding="utf-8")  # noqa: SIM115 - held until the end
        except OSError as exc:
            raise QMCError(
                f"store {self.root}: cannot write in it ({exc.strerror or exc}); give a writable --store"
            ) from None
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                who = fh.read().strip() or "another process"
                raise QMCError(
                    f"store {self.root} is in use by another qmc sweep ({who}); wait for it or give another --store"
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}, since {_now()}")
            fh.flush()
            for folder in (self.points, self.failures):
                for tmp in folder.glob(".*") if folder.is_dir() else []:
                    tmp.unlink(missing_ok=True)
            yield self
        finally:
            fh.close()  # releases the lock

    def scan(self) -> tuple[dict[str, object], dict[str, str]]:
        """Every point file read and validated: ({key: its rows as a pyarrow Table}, {key: what is
        wrong}). A point is valid when it reads as Parquet, has every column of :data:`SCHEMA` with
        its type, at least one row, and every row's ``key`` equal to its file name and a ``sweep``
        and ``method``. A store is not trusted by its file names: a truncated, unreadable, foreign
        or copied file is reported here and recomputed by the next ``qmc sweep``."""
        pa, pq = _pa()
        want = arrow_schema()
        valid: dict[str, object] = {}
        damaged: dict[str, str] = {}
        for f in sorted(self.points.glob("*.parquet")) if self.points.is_dir() else []:
            key = f.stem
            try:
                table = pq.read_table(f)
            except OSError as exc:
                damaged[key] = f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
                continue
            except pa.ArrowException as exc:
                damaged[key] = f"not a Parquet point ({str(exc).splitlines()[0][:120]})"
                continue
            problem = _check_point(key, table, want)
            if problem:
                damaged[key] = problem
            else:
                valid[key] = table
        self._scanned = (valid, damaged)
        return valid, damaged

    def _last_scan(self) -> tuple[dict, dict]:
        """The last scan, or a new one: done(), damaged() and read() of one reader read each file once."""
        return self._scanned if self._scanned is not None else self.scan()

    def done(self) -> set[str]:
        """Keys of the valid points (a damaged one is not done: the next sweep recomputes it)."""
        return set(self._last_scan()[0])

    def damaged(self) -> dict[str, str]:
        """{key: what is wrong} for every point file that is not a valid point."""
        return self._last_scan()[1]

    def failed(self) -> dict[str, dict]:
        """{key: its failure record} (model, method, error: strings). A record that cannot be read or
        is not such a mapping is reported as what it is, not skipped: it still names a failed point."""
        out = {}
        if self.failures.is_dir():
            for p in self.failures.glob("*.json"):
                try:
                    rec = json.loads(p.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                    rec = {"error": f"failure record {p.name} cannot be read ({type(exc).__name__})"}
                if not isinstance(rec, dict):
                    rec = {"error": f"failure record {p.name} is not a mapping"}
                out[p.stem] = {k: str(rec.get(k, "?")) for k in ("model", "method", "error")}
        return out

    def _atomic(self, path: Path, write) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            write(tmp)
            with open(tmp, "rb") as fh:  # on disk before it is visible under its final name
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_point(self, key: str, rows: list[dict]) -> Path:
        pa, pq = _pa()
        unknown = {k for r in rows for k in r} - set(SCHEMA)
        if unknown:
            raise ValueError(f"row columns not in the store schema: {sorted(unknown)}")
        table = pa.Table.from_pylist([{k: r.get(k) for k in SCHEMA} for r in rows], schema=arrow_schema())
        path = self.points / f"{key}.parquet"
        self._atomic(path, lambda tmp: pq.write_table(table, tmp))
        self._scanned = None
        (self.failures / f"{key}.json").unlink(missing_ok=True)  # it failed before and now succeeded
        return path

    def write_failure(self, key: str, info: dict) -> None:
        path = self.failures / f"{key}.json"
        self._atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=1), encoding="utf-8"))

    def read(self):
        """The rows of every valid point as a pyarrow Table (empty, with the schema, when none is);
        damaged points are left out here and listed by :meth:`damaged`."""
        pa, _ = _pa()
        tables = list(self._last_scan()[0].values())
        if not tables:
            return arrow_schema().empty_table()
        return pa.concat_tables(tables, promote_options="default")


#: Columns added after points were first stored: an older point without them is valid (they read as null).
ADDED_COLUMNS = frozenset({"gptq_fallback"})


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _check_point(key: str, table, want) -> str | None:
    """What is wrong with a point file's table (None: nothing)."""
    have = {f.name: f.type for f in table.schema}
    missing = [c for c in want.names if c not in have and c not in ADDED_COLUMNS]
    if missing:
        return f"missing columns {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} (another schema)"
    for f in want:
        if f.name in have and have[f.name] != f.type and str(have[f.name]) != "null":
            return f"column {f.name} is {have[f.name]}, not {f.type} (another schema)"
    if table.num_rows == 0:
        return "no rows"
    rows = table.select(["key", "sweep", "method"]).to_pylist()
    if any(r["key"] != key for r in rows):
        return "its rows belong to another point (a copied or renamed file)"
    if any(not r["sweep"] or not r["method"] for r in rows):
        return "a row without its sweep or method"
    return None


def arrow_schema():
    pa, _ = _pa()
    types = {
        "noisy": pa.bool_(),
        "ideal_memory": pa.bool_(),
        "seed": pa.int64(),
        "ppl": pa.float64(),
        "tokens_scored": pa.int64(),
        "windows": pa.int64(),
        "windows_available": pa.int64(),
        "context": pa.int64(),
        "bits_per_weight": pa.float64(),
        "whole_model_bits": pa.float64(),
        "weights_MB": pa.float64(),
        "quantize_seconds": pa.float64(),
        "eval_seconds": pa.float64(),
    }
    return pa.schema([(k, types.get(k, pa.string())) for k in SCHEMA])
