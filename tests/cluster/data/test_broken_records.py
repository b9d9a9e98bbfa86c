"""A corpus of broken records: every one is named with file:line and its reason, and nothing crashes."""

from __future__ import annotations

import json

from cluster.data import check_data
from tests.cluster.data.test_prepare import make_spec

GOOD = {"messages": [{"role": "user", "content": "What is a permit?"}, {"role": "assistant", "content": "A decision to build."}]}


def broken_corpus() -> bytes:
    """One good record per line between broken ones; line numbers are those in the expectations below."""
    lines = [
        json.dumps(GOOD),  # 1 ok
        b'{"messages": [{"role": "user", "content": "Hi"}, ',  # 2 bad JSON
        json.dumps({"messages": [{"content": "no role"}, {"role": "assistant", "content": "x y z"}]}),  # 3 missing key
        json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]}),  # 4 empty
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "user", "content": "Again"},
                    {"role": "assistant", "content": "Hello there"},
                ]
            }
        ),  # 5 user-user-assistant
        json.dumps(GOOD),  # 6 duplicate of 1
        b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "ok ok"}]}',  # 7 latin-1
        json.dumps({"messages": [{"role": "user", "content": "Only a question"}]}),  # 8 no assistant
        b"",  # 9 blank: not a row
        json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "fine answer"}]}),  # 10 ok
        b"[1, 2, 3]",  # 11 not an object
        json.dumps({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y y"}]}),  # 12 bad role
    ]
    return b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines)


def test_every_broken_record_is_named_with_its_line(tiny_tokenizer, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_bytes(broken_corpus())
    spec = make_spec([{"path": str(path)}], max_seq_len=256, eval_split=0.0, max_dropped_fraction=1.0)
    report = check_data(spec, tiny_tokenizer)
    found = {reason: [e.split(" (")[0] for e in ex.examples] for reason, ex in report.dropped.items()}
    p = str(path)
    assert found == {
        "unparseable": [f"{p}:2", f"{p}:11"],
        "missing field": [f"{p}:3"],
        "empty content": [f"{p}:4"],
        "wrong role order": [f"{p}:5"],
        "duplicate": [f"{p}:6"],
        "not utf-8": [f"{p}:7"],
        "no assistant turn": [f"{p}:8"],
        "unknown role": [f"{p}:12"],
    }
    assert report.dropped["duplicate"].examples == [f"{p}:6 (same as {p}:1)"]
    assert report.dropped["not utf-8"].examples == [f"{p}:7 (byte 0xe9 at column 47 is not UTF-8)"]
    assert "roles ['user', 'user', 'assistant']" in report.dropped["wrong role order"].examples[0]
    assert (report.rows_read, report.rows_kept, report.rows_dropped) == (11, 2, 9)
    table = report.to_table()
    for reason in found:
        assert reason in table
    assert f"{p}:7 (byte 0xe9" in table and json.loads(report.to_json())["dropped"]["unparseable"]["count"] == 2


def test_length_reasons_and_contamination(tiny_tokenizer, tmp_path):
    train, evalf = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    rows = [
        {"instruction": "Hi", "output": "Hello there"},
        {"instruction": "Long", "output": "word " * 300},
        {"instruction": "Short", "output": "k"},
    ]
    train.write_text("\n".join(json.dumps(r) for r in rows))
    evalf.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"instruction": "New", "output": "Unseen answer"}))
    spec = make_spec([{"path": str(train)}], eval=[{"path": str(evalf)}], max_seq_len=128, min_tokens=3, max_dropped_fraction=1.0)
    report = check_data(spec, tiny_tokenizer)
    assert report.dropped["too long"].examples[0].startswith(f"{train}:2 (")
    too_long = int(report.dropped["too long"].examples[0].split("(")[1].split(" ")[0])
    assert report.token_lengths["max"] == too_long > 128  # percentiles show what max_seq_len cut away
    assert report.dropped["too short"].examples[0] == f"{train}:3 (2 trained tokens < data.min_tokens 3)"
    assert report.contamination.count == 1 and report.contamination.examples == [f"{evalf}:1"]
    assert (report.train_samples, report.eval_samples, report.eval_from) == (1, 2, "sources")


def test_template_that_refuses_a_row_drops_it_and_no_template_is_a_user_error(tiny_tokenizer, tmp_path):
    import copy

    import pytest

    from cluster.errors import UserError

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        + tiny_tokenizer.chat_template
    )
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps(GOOD)
        + "\n"
        + json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    *GOOD["messages"][:1],
                    {"role": "assistant", "content": "Other"},
                ]
            }
        )
    )
    report = check_data(make_spec([{"path": str(path)}], max_seq_len=256, eval_split=0.0, max_dropped_fraction=1.0), tok)
    assert report.dropped["template error"].examples == [f"{path}:2 (TemplateError: System role not supported)"]
    assert report.rows_kept == 1
    tok.chat_template = None
    with pytest.raises(UserError, match="has no chat template, but the data has conversations"):
        check_data(make_spec([{"path": str(path)}], max_seq_len=256, eval_split=0.0), tok)
