"""Run lm-evaluation-harness itself on our local task files, for parity checks and for users who
want lm-eval's numbers next to ours.

lm-eval's shipped task configs point at the Hugging Face hub. Here each of the four tasks gets a
small YAML that *includes* lm-eval's own config (so prompts, preprocessing and metrics are lm-eval's,
not a copy of them) and only swaps the dataset for a local JSON-lines file in the hub's schema,
converted from the files in ../shared/data. Needs the optional extra ``lmeval``.
"""

from __future__ import annotations

import json
from pathlib import Path

from qmc_edge.errors import QMCError
from qmc_edge.tasks.data import TASKS, default_data_root

# lm-eval config that each of our task names includes, and the split lm-eval scores.
_LMEVAL = {
    "arc_easy": ("arc/arc_easy.yaml", "test"),
    "arc_challenge": ("arc/arc_challenge.yaml", "test"),
    "boolq": ("super_glue/boolq/default.yaml", "validation"),
    "hellaswag": ("hellaswag/hellaswag.yaml", "validation"),
}


def _to_hub_schema(name: str, doc: dict) -> dict:
    """Our local upstream rows -> the field layout of the hub datasets lm-eval's configs expect."""
    if name.startswith("arc"):
        q = doc["question"]
        return {
            "id": doc.get("id", ""),
            "question": q["stem"],
            "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]},
            "answerKey": doc["answerKey"],
        }
    if name == "boolq":
        return {"question": doc["question"], "passage": doc["passage"], "label": int(bool(doc["answer"])), "idx": 0}
    return doc  # HellaSwag: the local file already has the hub's fields


def write_lmeval_tasks(
    out_dir: Path, names: list[str], limit: int | None = None, data_root: Path | None = None
) -> dict[str, str]:
    """Write converted data + including YAMLs into ``out_dir``; returns our name -> lm-eval task name."""
    try:
        import lm_eval
    except ImportError:
        raise QMCError("lm-eval is not installed; pip install 'qmc-edge[lmeval]'") from None
    tasks_root = Path(lm_eval.__file__).parent / "tasks"
    root = data_root or default_data_root()
    if root is None:
        raise QMCError("../shared/data not found; pass data_root")
    out_dir.mkdir(parents=True, exist_ok=True)
    mapping = {}
    for name in names:
        cfg, split = _LMEVAL[name]
        rows = []
        with (root / TASKS[name].path).open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rows.append(_to_hub_schema(name, json.loads(line)))
                if limit and len(rows) >= limit:
                    break
        data = out_dir / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        task = f"qmc_local_{name}"
        splits = {"training_split": None, "validation_split": None, "test_split": None}
        splits["test_split" if split == "test" else "validation_split"] = split
        lines = [
            f"include: {tasks_root / cfg}",
            f"task: {task}",
            "tag: []",
            "dataset_path: json",
            "dataset_name: null",
            "dataset_kwargs:",
            "  data_files:",
            f"    {split}: {data}",
            *(f"{k}: {v if v else 'null'}" for k, v in splits.items()),
        ]
        (out_dir / f"{task}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        mapping[name] = task
    return mapping


def lmeval_loglikelihoods(
    model, tokenizer, names: list[str], limit: int, work_dir: Path, batch_size: int = 8
) -> tuple[dict[str, list[list[float]]], dict[str, dict[str, float]]]:
    """Per task, lm-eval's per-item choice log-likelihoods (in item order) for an in-memory model,
    and the metrics lm-eval reports (acc, acc_stderr, acc_norm, acc_norm_stderr)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    mapping = write_lmeval_tasks(work_dir, names, limit)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device="cpu")
    res = simple_evaluate(
        model=lm,
        tasks=list(mapping.values()),
        task_manager=TaskManager(include_path=str(work_dir)),
        num_fewshot=0,
        limit=limit,
        log_samples=True,
    )
    out, metrics = {}, {}
    for name, task in mapping.items():
        samples = sorted(res["samples"][task], key=lambda s: s["doc_id"])
        out[name] = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
        metrics[name] = {k.split(",")[0]: float(v) for k, v in res["results"][task].items() if k.startswith("acc")}
    return out, metrics
