"""Serve args read from a YAML file go through the job spec's reader and validation: lines, duplicates, bombs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.spec.base import SpecError
from serve.args import load_args

BOMB = Path(__file__).parents[1] / "cluster" / "spec_corpus" / "alias_bomb.yaml"


def test_a_good_file_gives_the_args(tmp_path):
    path = tmp_path / "args.yaml"
    path.write_text("model: embedded:smollm2-135m-instruct\nadapters:\n  faq: /runs/faq/checkpoint_00000004\n")
    args = load_args(path)
    assert args.adapters == {"faq": "/runs/faq/checkpoint_00000004"} and args.trust_remote_code is False


def test_problems_name_their_lines_like_a_job_spec(tmp_path):
    path = tmp_path / "args.yaml"
    path.write_text("model: m\nmax_ongoing_requests: 0\nadapter:\n  faq: /x\n")
    with pytest.raises(SpecError) as e:
        load_args(path)
    text = str(e.value)
    assert "max_ongoing_requests (line 2): Input should be greater than or equal to 1 (got 0)" in text
    assert "adapter (line 3): unknown key 'adapter'. Fix: did you mean 'adapters'?" in text


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("model: a\nmodel: b\n", "model (line 2): key 'model' is given twice, on lines 1 and 2"),
        (None, "once its 28 aliases (*name) are expanded"),
        (b"model: caf\xe9\n", "byte 10 (line 1) is not UTF-8"),
    ],
)
def test_hostile_files_are_refused_in_one_line(tmp_path, content, needle):
    path = tmp_path / "args.yaml"
    path.write_bytes(BOMB.read_bytes() if content is None else content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SpecError) as e:
        load_args(path)
    assert needle in str(e.value) and "\n" not in str(e.value)
