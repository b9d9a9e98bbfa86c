"""GRPO prompt rows in three shapes, and the graders checked against the data before any worker starts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from cluster.data import check_data, prepare_datasets
from cluster.data.prompts import read_prompts
from cluster.errors import UserError
from cluster.model.load import load_tokenizer
from cluster.spec import validate_spec

EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}  # fmt: skip
ROWS = {
    "rft.jsonl": [
        {"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "3+3?"},
                      {"role": "assistant", "content": "6"}], "answer": "6"},
    ],
    "evals.jsonl": [{"input": [{"role": "user", "content": "1+1?"}], "ideal": "2", "answer": "2"}],
    "trl.jsonl": [{"prompt": "5+5?", "answer": "10"}, {"prompt": [{"role": "user", "content": "0+0?"}], "answer": "0"}],
}  # fmt: skip


def write(folder, name, rows) -> str:
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def spec_for(paths: list[str], graders=None) -> dict:
    return {
        "model": {"base": "embedded:smollm2-135m-instruct"},
        "data": {"train": [{"path": p} for p in paths], "eval_split": 0},
        "train": {"objective": "grpo", "micro_batch_size": 2, "eval_steps": None,
                  "grpo": {"num_generations": 2, "graders": graders or [EXACT]}},
        "output": {"name": "t"},
    }  # fmt: skip


def test_three_shapes_give_prompts_and_the_whole_row_as_item(tmp_path):
    paths = [write(tmp_path, name, rows) for name, rows in ROWS.items()]
    rows, report = read_prompts(validate_spec(spec_for(paths)).data)
    assert [r["prompt"] for r in rows] == [
        [{"role": "user", "content": "2+2?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "3+3?"}],  # the answer is not prompt
        [{"role": "user", "content": "1+1?"}],
        [{"role": "user", "content": "5+5?"}],
        [{"role": "user", "content": "0+0?"}],
    ]
    assert rows[2]["item"]["ideal"] == "2" and rows[0]["item"]["answer"] == "4"
    assert rows[3]["where"] == f"{tmp_path}/trl.jsonl:1" and report.rows_read == 5 and report.rows_dropped == 0
    assert check_data(validate_spec(spec_for(paths))).train_samples == 3  # equal weights: one row of each source


def test_rows_without_a_prompt_are_dropped_with_file_line(tmp_path):
    path = write(tmp_path, "mixed.jsonl", [{"prompt": "ok?", "answer": "y"}, {"question": "where?", "answer": "n"}])
    _, report = read_prompts(validate_spec(spec_for([path])).data)
    assert report.dropped["missing field"].examples[0].startswith(f"{path}:2 (no prompt: expected 'messages'")


def test_a_grader_field_missing_from_rows_names_the_rows(tmp_path):
    path = write(tmp_path, "d.jsonl", [{"prompt": "a", "answer": "1"}, {"prompt": "b"}, {"prompt": "c", "ideal": "3"}])
    with pytest.raises(UserError, match=rf"grader 'exact' reads {{{{item.answer}}}}, which 2 of 3 rows lack: {path}:2, {path}:3"):
        check_data(validate_spec(spec_for([path])))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def grade(sample, item):\n    return 1 / 0\n", "grader 'py' on {path}:1: raised ZeroDivisionError"),
        ("import time\ndef grade(sample, item):\n    time.sleep(30)\n", "grader 'py' on {path}:1: took longer than 1 s"),
    ],
)
def test_a_python_grader_that_raises_or_hangs_is_named_before_training(tmp_path, source, message):
    path = write(tmp_path, "d.jsonl", [{"prompt": "a", "answer": "1"}])
    grader = {"type": "python", "name": "py", "source": source, "timeout_s": 1}
    with pytest.raises(UserError, match=message.format(path=path)):
        check_data(validate_spec(spec_for([path], graders=[grader])))


def test_prepare_saves_prompt_rows_with_their_items_and_drops_long_prompts_by_row(tmp_path):
    rows = [{"prompt": f"{i}+{i}?", "answer": str(2 * i)} for i in range(10)] + [{"prompt": "long " * 40, "answer": "0"}]
    path = write(tmp_path, "d.jsonl", rows)
    spec = validate_spec({**spec_for([path]), "data": {"train": [{"path": path}], "eval_split": 0.2, "max_seq_len": 64}})
    tokenizer = load_tokenizer(spec)
    data = prepare_datasets(spec, tokenizer, str(tmp_path / "cache"))
    train, held = data.train(), data.eval()
    assert (len(train), len(held)) == (8, 2) and set(train.column_names) == {"prompt", "item_json", "where"}
    row = next(r for r in [*train, *held] if r["where"] == f"{path}:3")
    assert row["prompt"] == [{"role": "user", "content": "2+2?"}] and json.loads(row["item_json"]) == rows[2]
    assert data.report.dropped["too long"].examples[0].startswith(f"{path}:11 (prompt of ")
    again = prepare_datasets(spec, tokenizer, str(tmp_path / "cache"))  # the same content: the saved rows again
    assert again.train_path == data.train_path and again.report.hash == data.report.hash


def test_rayfit_data_check_names_missing_fields_without_a_traceback(tmp_path):
    path = write(tmp_path, "d.jsonl", [{"prompt": "a"}])
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec_for([path])))
    out = subprocess.run([sys.executable, "-m", "jobs.cli", "data", "check", str(tmp_path / "job.yaml")],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr
    lack = f"grader 'exact' reads {{{{item.answer}}}}, which 1 of 1 rows lack: {path}:1"
    assert f"rayfit: the graders cannot score the data:\n  - {lack}" in out.stderr
