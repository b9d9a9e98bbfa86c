"""Every source kind and URI form reads the same records; format detection; mixing weights; the CLI."""

from __future__ import annotations

import json

import pytest

from cluster.data import check_data
from cluster.data.formats import detect_format
from cluster.data.mixing import mix_counts
from cluster.data.sources import read_source
from cluster.errors import UserError
from cluster.spec import SourceSpec
from tests.cluster.data.test_prepare import make_spec

ROWS = [{"instruction": f"Question {i}?", "input": "", "output": f"Answer number {i}."} for i in range(6)]


def write_all_kinds(folder):
    """The same six alpaca rows as .jsonl, .json, .parquet, .csv and a save_to_disk DatasetDict."""
    import pandas as pd
    from datasets import Dataset, DatasetDict

    (folder / "d.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    (folder / "d.json").write_text(json.dumps(ROWS, indent=2))
    pd.DataFrame(ROWS).to_parquet(folder / "d.parquet")
    pd.DataFrame(ROWS).to_csv(folder / "d.csv", index=False)
    DatasetDict({"train": Dataset.from_list(ROWS), "test": Dataset.from_list(ROWS[:2])}).save_to_disk(str(folder / "disk"))


def test_every_source_kind_reads_the_same_records(tmp_path):
    write_all_kinds(tmp_path)
    expected = [{k: v for k, v in r.items()} for r in ROWS]
    for name, first in [
        ("d.jsonl", "d.jsonl:1"),
        ("d.json", "d.json:2"),
        ("d.parquet", "d.parquet:row 1"),
        ("d.csv", "d.csv:2"),
        ("disk", "disk:row 1"),
    ]:
        rows = read_source(SourceSpec(path=str(tmp_path / name)))
        assert [r.fields for r in rows.records] == expected, name
        assert rows.records[0].where == f"{tmp_path / name}".replace(str(tmp_path / name), str(tmp_path / first))
        assert detect_format(rows, "auto") == "alpaca"
    uri = read_source(SourceSpec(path=f"file://{tmp_path}/d.jsonl"))
    assert [r.fields for r in uri.records] == expected
    test_split = read_source(SourceSpec(path=str(tmp_path / "disk"), split="test"))
    assert len(test_split.records) == 2
    with pytest.raises(UserError, match=r"splits \['test', 'train'\]; split 'dev'"):
        read_source(SourceSpec(path=str(tmp_path / "disk"), split="dev"))
    with pytest.raises(UserError, match="does not exist"):
        read_source(SourceSpec(path=str(tmp_path / "missing.jsonl")))


def test_detection_reports_choice_and_rejects_unknown_or_ambiguous(tiny_tokenizer, tmp_path):
    (tmp_path / "sg.jsonl").write_text(
        json.dumps({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello there"}]})
    )
    report = check_data(make_spec([{"path": str(tmp_path / "sg.jsonl")}], max_seq_len=128, eval_split=0.0), tiny_tokenizer)
    assert (report.sources[0].format, report.sources[0].detected) == ("sharegpt", True)
    assert "format=sharegpt (detected)" in report.to_table()
    (tmp_path / "odd.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}))
    with pytest.raises(UserError, match=r"odd.jsonl': unknown record shape; keys seen: \['answer', 'question'\]"):
        detect_format(read_source(SourceSpec(path=str(tmp_path / "odd.jsonl"))), "auto")
    (tmp_path / "both.jsonl").write_text(json.dumps({"instruction": "q", "output": "a", "text": "q a"}))
    with pytest.raises(UserError, match=r"both.jsonl': ambiguous record shape.*keys seen: \['instruction', 'output', 'text'\]"):
        detect_format(read_source(SourceSpec(path=str(tmp_path / "both.jsonl"))), "auto")
    assert detect_format(read_source(SourceSpec(path=str(tmp_path / "both.jsonl"))), "text") == "text"


def test_mixing_weights_become_row_counts(tiny_tokenizer, tmp_path):
    assert mix_counts([503, 10_000], [0.85, 0.15]) == [503, 89]
    assert mix_counts([100, 100], [1, 1]) == [100, 100]
    assert mix_counts([100, 40], [1, 1]) == [40, 40]
    assert mix_counts([7], [0.2]) == [7]
    assert mix_counts([0, 50], [1, 1]) == [0, 50]
    general = tmp_path / "general.jsonl"
    general.write_text("\n".join(json.dumps({"text": f"General sentence number {i}."}) for i in range(40)))
    spec = make_spec(
        [{"path": "embedded:construction-faq", "weight": 0.85}, {"path": str(general), "weight": 0.15}],
        max_seq_len=512,
        eval_split=0.0,
    )
    report = check_data(spec, tiny_tokenizer)
    assert [(s.format, s.rows_kept, s.rows_used) for s in report.sources] == [("alpaca", 503, 227), ("text", 40, 40)]
    spec = make_spec(
        [{"path": "embedded:construction-faq", "weight": 0.5}, {"path": str(general), "weight": 0.5}],
        max_seq_len=512,
        eval_split=0.0,
    )
    report = check_data(spec, tiny_tokenizer)
    assert [s.rows_used for s in report.sources] == [40, 40] and report.train_samples == 80


def test_cli_data_check_prints_table_or_json_and_fails_on_threshold(tiny_model_dir, tmp_path, capsys):
    import yaml

    from jobs.cli import main

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(ROWS[0]) + "\n{broken\n")
    spec = {
        "model": {"base": str(tiny_model_dir)},
        "data": {"train": [{"path": str(data)}], "max_seq_len": 128, "eval_split": 0.0, "max_dropped_fraction": 0.6},
        "train": {"eval_steps": None},
        "output": {"storage": str(tmp_path / "runs"), "name": "x"},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["data", "check", str(tmp_path / "spec.yaml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows_read"] == 2 and out["dropped"]["unparseable"]["examples"][0].startswith(f"{data}:2 (invalid JSON")
    spec["data"]["max_dropped_fraction"] = 0.1
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["data", "check", str(tmp_path / "spec.yaml")]) == 1
    captured = capsys.readouterr()
    assert "Rows: read 2, kept 1, dropped 1" in captured.out
    assert captured.err.startswith("rayfit: 1 of 2 rows dropped (50.0%), more than data.max_dropped_fraction 10.0%")
    assert "Traceback" not in captured.err


def test_json_variants_keep_line_numbers(tmp_path):
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text('{"data": [\n  {"text": "a"},\n  {"text": "b"}\n]}')
    assert [r.where for r in read_source(SourceSpec(path=str(wrapped))).records] == [f"{wrapped}:2", f"{wrapped}:3"]
    lines = tmp_path / "lines.json"
    lines.write_text('{"text": "a"}\n{"text": "b"}\n')
    assert [r.fields["text"] for r in read_source(SourceSpec(path=str(lines))).records] == ["a", "b"]
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"text": "a"},\n{"text": \n')
    rows = read_source(SourceSpec(path=str(broken)))
    assert [r.fields for r in rows.records] == [{"text": "a"}]
    assert rows.drops[0].reason == "unparseable" and rows.drops[0].where.startswith(f"{broken}:")
    multiline = tmp_path / "m.csv"
    multiline.write_text('instruction,output\n"two\nlines",x\nsecond,y\n')
    assert [r.where for r in read_source(SourceSpec(path=str(multiline))).records] == [f"{multiline}:2", f"{multiline}:4"]


def test_folder_of_shards_and_hub_sources(tmp_path):
    import pandas as pd

    shards = tmp_path / "shards"
    shards.mkdir()
    pd.DataFrame(ROWS[:4]).to_parquet(shards / "part-0.parquet")
    pd.DataFrame(ROWS[4:]).to_parquet(shards / "part-1.parquet")
    rows = read_source(SourceSpec(path=str(shards)))
    assert [r.fields for r in rows.records] == ROWS
    assert rows.records[4].where == f"{shards}/part-1.parquet:row 1"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="is a folder with no .jsonl, .ndjson, .json, .parquet, .csv files"):
        read_source(SourceSpec(path=str(tmp_path / "empty")))
    # A hub dataset id goes through datasets.load_dataset (a local folder works like a cached hub repo).
    hub = read_source(SourceSpec(path=f"hf:{shards}", split="train"))
    assert [r.fields for r in hub.records] == ROWS and hub.records[0].where == f"hf:{shards}:row 1"
    with pytest.raises(UserError, match=r"hf:nobody/absent-dataset.*offline \(HF_HUB_OFFLINE=1\) the dataset must already be"):
        read_source(SourceSpec(path="hf:nobody/absent-dataset", revision="v1"))


def test_mapping_spec_problems_name_the_field():
    from cluster.spec.base import SpecError

    with pytest.raises(SpecError) as e:
        make_spec([{"path": "x.jsonl", "fields": {"answer": "a"}, "name": "cfg"}], window_overlap=1024, max_seq_len=1024)
    text = str(e.value)
    assert "data.train.0.fields: unknown part 'answer'" in text and "data.train.0.name: name/revision apply to hf:" in text
    assert "data.window_overlap: window_overlap 1024 is not below half of max_seq_len 1024" in text


def test_mapped_keys_reach_the_report(tiny_tokenizer, tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("question,answer\nWhat is a permit?,A decision to build.\nHow long?\n")
    spec = make_spec(
        [{"path": str(path), "fields": {"prompt": "question", "completion": "answer"}}],
        max_seq_len=128,
        eval_split=0.0,
        max_dropped_fraction=1.0,
        near_duplicates=None,
    )
    report = check_data(spec, tiny_tokenizer)
    assert report.sources[0].format == "prompt_completion" and report.rows_kept == 1
    assert report.dropped["missing field"].examples == [f"{path}:3 (no 'answer' (mapped to completion by fields:))"]


@pytest.mark.slow
def test_parquet_folder_in_object_storage(object_store, tmp_path):
    """A folder of parquet shards in object storage (moto S3, GCS emulator) is read shard by shard, each row named by
    its shard."""
    import fsspec
    import pandas as pd

    root = object_store("rayfit-shards")
    for k, part in enumerate((ROWS[:3], ROWS[3:])):
        pd.DataFrame(part).to_parquet(tmp_path / f"part-{k}.parquet")
        with fsspec.open(f"{root}/faq/part-{k}.parquet", "wb") as f:
            f.write((tmp_path / f"part-{k}.parquet").read_bytes())
    rows = read_source(SourceSpec(path=f"{root}/faq"))
    assert [r.fields for r in rows.records] == ROWS
    assert rows.records[3].where == f"{root}/faq/part-1.parquet:row 1"
