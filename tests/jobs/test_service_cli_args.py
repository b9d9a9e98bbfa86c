"""The service client commands without a server: flags -> request bodies, the API's objects -> printed lines, and
an error answer -> one `rayfit:` line naming the parameter (the objects are the official client's own types)."""

from __future__ import annotations

import pytest
from openai.types import FileObject
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

from cluster.errors import UserError
from jobs.cli import build_parser, main
from jobs.cli._api import error_line
from jobs.cli._show import event_line, files_table, job_details, progress
from jobs.cli.jobs import create_body

SERVICE_COMMANDS = [
    ["files", "upload"],
    ["files", "list"],
    ["files", "rm"],
    ["jobs", "create"],
    ["jobs", "list"],
    ["jobs", "get"],
    ["jobs", "events"],
    ["jobs", "cancel"],
    ["jobs", "pause"],
    ["jobs", "resume"],
    ["jobs", "checkpoints"],
    ["models"],
    ["models", "rm"],
    ["aliases", "list"],
    ["aliases", "set"],
    ["aliases", "rollback"],
    ["aliases", "rm"],
]


@pytest.mark.parametrize("command", SERVICE_COMMANDS, ids=" ".join)
def test_every_service_command_has_help_with_an_example_and_the_endpoint_flags(command, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "example" in text and f"rayfit {' '.join(command)}" in text
    assert "--endpoint" in text and "--api-key-env" in text


def parse(*argv: str):
    return build_parser().parse_args(["jobs", "create", "--model", "base", "--training-file", "file-1", *argv])


def test_create_flags_become_openai_fields_and_the_rayfit_extension(tmp_path):
    override = tmp_path / "over.yaml"
    override.write_text("train:\n  max_steps: 40\n")
    args = parse(
        "--n-epochs", "3", "--batch-size", "auto", "--learning-rate-multiplier", "0.5",
        "--suffix", "faq", "--seed", "7", "--metadata", "team=support", "--metadata", "week=49",
        "--spec", str(override),
    )  # fmt: skip
    body = create_body(args)
    assert body == {
        "model": "base",
        "method": {
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 0.5}},
        },
        "suffix": "faq",
        "seed": 7,
        "metadata": {"team": "support", "week": "49"},
        "rayfit": {"spec": {"train": {"max_steps": 40}}},
    }
    dpo = create_body(parse("--method", "dpo", "--beta", "0.1"))
    assert dpo["method"] == {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}}
    grader = tmp_path / "grader.yaml"
    grader.write_text(
        "type: string_check\nname: exact\ninput: '{{sample.output_text}}'\nreference: '{{item.answer}}'\noperation: eq\n"
    )
    rft = create_body(parse("--method", "reinforcement", "--grader", str(grader), "--eval-interval", "5", "--batch-size", "2"))
    assert rft["method"] == {
        "type": "reinforcement",
        "reinforcement": {
            "hyperparameters": {"batch_size": 2, "eval_interval": 5},
            "grader": {
                "type": "string_check",
                "name": "exact",
                "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}",
                "operation": "eq",
            },
        },
    }


def test_bad_create_flags_are_refused_before_any_request(capsys):
    with pytest.raises(SystemExit) as e:
        parse("--n-epochs", "lots")
    assert e.value.code == 2
    assert "--n-epochs: expected 'auto' or a int, got 'lots'" in capsys.readouterr().err
    with pytest.raises(UserError, match="--beta is a DPO hyperparameter"):
        create_body(parse("--beta", "0.1"))
    with pytest.raises(UserError, match="--metadata 'team': expected KEY=VALUE"):
        create_body(parse("--metadata", "team"))
    with pytest.raises(UserError, match="--method reinforcement needs a grader. Fix: add --grader"):
        create_body(parse("--method", "reinforcement"))
    with pytest.raises(UserError, match="--eval-samples is for reinforcement fine-tuning. Fix: add --method reinforcement"):
        create_body(parse("--eval-samples", "8"))


def test_an_error_answer_is_one_line_naming_the_param():
    body = {
        "message": "training file has 2 bad lines:\n  line 3: not JSON\n  line 9: no messages",
        "type": "invalid_request_error",
        "param": "file",
        "code": "invalid_file",
    }
    line = error_line(400, body, "Error code: 400")
    assert line == "param file: training file has 2 bad lines: line 3: not JSON line 9: no messages (400, invalid_file)"
    assert error_line(404, {"message": "No such job: 'ftjob-x'.", "type": "invalid_request_error"}, "x") == (
        "No such job: 'ftjob-x'. (404, invalid_request_error)"
    )
    assert error_line(502, "Bad Gateway", "Error code: 502") == "Error code: 502 (502)"


