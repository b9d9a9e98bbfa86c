"""Distillation from an OpenAI-compatible teacher: the package's Serve app is the endpoint (real HTTP, the official
`openai` client), its answers become training records that the usual data report checks; a wrong key and an endpoint
that never answers are named, row by row, and the run stays bounded.

No engine starts here: the teacher is the Serve app's running engine, and Ray Data's teacher actors only wait on HTTP.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from cluster.data import check_data
from cluster.spec import validate_spec
from jobs.cli import main
from tests.serve.conftest import ADMIN_ENV, KEYS, client
from tests.serve.lora_fixtures import ANSWERS, QUESTION

SYSTEM = "You are a building-permit assistant."


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(["generate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def teacher_answer(url: str, question: str) -> tuple[str, str]:
    """What the Serve app answers as `alpha` told the system prompt, greedy, and why it ended: what a record holds."""
    reply = client(url, KEYS["admin"]).chat.completions.create(
        model="alpha",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        temperature=0,
        max_tokens=32,
    )
    return reply.choices[0].message.content, reply.choices[0].finish_reason


def test_teacher_answers_become_training_records_that_the_data_report_checks(tiny_app, lora_set, tmp_path, capsys):
    questions = [QUESTION, "Who are you, assistant?", QUESTION]  # the third repeats the first: a duplicate record
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in questions))
    out = tmp_path / "distilled.jsonl"
    code, stdout, stderr = run_cli(
        ["alpha", "--teacher-url", tiny_app, "--teacher-api-key-env", ADMIN_ENV, "--input", str(source)]
        + ["--output", str(out), "--system-prompt", SYSTEM, "--as-training-data", "--max-tokens", "32"],
        capsys,
    )
    assert code == 0, stderr
    rejected = tmp_path / "distilled.jsonl.rejected.jsonl"
    assert KEYS["admin"] not in stdout + stderr + out.read_text() + (rejected.read_text() if rejected.exists() else "")
    expected = [(i, q, *teacher_answer(tiny_app, q)) for i, q in enumerate(questions, 1)]
    assert expected[0][2] == ANSWERS["alpha"] and expected[0][3] == "stop"  # the adapter's answer, told SYSTEM too
    kept = [e for e in expected if e[3] == "stop"]  # an answer cut off at max_tokens is no training record
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records == [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a.strip()}], "source": f"{source}:{i}"}
        for i, q, a, _ in kept
    ]  # the teacher was told SYSTEM; the student's records are not
    if len(kept) < len(expected):
        assert json.loads(rejected.read_text())["rejected_because"].startswith("cut off at max_tokens")

    # The usual data report over the distilled rows: the repeated record dropped as a duplicate, and the eval file's
    # question found in train (contamination), named by file:line.
    (tmp_path / "eval.jsonl").write_text(json.dumps({"instruction": QUESTION, "output": ANSWERS["alpha"]}) + "\n")
    spec = validate_spec(
        {
            "model": {"base": str(lora_set["base"]), "method": "lora", "dtype": "float32"},
            "data": {
                "train": [{"path": str(out)}],
                "eval": [{"path": str(tmp_path / "eval.jsonl")}],
                "max_seq_len": 256,
                "max_dropped_fraction": 0.5,
                "num_proc": 1,
            },
            "output": {"storage": str(tmp_path / "runs"), "name": "distilled"},
        }
    )
    report = check_data(spec)
    assert report.sources[0].format == "messages" and report.sources[0].rows_read == len(records)
    assert report.dropped["duplicate"].examples[0].startswith(f"{out}:{len(records)}")
    assert report.contamination.count == 1 and str(out) in report.contamination_pairs.examples[0]


def test_a_teacher_that_refuses_the_key_stops_the_run_at_the_first_row_named(tiny_app, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAYFIT_TEST_WRONG_KEY", "sk-wrong-key-000")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(5)))
    code, stdout, stderr = run_cli(
        ["tiny", "--teacher-url", tiny_app, "--teacher-api-key-env", "RAYFIT_TEST_WRONG_KEY"]
        + ["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl"), "--block-rows", "1"],
        capsys,
    )
    assert code == 1 and "Traceback" not in stderr
    assert stderr.startswith(f"rayfit: teacher endpoint {tiny_app}: row {tmp_path / 'in.jsonl'}:")
    assert "was refused by the teacher endpoint: 401" in stderr and "Fix: export RAYFIT_TEST_WRONG_KEY" in stderr
    assert "sk-wrong-key-000" not in stdout + stderr
    assert not (tmp_path / "out.jsonl").exists()  # nothing pretends to be a finished output


@pytest.fixture
def silent_endpoint():
    """A TCP server on 127.0.0.1 that accepts connections and never answers (an endpoint that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def test_a_teacher_that_never_answers_fails_each_row_by_name_within_the_timeout(tiny_app, silent_endpoint, tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(4)))
    (tmp_path / "generate.yaml").write_text(
        f"teacher:\n  url: {silent_endpoint}\n  api_key_env: null\n  timeout_s: 1\n  max_retries: 0\n"
    )
    started = time.monotonic()
    code, stdout, stderr = run_cli(
        ["some-model", "--config", str(tmp_path / "generate.yaml"), "--input", str(tmp_path / "in.jsonl")]
        + ["--output", str(tmp_path / "out.jsonl")],
        capsys,
    )
    assert code == 0, stderr
    assert time.monotonic() - started < 60  # 4 rows in flight together, 1 s each: bounded by the timeout, not hung
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["where"] for r in rows] == [f"{tmp_path / 'in.jsonl'}:{i}" for i in (1, 2, 3, 4)]
    assert {r["error"] for r in rows} == {"the teacher endpoint did not answer within 1 s (1 tries)"}
    assert {r["finish_reason"] for r in rows} == {"error"} and "(4 failed)" in stdout
