"""`rayfit generate` refuses bad settings and inputs with one named message, before Ray or an engine starts."""

from __future__ import annotations

import json

import pytest

from cluster.errors import UserError
from cluster.generation.settings import GenerateSettings, load_settings
from cluster.spec.base import SpecError
from jobs.cli import main

BASE = {"model": "m", "input": "in.jsonl", "output": "out.jsonl"}


def test_n_zero_and_an_unknown_sampling_field_are_named_with_their_fix(tmp_path):
    config = tmp_path / "generate.yaml"
    config.write_text("model: m\ninput: in.jsonl\noutput: out.jsonl\nn: 0\nsampling:\n  temprature: 0.5\n")
    with pytest.raises(SpecError) as e:
        load_settings(str(config), {}, [])
    message = str(e.value)
    assert "2 problems" in message
    assert "n (line 4): Input should be greater than or equal to 1" in message
    assert "sampling.temprature (line 6): unknown key 'temprature'" in message and "did you mean 'temperature'" in message


def test_flags_win_over_the_file_and_sampling_flags_are_typed(tmp_path):
    config = tmp_path / "generate.yaml"
    config.write_text("model: m\ninput: in.jsonl\noutput: out.jsonl\nn: 2\nsampling: {temperature: 0.2}\n")
    settings = load_settings(str(config), {"n": 3, "max_tokens": None}, ["temperature=0.7", "seed=5", "stop=[a, b]"])
    assert settings.n == 3 and settings.max_tokens == 256
    assert settings.sampling.vllm_params(10, 1) == {
        "temperature": 0.7,
        "top_p": 1.0,
        "top_k": 0,
        "repetition_penalty": 1.0,
        "ignore_eos": False,
        "max_tokens": 10,
        "seed": 6,
        "stop": ["a", "b"],
    }
    with pytest.raises(SpecError, match="sampling.best_of: unknown key"):
        load_settings(None, BASE, ["best_of=2"])


def test_output_must_be_jsonl_or_parquet():
    with pytest.raises(SpecError, match=r"output: 'out.csv' is neither .jsonl nor .parquet. Fix: name the output"):
        load_settings(None, BASE | {"output": "out.csv"}, [])
    assert GenerateSettings(**BASE | {"output": "s3://b/x.PARQUET"}).output_kind() == "parquet"


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(["generate", *argv])
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def test_a_missing_input_file_is_named(tiny_model_dir, tmp_path, capsys):
    code, text = run_cli(
        [str(tiny_model_dir), "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o.jsonl")], capsys
    )
    assert code == 1 and text.startswith(f"rayfit: data source '{tmp_path / 'nope.jsonl'}' does not exist. Fix:")
    assert "Traceback" not in text


def test_a_missing_model_is_named(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text(json.dumps({"prompt": "hi"}) + "\n")
    code, text = run_cli(
        [str(tmp_path / "no-model"), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "o.jsonl")], capsys
    )
    assert code == 1 and f"'{tmp_path / 'no-model'}': no such folder" in text and "Fix:" in text
    assert "Traceback" not in text


def test_an_unwritable_output_is_refused_before_anything_else_is_looked_at(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "a-file" / "out.jsonl"  # its parent is a file: nothing can be written there
    code, text = run_cli(["no-such-model", "--input", "no-such-input.jsonl", "--output", str(out)], capsys)
    assert code == 1 and text.startswith(f"rayfit: output '{out}' cannot be written") and "Fix:" in text
    assert "Traceback" not in text


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "rayfit generate embedded:smollm2-135m-instruct --input" in capsys.readouterr().out


def test_blocks_of_another_job_are_not_mixed_in(tmp_path):
    from cluster.generation.writer import BlockWriter

    out = str(tmp_path / "o.jsonl")
    BlockWriter(out, "jsonl", 10, {"model": "a"}).finished()
    with pytest.raises(UserError, match=r"holds blocks of another generation job \(it differs in model\)"):
        BlockWriter(out, "jsonl", 10, {"model": "b"}).finished()


def test_engines_are_eager_on_cpu_and_compiled_on_gpus_unless_told():
    """enforce_eager's auto (null): eager on CPU replicas, where torch.compile's start costs more than it saves at
    the sizes measured (benchmarks/results/generate_sweep.json), vLLM's compiled default on GPUs; a value given wins,
    from the file or the flags (--enforce-eager / --no-enforce-eager)."""
    from cluster.generation.engine import engine_kwargs
    from jobs.cli import build_parser

    assert engine_kwargs(GenerateSettings(**BASE), [])["enforce_eager"] is True
    assert engine_kwargs(GenerateSettings(**BASE, gpus_per_replica=1), [])["enforce_eager"] is False
    assert engine_kwargs(GenerateSettings(**BASE, enforce_eager=False), [])["enforce_eager"] is False
    assert engine_kwargs(GenerateSettings(**BASE, gpus_per_replica=1, enforce_eager=True), [])["enforce_eager"] is True
    parse = build_parser().parse_args
    assert parse(["generate", "m", "--input", "i.jsonl", "--output", "o.jsonl"]).enforce_eager is None
    assert parse(["generate", "m", "--input", "i.jsonl", "--output", "o.jsonl", "--no-enforce-eager"]).enforce_eager is False


def test_max_num_seqs_is_256_on_cpu_and_vllms_own_on_gpus_with_batches_to_fill_it():
    """max_num_seqs' auto (null): 256 on CPU replicas (the fastest measured there), left to vLLM on GPUs (1024 on
    70 GB+ GPUs), where Ray Data then keeps enough batches in flight to fill the engine; CPU keeps Ray's 8."""
    from cluster.generation.engine import batches_in_flight, engine_kwargs

    assert engine_kwargs(GenerateSettings(**BASE), [])["max_num_seqs"] == 256
    assert "max_num_seqs" not in engine_kwargs(GenerateSettings(**BASE, gpus_per_replica=1), [])
    assert engine_kwargs(GenerateSettings(**BASE, gpus_per_replica=1, max_num_seqs=64), [])["max_num_seqs"] == 64
    assert batches_in_flight(GenerateSettings(**BASE)) == 8
    assert batches_in_flight(GenerateSettings(**BASE, batch_size=1)) == 8
    assert batches_in_flight(GenerateSettings(**BASE, gpus_per_replica=1)) == 32  # 1024 sequences / 32 rows
    assert batches_in_flight(GenerateSettings(**BASE, gpus_per_replica=1, max_num_seqs=64, batch_size=32)) == 8
