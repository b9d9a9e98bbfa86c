"""The job spec: defaults, strictness, cross-field rules, and every problem reported at once with its line."""

from __future__ import annotations

import pytest

from cluster.spec import JobSpec, SpecError, load_spec, validate_spec


def minimal(**over) -> dict:
    spec = {
        "model": {"base": "embedded:smollm2-135m-instruct"},
        "data": {"train": [{"path": "embedded:construction-faq"}]},
        "output": {"name": "t"},
    }
    for key, value in over.items():
        spec[key] = {**spec.get(key, {}), **value}
    return spec


def fields(err: SpecError) -> list[str]:
    return sorted(p.field for p in err.problems)


def test_minimal_spec_fills_defaults_from_the_schema():
    spec = validate_spec(minimal())
    assert spec.model.method == "lora" and spec.model.lora.target_modules == "all-linear"
    assert spec.model.trust_remote_code is False
    assert spec.data.packing is True and spec.cluster.sharding == "ddp"
    assert spec.output.storage == "~/rayfit-runs"


def test_every_field_has_a_description():
    def walk(cls, path):
        for name, field in cls.model_fields.items():
            assert field.description, f"{path}{name} has no description"
            sub = field.annotation
            for cand in (sub, *getattr(sub, "__args__", ())):
                if isinstance(cand, type) and hasattr(cand, "model_fields"):
                    walk(cand, f"{path}{name}.")

    walk(JobSpec, "")


def test_three_mistakes_are_reported_together_with_lines(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "model:\n  base: embedded:smollm2-135m-instruct\n  method: full\n  lora:\n    r: 8\n"
        "data:\n  train:\n    - path: embedded:construction-faq\n  max_seq_len: lots\n"
        "train:\n  epochz: 2\noutput:\n  name: demo\n"
    )
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    err = exc.value
    assert fields(err) == ["data.max_seq_len", "model.lora", "train.epochz"]
    by_field = {p.field: p for p in err.problems}
    assert by_field["train.epochz"].line == 11 and "did you mean 'epochs'" in by_field["train.epochz"].fix
    assert by_field["data.max_seq_len"].line == 9
    assert by_field["model.lora"].line == 4 and "method" in by_field["model.lora"].fix
    assert str(path) in str(err)


def test_cross_section_rule_runs_even_when_another_section_is_invalid():
    bad = minimal(
        model={"method": "qlora", "quantization": {"storage_dtype": "uint8"}},
        cluster={"sharding": "deepspeed_zero3"},
        train={"learning_rate": "fast"},
    )
    with pytest.raises(SpecError) as exc:
        validate_spec(bad)
    assert fields(exc.value) == ["model.quantization.storage_dtype", "train.learning_rate"]


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"model": {"method": "lora", "quantization": {"quant_type": "nf4"}}}, "model.quantization"),
        ({"cluster": {"offload_params": True, "sharding": "deepspeed_zero2"}}, "cluster.offload_params"),
        ({"cluster": {"offload_optimizer": True}}, "cluster.offload_optimizer"),
        ({"train": {"warmup_steps": 5, "warmup_ratio": 0.1}}, "train.warmup_steps"),
        ({"train": {"early_stopping_patience": 2, "eval_steps": None}}, "train.early_stopping_patience"),
        ({"data": {"eval_split": 0.0}, "evaluate": {"enabled": True}, "train": {"eval_steps": None}}, "evaluate.enabled"),
        ({"data": {"eval": [{"path": "x.jsonl"}], "eval_split": 0.1}}, "data.eval_split"),
        ({"data": {"train": [{"path": "embedded:nope"}]}}, "data.train.0.path"),
        ({"model": {"base": "embedded:gpt-5"}}, "model.base"),
        ({"output": {"name": "has space"}}, "output.name"),
        ({"model": {"lora": {"target_modules": []}}}, "model.lora.target_modules"),
    ],
)
def test_each_rule_names_its_field(over, field):
    with pytest.raises(SpecError) as exc:
        validate_spec(minimal(**over))
    assert field in fields(exc.value)
    assert all(p.fix for p in exc.value.problems)


def test_spec_round_trips_through_a_plain_dict():
    spec = validate_spec(minimal(model={"method": "qlora"}))
    again = validate_spec(spec.model_dump())
    assert again == spec


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  base: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML") as exc:
        load_spec(path)
    assert exc.value.problems[0].line is not None


def test_missing_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
