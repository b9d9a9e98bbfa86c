"""The laptop side: `rayfit files|jobs|models|aliases` against the real app (real Ray head and job server, vLLM,
the tiny model), endpoint and key from the environment as a user sets them.

Slow (about 3 min on a 2-core machine, most of it the Ray job training 60 LoRA steps), sharing the session's service.
"""

from __future__ import annotations

import re

import pytest

from jobs.cli import main
from tests.service.conftest import ANSWER, KEYS, ask, client, training_rows

pytestmark = pytest.mark.slow


@pytest.fixture
def rayfit(service, monkeypatch, capsys):
    """Run one `rayfit` command as tenant b (RAYFIT_BASE_URL / RAYFIT_API_KEY); returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("RAYFIT_BASE_URL", service["url"])
    monkeypatch.setenv("RAYFIT_API_KEY", KEYS["tenant_b"])

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_files_jobs_models_and_aliases_through_the_cli(rayfit, service, tmp_path, monkeypatch):
    data = tmp_path / "faq.jsonl"
    data.write_text(training_rows())

    code, out, _ = rayfit("files", "upload", str(data))
    assert code == 0
    file_id = out.splitlines()[1].split()[0]
    assert file_id.startswith("file-") and "faq.jsonl" in out and "processed" in out
    code, out, _ = rayfit("files", "list")
    assert code == 0 and file_id in out

    # An API error: one `rayfit:` line naming the parameter, exit 1, nothing created.
    code, out, err = rayfit("jobs", "create", "--model", "no-such-base", "--training-file", file_id)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("rayfit: param model: model 'no-such-base' cannot be fine-tuned here")
    code, out, _ = rayfit("jobs", "list")
    assert code == 0 and out.strip() == "(none)"

    code, out, err = rayfit("jobs", "create", "--model", "tiny", "--training-file", file_id, "--suffix", "cli", "--follow")
    assert code == 0, err
    job_id = re.search(r"^id\s+(ftjob-\S+)$", out, re.M).group(1)
    model = f"ft:tiny:cli:{job_id}"
    assert f"rayfit: {job_id} succeeded: {model}" in err
    progress = [line for line in out.splitlines() if re.search(r"  step \d+/60 \(\d+%\) \| loss [\d.]+", line)]
    assert len(progress) >= 12, out  # a line every 5 steps
    losses = [float(re.search(r"loss ([\d.]+)", line).group(1)) for line in progress]
    assert losses[-1] < losses[0]
    lines = out.splitlines()
    assert lines.index(progress[0]) < next(i for i, line in enumerate(lines) if "Job succeeded" in line)

    code, out, _ = rayfit("jobs", "get", job_id)
    assert code == 0 and re.search(r"^status\s+succeeded$", out, re.M) and re.search(rf"^fine_tuned_model\s+{model}$", out, re.M)
    code, out, _ = rayfit("jobs", "events", job_id)
    assert code == 0 and out.index("Created fine-tuning job") < out.index("step 60/60") < out.index("Job succeeded")
    code, out, _ = rayfit("jobs", "checkpoints", job_id)
    assert code == 0 and f"{model}:ckpt-step-30" in out and f"{model}:ckpt-step-60" in out

    code, out, _ = rayfit("models")
    row = next(line for line in out.splitlines() if line.startswith(model))
    assert row.split()[1:3] == ["tiny", "tenant_b"]

    # An alias: set, repoint to a checkpoint, roll back; clients call the alias by name.
    code, out, _ = rayfit("aliases", "set", "bot", model)
    assert code == 0 and out.strip() == f"bot -> {model}"
    code, out, _ = rayfit("aliases", "set", "bot", f"{model}:ckpt-step-30")
    assert code == 0 and out.strip() == f"bot -> {model}:ckpt-step-30 (previous: {model})"
    code, out, _ = rayfit("aliases", "rollback", "bot")
    assert code == 0 and out.strip().startswith(f"bot -> {model} ")
    code, out, _ = rayfit("aliases", "list")
    assert code == 0 and re.search(rf"^bot\s+{re.escape(model)}\s", out, re.M)
    assert ANSWER in ask(client(service["url"], "tenant_b"), "bot")
    code, out, err = rayfit("aliases", "rollback", "nobody")
    assert code == 1 and err.startswith("rayfit: No such alias: 'nobody'.") and err.count("\n") == 1

    # Tenant a, its key in another variable (--api-key-env), sees none of it: 404s.
    monkeypatch.setenv("RAYFIT_TEST_KEY_A", KEYS["tenant_a"])
    code, _, err = rayfit("jobs", "get", job_id, "--api-key-env", "RAYFIT_TEST_KEY_A")
    assert code == 1 and err.startswith(f"rayfit: No such job: '{job_id}'. (404")
    code, out, _ = rayfit("models", "list", "--api-key-env", "RAYFIT_TEST_KEY_A")
    assert code == 0 and model not in out

    code, out, _ = rayfit("aliases", "rm", "bot")
    assert code == 0 and out.strip() == "deleted alias bot"
    code, out, _ = rayfit("models", "rm", model)
    assert code == 0 and out.strip() == f"deleted {model}"
    code, out, _ = rayfit("models")
    assert model not in out
    code, out, _ = rayfit("files", "rm", file_id)
    assert code == 0 and out.strip() == f"deleted {file_id}"
