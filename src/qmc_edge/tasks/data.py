"""Task data: the four standard sets in their upstream formats, and a generic JSON-lines format.

Prompts and preprocessing follow lm-evaluation-harness 0.4 task definitions (arc_easy,
arc_challenge, boolq from super_glue, hellaswag), so that the same model and items give the same
numbers; tests/test_lmeval_parity.py checks this against lm-eval itself when it is installed.

Generic format, one JSON object per line (add a task without code):
``{"context": "...", "choices": ["...", "..."], "gold": 0}``; optional ``"delimiter"`` (default " ",
put between context and each choice) and ``"id"`` (a string or an integer). ``context`` is a string,
``choices`` at least two non-blank strings, ``gold`` an integer index into them (``1.0``, ``true`` and
``"1"`` are refused, not converted); any other key, or a key given twice, is refused. Every bad item
or file is one :class:`~qmc_edge.errors.QMCError` line naming the file and the line number.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from qmc_edge.errors import QMCError


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question: the model scores ``delimiter + choice`` after ``context``."""

    context: str
    choices: tuple[str, ...]
    gold: int
    delimiter: str = " "
    id: str = ""


@dataclass(frozen=True)
class TaskInfo:
    name: str
    path: str  # relative to the data root (../shared/data)
    has_acc_norm: bool
    description: str


TASKS: dict[str, TaskInfo] = {
    "arc_easy": TaskInfo("arc_easy", "arc/ARC-Easy-Test.jsonl", True, "ARC-Easy test"),
    "arc_challenge": TaskInfo("arc_challenge", "arc/ARC-Challenge-Test.jsonl", True, "ARC-Challenge test"),
    "boolq": TaskInfo("boolq", "boolq/dev.jsonl", False, "BoolQ dev (validation)"),
    "hellaswag": TaskInfo("hellaswag", "hellaswag/hellaswag_val.jsonl", True, "HellaSwag validation"),
}


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag cleaning: WikiHow bracket artifacts removed, double spaces collapsed."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _arc(doc: dict) -> MCItem:
    q = doc["question"]
    labels = [c["label"] for c in q["choices"]]
    if doc["answerKey"] not in labels:
        raise ValueError(f"answerKey {doc['answerKey']!r} not among labels {labels}")
    return MCItem(
        context=f"Question: {q['stem']}\nAnswer:",
        choices=tuple(c["text"] for c in q["choices"]),
        gold=labels.index(doc["answerKey"]),
        id=str(doc.get("id", "")),
    )


def _boolq(doc: dict) -> MCItem:
    return MCItem(
        context=f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:",
        choices=("no", "yes"),
        gold=int(bool(doc["answer"])),
    )


def _hellaswag(doc: dict) -> MCItem:
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return MCItem(
        context=hellaswag_preprocess(doc["activity_label"] + ": " + ctx),
        choices=tuple(hellaswag_preprocess(e) for e in doc["endings"]),
        gold=int(doc["label"]),
        id=str(doc.get("ind", "")),
    )


GENERIC_KEYS = ("context", "choices", "gold", "delimiter", "id")
GENERIC_FORMAT = 'one JSON object per line: {"context": str, "choices": [str, str, ...], "gold": int}'


def _generic(doc: dict) -> MCItem:
    if not isinstance(doc, dict):
        raise ValueError(f"a line must be a JSON object, got {_json_type(doc)}")
    unknown = [k for k in doc if k not in GENERIC_KEYS]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; the keys are {', '.join(GENERIC_KEYS)}")
    missing = [k for k in GENERIC_KEYS[:3] if k not in doc]
    if missing:
        raise ValueError(f"missing field {missing[0]!r}")
    context, choices, gold = doc["context"], doc["choices"], doc["gold"]
    if not isinstance(context, str):
        raise ValueError(f"'context' must be a string, got {_json_type(context)}")
    if not isinstance(choices, list) or len(choices) < 2:
        got = f"{len(choices)} of them" if isinstance(choices, list) else _json_type(choices)
        raise ValueError(f"'choices' must be a list of at least two strings, got {got}")
    for i, c in enumerate(choices):
        if not isinstance(c, str):
            raise ValueError(f"'choices'[{i}] must be a string, got {_json_type(c)}")
        if not c.strip():
            raise ValueError(f"'choices'[{i}] is blank; every choice needs text (acc_norm divides by its length)")
    if type(gold) is not int:  # bool is an int subclass; 1.0 and "1" are not indices either
        raise ValueError(f"'gold' must be an integer index into 'choices', got {_json_type(gold)} ({json.dumps(gold)})")
    if not 0 <= gold < len(choices):
        raise ValueError(f"'gold' {gold} is not an index into {len(choices)} choices (0..{len(choices) - 1})")
    delimiter = doc.get("delimiter", " ")
    if not isinstance(delimiter, str):
        raise ValueError(f"'delimiter' must be a string, got {_json_type(delimiter)}")
    item_id = doc.get("id", "")
    if isinstance(item_id, bool) or not isinstance(item_id, str | int):
        raise ValueError(f"'id' must be a string or an integer, got {_json_type(item_id)}")
    return MCItem(context, tuple(choices), gold, delimiter, str(item_id))


