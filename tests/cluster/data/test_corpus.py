"""The real-world corpus: one file per shape through `rayfit data check` with the demo spec, only data.train changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from jobs.cli import main
from tests.cluster.data.conftest import QWEN_TOOL_TEMPLATE

CORPUS = Path(__file__).parent / "corpus"
DEMO = Path(__file__).parents[3] / "jobs" / "specs" / "demo-cpu.yaml"
TRAINABLE = {
    "trl_language_modeling.jsonl": "text",
    "trl_prompt_completion.jsonl": "prompt_completion",
    "trl_conversational_prompt_completion.jsonl": "prompt_completion",
    "messages_role_content.jsonl": "messages",
    "conversations_role_content.jsonl": "sharegpt",
    "sharegpt_from_value.jsonl": "sharegpt",
    "alpaca.json": "alpaca",
    "openai_evals.jsonl": "openai_evals",
}
REFUSED = {
    "preference_explicit_prompt.jsonl": "shape preference",
    "preference_implicit_prompt.jsonl": "shape preference",
    "unpaired_preference_kto.jsonl": "shape unpaired_preference",
    "trl_prompt_only.jsonl": "shape prompt_only",
}


def demo_spec(tmp_path: Path, data_file: Path, data: dict | None = None, **model) -> str:
    """The demo spec with only data.train changed (and other data or model keys when given); returns its path."""
    spec = yaml.safe_load(DEMO.read_text())
    spec["data"].update({"train": [{"path": str(data_file)}], **(data or {})})
    spec["model"].update(model)
    spec["output"]["storage"] = str(tmp_path / "runs")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


@pytest.mark.parametrize("name", sorted(TRAINABLE))
def test_every_standard_shape_is_accepted_without_mapping(name, tmp_path, capsys):
    assert main(["data", "check", demo_spec(tmp_path, CORPUS / name), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    source = report["sources"][0]
    assert (source["format"], source["detected"]) == (TRAINABLE[name], True)
    assert source["rows_read"] == source["rows_kept"] == 10 and report["rows_dropped"] == 0
    assert any("few-shot prompting" in w for w in report["warnings"])  # 10 rows < 50


def test_tool_calls_need_a_tool_capable_template(tmp_path, capsys):
    path = CORPUS / "openai_chat_tools.jsonl"
    assert main(["data", "check", demo_spec(tmp_path, path)]) == 1  # SmolLM2's own template has no tool support
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "chat template has no tool support" in err and "Traceback" not in err
    # Qwen's tool preamble alone is ~200 tokens, so tool conversations need more than the demo's 256.
    spec = demo_spec(tmp_path, path, {"max_seq_len": 512}, chat_template=QWEN_TOOL_TEMPLATE)
    assert main(["data", "check", spec, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sources"][0]["format"] == "messages" and report["rows_kept"] == report["rows_read"] == 8


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_pair_shapes_are_named_with_the_fix(name, tmp_path, capsys):
    assert main(["data", "check", demo_spec(tmp_path, CORPUS / name)]) == 1
    err = capsys.readouterr().err
    assert REFUSED[name] in err and str(CORPUS / name) in err and "Traceback" not in err
    assert ("train.objective: dpo" in err) == (name != "trl_prompt_only.jsonl")
