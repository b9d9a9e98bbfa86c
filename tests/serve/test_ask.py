"""serve.ask refuses bad input before starting Ray, and fills sampling defaults the model leaves unset (the happy path
is `make demo`)."""

from __future__ import annotations

import pytest

from serve.ask import main


def test_missing_model_and_adapter_fail_in_one_line(capsys, tmp_path):
    assert main([str(tmp_path / "nope"), "hi"]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert main([str(tmp_path), "hi", "--adapter", f"x={tmp_path}"]) == 1
    assert "has neither manifest.json nor adapter_config.json" in capsys.readouterr().err


def test_adapter_flag_needs_name_and_uri():
    with pytest.raises(SystemExit) as e:
        main(["m", "hi", "--adapter", "just-a-path"])
    assert e.value.code == 2


def test_sampling_defaults_fill_only_what_generation_config_leaves_unset(tmp_path):
    from serve.ask import SAMPLING, sampling_defaults

    assert sampling_defaults(tmp_path) == SAMPLING  # no generation_config.json
    (tmp_path / "generation_config.json").write_text('{"temperature": 0.7, "top_p": 0.8, "eos_token_id": 2}')
    assert sampling_defaults(tmp_path) == {"repetition_penalty": SAMPLING["repetition_penalty"]}
