"""serve.ask refuses bad input before starting Ray (the happy path is the README demo, run by hand and in CI docs)."""

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
