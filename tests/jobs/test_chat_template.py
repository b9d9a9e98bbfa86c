"""The spec's `model.chat_template` reaches every rendering: training rows, eval rows and the exported (served) model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.jobs.test_finetune import _run

# Differs from the tiny model's ChatML on purpose: no default system turn, "role: " headers.
SPEC_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + ': ' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant: ' }}{% endif %}"
)


def _conversations(n: int) -> list[list[dict]]:
    return [
        [
            {"role": "user", "content": f"How long does permit number {i} take to process?"},
            {"role": "assistant", "content": f"Permit {i} takes about {i % 7 + 2} weeks once the file is complete."},
        ]
        for i in range(n)
    ]


def _without_template(src: Path, dest: Path) -> Path:
    """A copy of a model folder whose tokenizer has no chat template at all."""
    shutil.copytree(src, dest)
    (dest / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((dest / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (dest / "tokenizer_config.json").write_text(json.dumps(config))
    return dest


def _expected_ids(model_dir: Path, conversations: list[list[dict]]) -> set[tuple[int, ...]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = SPEC_TEMPLATE
    return {tuple(tok.apply_chat_template(c, tokenize=True, return_dict=False)) for c in conversations}


def _rows(path: Path) -> set[tuple[int, ...]]:
    from datasets import load_from_disk

    return {tuple(ids) for ids in load_from_disk(str(path))["input_ids"]}


@pytest.mark.slow
def test_spec_template_renders_training_eval_and_served_prompts_when_the_base_has_none(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    base = _without_template(tiny_model_dir, tmp_path / "base")
    assert AutoTokenizer.from_pretrained(base).chat_template is None
    conversations = _conversations(40)
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations))
    spec = {
        "model": {"base": str(base), "method": "lora", "dtype": "float32", "chat_template": SPEC_TEMPLATE},
        "data": {"train": [{"path": str(data)}], "eval_split": 0.1, "max_seq_len": 128, "packing": False, "dedupe": False},
        "train": {
            "max_steps": 2,
            "learning_rate": 1e-3,
            "warmup_steps": 0,
            "gradient_checkpointing": False,
            "logging_steps": 1,
            "eval_steps": 2,
            "save_steps": 2,
        },
        "cluster": {"num_workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 1},
        "output": {"storage": str(tmp_path / "runs"), "name": "templated"},
        "merge": {"enabled": True},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = _run(path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    expected = _expected_ids(base, conversations)
    prepared = next(p for p in (tmp_path / "runs" / "templated" / "data").iterdir() if (p / "train").is_dir())
    train, held_out = _rows(prepared / "train"), _rows(prepared / "eval")
    assert train and held_out and train | held_out <= expected and len(train | held_out) == len(expected)
    export = AutoTokenizer.from_pretrained(tmp_path / "runs" / "templated" / "export")  # what vLLM reads when serving
    prompt = [{"role": "user", "content": "Do I need a permit for a shed?"}]
    spec_tok = AutoTokenizer.from_pretrained(base)
    spec_tok.chat_template = SPEC_TEMPLATE
    assert export.apply_chat_template(
        prompt, add_generation_prompt=True, tokenize=True, return_dict=False
    ) == spec_tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)


def test_spec_template_overrides_the_base_template_in_prepared_rows(tiny_model_dir, tmp_path):
    from cluster.data import prepare_datasets
    from cluster.model.load import load_tokenizer
    from cluster.spec import validate_spec

    conversations = _conversations(12)
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations))
    spec = validate_spec(
        {
            "model": {"base": str(tiny_model_dir), "chat_template": SPEC_TEMPLATE},
            "data": {"train": [{"path": str(data)}], "eval_split": 0.0, "max_seq_len": 128, "packing": False},
            "output": {"storage": str(tmp_path / "runs"), "name": "r"},
            "evaluate": {"enabled": False},
            "train": {"eval_steps": None},
        }
    )
    prepared = prepare_datasets(spec, load_tokenizer(spec), str(tmp_path / "cache"))
    assert _rows(Path(prepared.train_path)) == _expected_ids(tiny_model_dir, conversations)