def test_an_unreachable_endpoint_is_one_line_naming_the_fix(capsys):
    assert main(["files", "list", "--endpoint", "http://127.0.0.1:9/v1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("rayfit: cannot reach the service at http://127.0.0.1:9/v1")
    assert main(["files", "list", "--endpoint", "127.0.0.1:8000"]) == 1
    assert "is not an http(s) URL" in capsys.readouterr().err
    assert main(["files", "list", "--api-key-env", "RAYFIT_TEST_UNSET_KEY"]) == 1
    assert "RAYFIT_TEST_UNSET_KEY: that environment variable is not set" in capsys.readouterr().err


def test_metrics_events_print_as_progress_and_others_as_messages():
    metrics = FineTuningJobEvent.model_validate(
        {
            "id": "ftevent-2",
            "object": "fine_tuning.job.event",
            "created_at": 1764780677,
            "level": "info",
            "message": "Step 30/60: train_loss 3.117",
            "type": "metrics",
            "data": {"step": 30, "total_steps": 60, "train_loss": 3.11693, "learning_rate": 5.5e-4, "tokens_per_s": 123.4,
                     "eta_s": 117},
        }
    )  # fmt: skip
    assert event_line(metrics) == "16:51:17  step 30/60 (50%) | loss 3.1169 | lr 5.5e-04 | 123 tok/s | ETA 1:57"
    status = FineTuningJobEvent.model_validate(
        {"id": "ftevent-3", "object": "fine_tuning.job.event", "created_at": 1764780680, "level": "warn",
         "message": "Job failed: eval_regression", "type": "message"}
    )  # fmt: skip
    assert event_line(status) == "16:51:20  [warn] Job failed: eval_regression"
    plan = FineTuningJobEvent.model_validate({**status.model_dump(), "level": "info", "message": "Plan:\nmodel  tiny"})
    assert event_line(plan) == "16:51:20  Plan:\n          model  tiny"  # a block stays under its first line
    assert progress({"step": 5, "total_steps": None, "valid_loss": 2.0}) == "step 5/None | valid_loss 2.0000"


def test_files_and_jobs_print_their_fields():
    f = FileObject.model_validate(
        {"id": "file-abc", "object": "file", "bytes": 95648, "created_at": 1764780677, "filename": "faq.jsonl",
         "purpose": "fine-tune", "status": "processed"}
    )  # fmt: skip
    lines = files_table([f]).splitlines()
    assert lines[0].split() == ["ID", "FILENAME", "SIZE", "PURPOSE", "STATUS", "CREATED"]
    assert lines[1].split() == ["file-abc", "faq.jsonl", "93.4", "KiB", "fine-tune", "processed", "2025-12-03", "16:51:17"]
    job = FineTuningJob.model_validate(
        {
            "id": "ftjob-1", "object": "fine_tuning.job", "created_at": 1764780677, "model": "smollm2-135m-instruct",
            "organization_id": "default", "training_file": "file-abc", "validation_file": None, "status": "failed",
            "fine_tuned_model": None, "finished_at": 1764780777, "trained_tokens": None, "result_files": [], "seed": 3,
            "hyperparameters": {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 1.0},
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 8,
                                                                                 "learning_rate_multiplier": 1.0}}},
            "error": {"code": "eval_regression", "message": "ROUGE-L fell 0.16 -> 0.02", "param": None},
            "rayfit": {"ray_job_id": "ftjob-1-1"},
        }
    )  # fmt: skip
    shown = job_details(job)
    assert "hyperparameters   n_epochs=2, batch_size=8, learning_rate_multiplier=1.0" in shown
    assert "error             eval_regression: ROUGE-L fell 0.16 -> 0.02" in shown
    assert "rayfit.ray_job_id ftjob-1-1" in shown
    assert "fine_tuned_model" not in shown  # absent fields are left out, not printed as None


def test_the_demo_prints_both_answers_side_by_side():
    from jobs.cli.demo import side_by_side

    text = side_by_side("What is a bygglov?", "base", "A kind of boat.", "ft:base:faq:ftjob-1", "A building permit. " * 5, 30)
    lines = text.strip().splitlines()
    assert lines[0] == "Q: What is a bygglov?"
    assert lines[1] == ""
    assert lines[2].split(" | ") == ["base".ljust(30), "ft:base:faq:ftjob-1"]
    assert lines[4] == f"{'A kind of boat.':<30} | A building permit. A building"
    assert all(len(line.split(" | ")[0]) == 30 for line in lines[4:])  # the right column starts at one place
    assert " ".join(line.split(" | ")[1] for line in lines[4:]).split() == ("A building permit. " * 5).split()
