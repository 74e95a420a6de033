"""Reasoning tasks: data loading per format, prompt construction, scoring against a direct
computation on a tiny model, metrics, and the `qmc tasks` / `qmc compare --task` CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from typer.testing import CliRunner

from qmc_edge.cli.app import app
from qmc_edge.errors import QMCError
from qmc_edge.tasks import MCItem, load_task, score_items, scoring, task_metrics
from qmc_edge.tasks.data import _arc, _boolq, _hellaswag, hellaswag_preprocess
from qmc_edge.tasks.scoring import encode_pair

runner = CliRunner()
needs_data = pytest.mark.skipif(not (SHARED_DATA / "arc").is_dir(), reason="../shared/data not present")


@needs_data
@pytest.mark.parametrize(
    "name,count,n_choices",
    [("arc_easy", 2376, None), ("arc_challenge", 1172, None), ("boolq", 3270, 2), ("hellaswag", 10042, 4)],
)
def test_real_task_files_load_completely(name, count, n_choices):
    got, items = load_task(name)
    assert got == name and len(items) == count
    assert all(0 <= it.gold < len(it.choices) for it in items)
    if n_choices:
        assert all(len(it.choices) == n_choices for it in items)
    else:  # ARC has 3-5 choices on a few questions
        assert {len(it.choices) for it in items} <= {3, 4, 5}
    _, first5 = load_task(name, limit=5)
    assert first5 == items[:5]


def test_arc_prompt_and_numeric_labels():
    doc = {
        "id": "x",
        "question": {
            "stem": "Which is a gas?",
            "choices": [{"text": "ice", "label": "1"}, {"text": "steam", "label": "2"}],
        },
        "answerKey": "2",
    }
    it = _arc(doc)
    assert it.context == "Question: Which is a gas?\nAnswer:"
    assert it.choices == ("ice", "steam") and it.gold == 1 and it.delimiter == " "


def test_boolq_prompt():
    it = _boolq({"question": "is water wet", "passage": "Water is wet.", "answer": True, "title": "t"})
    assert it.context == "Water is wet.\nQuestion: is water wet?\nAnswer:"
    assert it.choices == ("no", "yes") and it.gold == 1


def test_hellaswag_preprocessing():
    doc = {
        "ind": 4,
        "activity_label": "Making a cake",
        "ctx_a": "A woman mixes flour [title] in a bowl.",
        "ctx_b": "she",
        "endings": ["adds eggs [step] slowly.", "b", "c", "d"],
        "label": "0",
    }
    it = _hellaswag(doc)
    assert it.context == "Making a cake: A woman mixes flour.  in a bowl. She".replace("  ", " ")
    assert it.choices[0] == "adds eggs slowly."
    assert it.gold == 0
    assert hellaswag_preprocess("  a [header] b  ") == "a b"


def test_generic_jsonl_and_its_errors(tmp_path):
    good = tmp_path / "mine.jsonl"
    rows = [
        {"context": "2 + 2 =", "choices": ["4", "5"], "gold": 0},
        {"context": "Sky:", "choices": ["blue", "green", "red"], "gold": 0, "delimiter": "\n", "id": "q2"},
    ]
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    name, items = load_task(str(good))
    assert name == "mine" and len(items) == 2
    assert items[1] == MCItem("Sky:", ("blue", "green", "red"), 0, "\n", "q2")
    for bad_row, needle in [
        ('{"context": "a", "choices": ["x"], "gold": 0}', "at least two"),
        ('{"context": "a", "choices": ["x", "y"], "gold": 2}', "not an index"),
        ('{"context": "a", "choices": ["x", "y"]}', "missing field"),
        ("{not json", "bad item"),
    ]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps(rows[0]) + "\n" + bad_row + "\n")
        with pytest.raises(QMCError, match=needle) as exc:
            load_task(str(bad))
        assert "bad.jsonl:2" in str(exc.value)
    with pytest.raises(QMCError, match="unknown task"):
        load_task("no_such_task")
    with pytest.raises(QMCError, match="limit"):
        load_task(str(good), limit=0)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(QMCError, match="no items"):
        load_task(str(empty))


GOOD_ROW = {"context": "2 + 2 =", "choices": ["4", "5"], "gold": 0}


def _row(**changes) -> str:
    row = {**GOOD_ROW, **changes}
    return json.dumps({k: v for k, v in row.items() if v is not _DROP})


_DROP = object()

# Line 2 of a file whose line 1 is good: (line, expected part of the message).
BAD_TASK_LINES = {
    "gold 1.7": (_row(gold=1.7), "'gold' must be an integer index into 'choices', got a number (1.7)"),
    "gold 1.0": (_row(gold=1.0), "'gold' must be an integer index into 'choices', got a number (1.0)"),
    "gold true": (_row(gold=True), "'gold' must be an integer index into 'choices', got a boolean (true)"),
    "gold string": (_row(gold="1"), "'gold' must be an integer index into 'choices', got a string (\"1\")"),
    "gold null": (_row(gold=None), "got null (null)"),
    "gold out of range": (_row(gold=2), "'gold' 2 is not an index into 2 choices (0..1)"),
    "gold negative": (_row(gold=-1), "'gold' -1 is not an index into 2 choices"),
    "gold huge": ('{"context": "a", "choices": ["x", "y"], "gold": ' + "9" * 5000 + "}", "too many digits"),
    "gold missing": (_row(gold=_DROP), "missing field 'gold'"),
    "choices blank": (_row(choices=["", ""]), "'choices'[0] is blank"),
    "choices whitespace": (_row(choices=["a", "  "]), "'choices'[1] is blank"),
    "one choice": (_row(choices=["x"]), "'choices' must be a list of at least two strings, got 1 of them"),
    "no choices": (_row(choices=[]), "at least two strings, got 0 of them"),
    "choices a string": (_row(choices="xy"), "'choices' must be a list of at least two strings, got a string"),
    "choice a number": (_row(choices=["x", 3]), "'choices'[1] must be a string, got an integer"),
    "context a number": (_row(context=5), "'context' must be a string, got an integer"),
    "context missing": (_row(context=_DROP), "missing field 'context'"),
    "delimiter 7": (_row(delimiter=7), "'delimiter' must be a string, got an integer"),
    "id a list": (_row(id=[1]), "'id' must be a string or an integer, got a list"),
    "unknown key": (_row(label=1), "unknown key 'label'; the keys are context, choices, gold, delimiter, id"),
    "duplicate key": ('{"context": "a", "choices": ["x", "y"], "gold": 0, "gold": 1}', "key 'gold' given twice"),
    "a list": ("[1, 2]", "a line must be a JSON object, got a list"),
    "a number": ("3", "a line must be a JSON object, got an integer"),
    "invalid JSON": ("{not json", "bad item (not valid JSON: Expecting property name"),
    "truncated JSON": (_row()[:-3], "not valid JSON"),
    "deeply nested": ("[" * 100000 + "]" * 100000, "nested too deeply"),
}


@pytest.mark.parametrize("line, expected", list(BAD_TASK_LINES.values()), ids=list(BAD_TASK_LINES))
def test_bad_task_line_is_one_line_naming_file_and_line(tmp_path, line, expected):
    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps(GOOD_ROW) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(QMCError) as ei:
        load_task(str(f))
    msg = str(ei.value)
    assert msg.startswith(f"{f}:2: bad item (") and expected in msg and "\n" not in msg
    assert msg.endswith('expected one JSON object per line: {"context": str, "choices": [str, str, ...], "gold": int}')


def _dir_task(tmp_path):
    d = tmp_path / "mine.jsonl"
    d.mkdir()
    return d


BAD_TASK_FILES = {
    "binary": (b"\x00\x01\x02\xff\n", ":1: binary data (a NUL byte), not JSON lines"),
    "NUL on line 3": (
        (json.dumps(GOOD_ROW) + "\n\n").encode() + b'{"context": "\x00"}\n',
        ":3: binary data (a NUL byte)",
    ),
    "not UTF-8": ((json.dumps(GOOD_ROW) + "\n").encode() + b'{"context": "caf\xe9"}\n', ":2: not UTF-8 text"),
    "UTF-16": (json.dumps(GOOD_ROW).encode("utf-16"), ":1: binary data"),
    "empty": (b"", "has no items (the file is empty or blank)"),
    "blank lines": (b"\n  \n\t\n", "has no items"),
}


@pytest.mark.parametrize("content, expected", list(BAD_TASK_FILES.values()), ids=list(BAD_TASK_FILES))
def test_bad_task_file_is_one_line_naming_the_file(tmp_path, content, expected):
    f = tmp_path / "mine.jsonl"
    f.write_bytes(content)
    with pytest.raises(QMCError) as ei:
        load_task(str(f))
    msg = str(ei.value)
    assert msg.startswith(str(f)) and expected in msg and "\n" not in msg


def test_task_file_that_is_a_directory_or_unreadable(tmp_path, monkeypatch):
    d = _dir_task(tmp_path)
    with pytest.raises(QMCError, match=rf"task file {d} is a directory; pass a JSON-lines file"):
        load_task(str(d))
    f = tmp_path / "ok.jsonl"
    f.write_text(json.dumps(GOOD_ROW) + "\n")
    # We run as root, where chmod 000 does not stop reads: simulate the failure instead.

    def denied(self, *a, **kw):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(f), "open", denied)
    with pytest.raises(QMCError) as ei:
        load_task(str(f))
    assert str(ei.value) == f"{f}: cannot read it (Permission denied); check the path and its permissions"


def test_a_bom_and_windows_line_ends_are_fine(tmp_path):
    f = tmp_path / "win.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + (json.dumps(GOOD_ROW) + "\r\n" + _row(gold=1, id=7) + "\r\n").encode())
    _, items = load_task(str(f))
    assert [it.gold for it in items] == [0, 1] and items[1].id == "7"


def test_builtin_tasks_with_a_bad_data_dir(tmp_path):
    with pytest.raises(QMCError) as ei:
        load_task("arc_easy", data_root=tmp_path / "nowhere")
    assert str(ei.value) == (
        f"data folder {tmp_path / 'nowhere'} for task arc_easy does not exist; "
        "pass the folder that holds arc/ with --data-dir"
    )
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(
        QMCError, match=r"data folder .*afile for task boolq is not a folder; pass the folder that holds boolq/"
    ):
        load_task("boolq", data_root=afile)
    with pytest.raises(QMCError, match=r"data for task hellaswag not found \(hellaswag/hellaswag_val.jsonl under .*\)"):
        load_task("hellaswag", data_root=tmp_path)
    # Upstream-format files are held to the same rules: gold an index, at least two choices.
    (tmp_path / "hellaswag").mkdir()
    doc = {"ind": 1, "activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["d", "e"], "label": "7"}
    (tmp_path / "hellaswag" / "hellaswag_val.jsonl").write_text(json.dumps(doc) + "\n")
    with pytest.raises(QMCError) as ei:
        load_task("hellaswag", data_root=tmp_path)
    msg = str(ei.value)
    assert msg.startswith(f"{tmp_path / 'hellaswag' / 'hellaswag_val.jsonl'}:1: bad item (gold 7 is not an index")
    assert "\n" not in msg
    (tmp_path / "arc").mkdir()
    arc = {"id": "x", "question": {"stem": "q", "choices": "none"}, "answerKey": "A"}
    (tmp_path / "arc" / "ARC-Easy-Test.jsonl").write_bytes(b"\n" + json.dumps(arc).encode() + b"\n")
    with pytest.raises(QMCError, match=r"ARC-Easy-Test.jsonl:2: bad item \(.*\); expected the upstream ARC-Easy test"):
        load_task("arc_easy", data_root=tmp_path)


@pytest.mark.parametrize("case", ["gold 1.7", "choices blank", "unknown key", "invalid JSON"])
def test_cli_tasks_bad_task_file_is_one_error_line(tiny_model_dir, tmp_path, case):
    line, expected = BAD_TASK_LINES[case]
    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps(GOOD_ROW) + "\n" + line + "\n", encoding="utf-8")
    r = runner.invoke(app, ["tasks", "--model", str(tiny_model_dir), "-t", str(f)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {f}:2: bad item") and expected in lines[0], r.output


def _direct_loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    ctx, cont = encode_pair(tokenizer, context, continuation)
    inp = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(inp).logits[0].double(), -1)
    return float(sum(logp[len(ctx) - 1 + i, t] for i, t in enumerate(cont)))


@pytest.mark.parametrize("path", ["decoder+head", "whole model", "soft-capped"])
def test_scoring_matches_direct_full_passes(tiny_lm, monkeypatch, path):
    """The packed tree-masked pass equals separate full passes: through the decoder with the head
    only where needed, through the whole model (models that expose no decoder), and with
    Gemma-2-style logit soft-capping (applied by our head path, by the model in the direct pass)."""
    if path == "whole model":
        monkeypatch.setattr(scoring, "_decoder_and_head", lambda model: None)
    if path == "soft-capped":
        cap = 0.3
        tiny_lm.model.config.final_logit_softcapping = cap
        forward = tiny_lm.model.forward

        def capped(*a, **kw):
            out = forward(*a, **kw)
            out.logits = torch.tanh(out.logits / cap) * cap
            return out

        monkeypatch.setattr(tiny_lm.model, "forward", capped)
    items = [
        MCItem("w1 w2 the w3", ("w4", "w5 w6 w7", "a of"), 0),
        MCItem("the w10", ("w11 w12", "w13"), 1),
        MCItem("w20 w21 ", ("w22", "w23 and w24"), 0),  # trailing space moves to the continuation
        MCItem("w30", ("w31 w32", "w33"), 1, delimiter="\n"),
    ]
    lls, secs = score_items(tiny_lm.model, tiny_lm.tokenizer, items)
    assert secs > 0
    for it, row in zip(items, lls, strict=True):
        for choice, ll in zip(it.choices, row, strict=True):
            direct = _direct_loglikelihood(tiny_lm.model, tiny_lm.tokenizer, it.context, it.delimiter + choice)
            assert ll == pytest.approx(direct, abs=1e-4)


def test_encode_pair_moves_trailing_spaces():
    class Chars:  # a character tokenizer: tokens are the characters
        bos_token_id = None
        eos_token_id = 0

        def __call__(self, text):
            return {"input_ids": [ord(ch) for ch in text]}

    ctx, cont = encode_pair(Chars(), "ab  ", "c")
    assert ctx == [ord("a"), ord("b")] and cont == [ord(" "), ord(" "), ord("c")]
    ctx, cont = encode_pair(Chars(), "", "xy")
    assert ctx == [0] and cont == [ord("x"), ord("y")]


def test_metrics_acc_norm_uses_choice_length():
    items = [MCItem("q", ("aaaa", "b"), 1), MCItem("q", ("x", "y"), 0), MCItem("q", ("cc", "d"), 0)]
    lls = [[-4.0, -2.0], [-1.0, -3.0], [-4.0, -1.0]]
    m = task_metrics(items, lls)
    # acc: item0 -> 1 (right), item1 -> 0 (right), item2 -> 1 (wrong)
    assert m["acc"] == pytest.approx(2 / 3)
    # acc_norm: item0 -1.0 vs -2.0 -> 0 (wrong); item1 right; item2 -2.0 vs -1.0 -> 1 (wrong)
    assert m["acc_norm"] == pytest.approx(1 / 3)
    x = np.array([1.0, 1.0, 0.0])
    assert m["acc_stderr"] == pytest.approx(np.std(x, ddof=1) / math.sqrt(3))
    assert "acc_norm" not in task_metrics(items, lls, with_norm=False)


def test_cli_tasks_on_tiny_model(tiny_model_dir, tiny_lm, tmp_path):
    f = tmp_path / "toy.jsonl"
    f.write_text(
        "\n".join(
            json.dumps(
                {"context": f"w{i} the w{i + 1}", "choices": [f"w{i + 2}", "a of", f"w{i + 3} w9"], "gold": i % 3}
            )
            for i in range(12)
        )
    )
    out = tmp_path / "t.json"
    args = ["tasks", "--model", str(tiny_model_dir), "-t", str(f), "--limit", "10", "-m", "fp", "-m", "qmc3"]
    res = runner.invoke(app, [*args, "--seeds", "2", "--json", str(out)])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    fp, q = d["rows"]
    assert fp["tasks"]["toy"]["n"] == 10 and "ppl_mean" not in fp
    assert len(q["tasks"]["toy"]["acc_per_seed"]) == 2 and q["seeds"] == [0, 1]
    # FP accuracy by hand, not through the scorer under test: each choice's log-likelihood from one
    # plain forward pass over context + delimiter + choice (lm-eval's definition: the continuation's
    # tokens are what the whole text adds to the context's), argmax against gold.
    _, items = load_task(str(f), limit=10)
    tok, model = tiny_lm.tokenizer, tiny_lm.model

    def ll(context: str, continuation: str) -> float:
        whole = tok(context + continuation)["input_ids"]
        n_ctx = len(tok(context)["input_ids"])
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
        return float(sum(logp[j - 1, whole[j]] for j in range(n_ctx, len(whole))))

    by_hand = sum(
        int(np.argmax([ll(it.context, it.delimiter + c) for c in it.choices])) == it.gold for it in items
    ) / len(items)
    assert fp["tasks"]["toy"]["acc"] == pytest.approx(by_hand)
    # QMC: the mean of its per-seed accuracies, each a count of right answers out of 10.
    per_seed = q["tasks"]["toy"]["acc_per_seed"]
    assert q["tasks"]["toy"]["acc"] == pytest.approx(sum(per_seed) / 2)
    assert all(a * 10 == pytest.approx(round(a * 10)) for a in per_seed)
    assert q["tasks"]["toy"]["items_per_s"] > 0
    assert "toy" in res.output and "first 10 items" in res.output
    # Same seeds, same accuracies; and `compare --task` adds the same columns next to PPL.
    text = tmp_path / "x.txt"
    text.write_text(" ".join(f"w{i % 50}" for i in range(400)))
    out2 = tmp_path / "c.json"
    res = runner.invoke(
        app,
        ["compare", "--model", str(tiny_model_dir), "--text", str(text), "--context", "32", "--max-windows", "2"]
        + ["-m", "fp", "-m", "qmc3", "--seeds", "2", "-t", str(f), "--limit", "10", "--json", str(out2)],
    )
    assert res.exit_code == 0, res.output
    c = json.loads(out2.read_text())
    assert c["rows"][1]["tasks"]["toy"]["acc_per_seed"] == q["tasks"]["toy"]["acc_per_seed"]
    assert "ppl_mean" in c["rows"][1]


def test_cli_tasks_bad_input(tiny_model_dir, tmp_path):
    out = tmp_path / "never.json"
    res = runner.invoke(app, ["tasks", "--model", str(tiny_model_dir), "-t", "nonsense", "--json", str(out)])
    assert res.exit_code == 2 and "unknown task" in res.output and not out.exists()


def test_scoring_does_not_depend_on_batching(tiny_lm):
    """One item per pass and many items per pass (different padding) give the same numbers."""
    items = [
        MCItem("w1 w2 the w3 w4 w5 w6", ("w4", "w5 w6 w7 w8 w9", "a"), 2),
        MCItem("the", ("w11 w12", "w13"), 1),
        MCItem("w20 w21 w22 w23", ("w22", "w23 and w24 of the"), 0),
        MCItem("w30 w31", ("w31", "w33"), 1),
    ]
    one, _ = score_items(tiny_lm.model, tiny_lm.tokenizer, items, batch_tokens=1)
    many, _ = score_items(tiny_lm.model, tiny_lm.tokenizer, items, batch_tokens=4096)
    for a, b in zip(one, many, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
