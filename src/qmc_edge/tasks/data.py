"""Task data: the four standard sets in their upstream formats, and a generic JSON-lines format.

Prompts and preprocessing follow lm-evaluation-harness 0.4 task definitions (arc_easy,
arc_challenge, boolq from super_glue, hellaswag), so that the same model and items give the same
numbers; tests/test_lmeval_parity.py checks this against lm-eval itself when it is installed.

Generic format, one JSON object per line (add a task without code):
``{"context": "...", "choices": ["...", "..."], "gold": 0}``; optional ``"delimiter"`` (default " ",
put between context and each choice) and ``"id"``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import QMCError


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


def _generic(doc: dict) -> MCItem:
    choices = doc["choices"]
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise ValueError("'choices' must be a list of at least two strings")
    gold = int(doc["gold"])
    if not 0 <= gold < len(choices):
        raise ValueError(f"'gold' {gold} is not an index into {len(choices)} choices")
    if not isinstance(doc["context"], str):
        raise ValueError("'context' must be a string")
    return MCItem(doc["context"], tuple(choices), gold, str(doc.get("delimiter", " ")), str(doc.get("id", "")))


_PARSERS = {"arc_easy": _arc, "arc_challenge": _arc, "boolq": _boolq, "hellaswag": _hellaswag}


def default_data_root() -> Path | None:
    """``../shared/data`` from the working directory or from the repository checkout."""
    here = Path(__file__).resolve()
    for root in (Path.cwd().parent, Path.cwd(), *here.parents):
        cand = root / "shared" / "data"
        if cand.is_dir():
            return cand
    return None


def load_task(
    name_or_path: str, limit: int | None = None, data_root: str | Path | None = None
) -> tuple[str, list[MCItem]]:
    """(task name, items) for a known task name or a JSON-lines file in the generic format.

    ``limit`` takes the first N items in file order (as lm-eval's ``--limit`` does).
    """
    if name_or_path in TASKS:
        info = TASKS[name_or_path]
        root = Path(data_root) if data_root else default_data_root()
        if root is None or not (root / info.path).is_file():
            raise QMCError(
                f"data for task {name_or_path} not found ({info.path} under ../shared/data); "
                "pass the data folder with --data-dir"
            )
        path, parse, name = root / info.path, _PARSERS[name_or_path], name_or_path
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            known = ", ".join(TASKS)
            raise QMCError(f"unknown task {name_or_path!r}: neither one of {known} nor a JSON-lines file")
        parse, name = _generic, path.stem
    if limit is not None and limit < 1:
        raise QMCError(f"--limit must be at least 1, got {limit}")
    items: list[MCItem] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                items.append(parse(json.loads(line)))
            except (json.JSONDecodeError, KeyError, ValueError, TypeError, AttributeError) as exc:
                what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
                raise QMCError(f"{path}:{lineno}: bad item ({what})") from None
            if limit is not None and len(items) >= limit:
                break
    if not items:
        raise QMCError(f"{path} has no items")
    return name, items