def _json_type(v: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }
    return "null" if v is None else names.get(type(v), type(v).__name__)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} given twice")
        out[k] = v
    return out


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _check_item(it: MCItem) -> MCItem:
    """What every parser must give, whatever its format: a gold index into >= 2 non-empty choices."""
    if len(it.choices) < 2:
        raise ValueError(f"{len(it.choices)} choice(s); a question needs at least two")
    if not 0 <= it.gold < len(it.choices):
        raise ValueError(f"gold {it.gold} is not an index into {len(it.choices)} choices")
    if not all(it.choices):
        raise ValueError("an empty choice (acc_norm divides by its length)")
    return it


_PARSERS = {"arc_easy": _arc, "arc_challenge": _arc, "boolq": _boolq, "hellaswag": _hellaswag}


def default_data_root() -> Path | None:
    """``../shared/data`` from the working directory or from the repository checkout."""
    here = Path(__file__).resolve()
    for root in (Path.cwd().parent, Path.cwd(), *here.parents):
        cand = root / "shared" / "data"
        try:
            if cand.is_dir():
                return cand
        except OSError:  # a folder on the way that we may not enter: not this one
            continue
    return None


def _kind(path: Path, what: str) -> str:
    """``file``, ``dir``, ``missing`` or ``other``; a path that cannot be examined is one clear error."""
    try:
        if path.is_file():
            return "file"
        if path.is_dir():
            return "dir"
        return "other" if path.exists() else "missing"
    except OSError as exc:
        raise QMCError(f"{what}: cannot access {path} ({exc.strerror or exc}); check its permissions") from None


def load_task(
    name_or_path: str, limit: int | None = None, data_root: str | Path | None = None
) -> tuple[str, list[MCItem]]:
    """(task name, items) for a known task name or a JSON-lines file in the generic format.

    ``limit`` takes the first N items in file order (as lm-eval's ``--limit`` does).
    """
    if name_or_path in TASKS:
        info = TASKS[name_or_path]
        root = Path(data_root).expanduser() if data_root else default_data_root()
        where = f"under {root}" if data_root else "under ../shared/data"
        fix = f"pass the folder that holds {info.path.split('/')[0]}/ with --data-dir"
        if root is not None and data_root:
            kind = _kind(root, f"data folder {root}")
            if kind != "dir":
                what = "does not exist" if kind == "missing" else "is not a folder"
                raise QMCError(f"data folder {root} for task {name_or_path} {what}; {fix}")
        if root is None or _kind(root / info.path, f"data for task {name_or_path}") != "file":
            raise QMCError(f"data for task {name_or_path} not found ({info.path} {where}); {fix}")
        path, parse, name = root / info.path, _PARSERS[name_or_path], name_or_path
        hint = f"the upstream {info.description} format"
    else:
        path = Path(name_or_path).expanduser()
        kind = _kind(path, f"task file {path}")
        if kind == "dir":
            raise QMCError(f"task file {path} is a directory; pass a JSON-lines file ({GENERIC_FORMAT})")
        if kind != "file":
            known = ", ".join(TASKS)
            raise QMCError(f"unknown task {name_or_path!r}: neither one of {known} nor a JSON-lines file")
        parse, name, hint = _generic, path.stem, GENERIC_FORMAT
    if limit is not None and limit < 1:
        raise QMCError(f"--limit must be at least 1, got {limit}")
    items: list[MCItem] = []
    try:
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                if b"\0" in raw:
                    raise QMCError(f"{path}:{lineno}: binary data (a NUL byte), not JSON lines; expected {hint}")
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError:
                    raise QMCError(f"{path}:{lineno}: not UTF-8 text; save the file as UTF-8 ({hint})") from None
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line, object_pairs_hook=_unique_keys if parse is _generic else None)
                except json.JSONDecodeError as exc:
                    raise QMCError(f"{path}:{lineno}: bad item (not valid JSON: {exc.msg}); expected {hint}") from None
                except (ValueError, RecursionError) as exc:
                    what = "nested too deeply" if isinstance(exc, RecursionError) else _first_line(exc)
                    if "integer string conversion" in what:
                        what = "an integer with too many digits"
                    raise QMCError(f"{path}:{lineno}: bad item ({what}); expected {hint}") from None
                try:
                    items.append(_check_item(parse(doc)))
                except (KeyError, ValueError, TypeError, AttributeError, IndexError, OverflowError) as exc:
                    what = f"missing field {exc}" if isinstance(exc, KeyError) else _first_line(exc)
                    raise QMCError(f"{path}:{lineno}: bad item ({what}); expected {hint}") from None
                if limit is not None and len(items) >= limit:
                    break
    except OSError as exc:
        raise QMCError(f"{path}: cannot read it ({exc.strerror or exc}); check the path and its permissions") from None
    if not items:
        raise QMCError(f"{path} has no items (the file is empty or blank); expected {hint}")
    return name, items
