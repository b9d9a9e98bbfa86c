"""evaluate_run on a real tiny run: base vs tuned side by side, files written, and a gate that fails the job."""

from __future__ import annotations

import json
import shutil

import pytest

from cluster.data import prepare_datasets
from cluster.errors import UserError
from cluster.evaluation import evaluate_run
from cluster.manifest import write_manifest
from cluster.merge import merge_checkpoint
from cluster.model.load import load_tokenizer
from cluster.spec import JobSpec
from tests.cluster.evaluation.runs import train_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    storage = tmp_path_factory.mktemp("storage")
    spec, ckpt = train_run(tiny_model_dir, storage, max_regression=0.0)
    return {"spec": JobSpec.model_validate(spec), "ckpt": ckpt, "export": merge_checkpoint(str(ckpt)), "storage": storage}


def test_tuned_beats_base_and_the_report_shows_both(run):
    out = run["storage"] / "eval-run" / "eval"
    report = evaluate_run(run["spec"], run["export"], str(out))
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "chart.png"}
    assert json.loads((out / "report.json").read_text()) == report
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    base, tuned = report["base"], report["tuned"]
    assert tuned["eval_loss"] < base["eval_loss"] - 0.1  # 30 LoRA steps: 6.26 -> 6.08 here
    assert base["eval_loss"] == pytest.approx(6.2, abs=0.3)  # a random 512-token model: about ln(512)
    for side in (base, tuned):
        assert side["eval_tokens"] > 100 and side["perplexity"] > 1
        assert 0.0 <= side["rouge_l"] <= 1.0 and 0.0 <= side["bleu"] <= 100.0 and side["exact_match"] == 0.0
        assert side["format_compliance"] is None  # the spec sets no format
    assert report["generation_samples"] == 4 and len(report["samples"]) == 2
    sample = report["samples"][0]
    assert sample["prompt"].endswith("<|im_start|>assistant\n") and sample["reference"]
    assert report["gate"] == {
        "metric": "eval_loss",
        "max_regression": 0.0,
        "worse_by": pytest.approx((tuned["eval_loss"] - base["eval_loss"]) / base["eval_loss"]),
        "passed": True,
    }
    md = (out / "report.md").read_text()
    assert "| eval loss | " in md and "better" in md and "## Sample 2" in md and "**passed**" in md
    # counted in samples, the unit the data report gave, not in packed rows (issue 21: "9 held-out rows" for 26)
    held = prepare_datasets(run["spec"], load_tokenizer(run["spec"]), str(run["storage"] / "eval-run" / "data")).report
    assert report["eval_samples"] == held.eval_samples >= report["eval_rows"], (held.eval_samples, report["eval_rows"])
    assert f"on {held.eval_samples} held-out samples" in md  # 22 here: the tiny tokenizer's samples fill a row each


def test_a_checkpoint_evaluates_like_its_export(run, tmp_path):
    from_ckpt = evaluate_run(run["spec"], str(run["ckpt"]), str(tmp_path / "ckpt-eval"))
    from_export = evaluate_run(run["spec"], run["export"], str(tmp_path / "export-eval"))
    assert from_ckpt["tuned"]["eval_loss"] == pytest.approx(from_export["tuned"]["eval_loss"], abs=1e-4)
    assert [s["tuned"] for s in from_ckpt["samples"]] == [s["tuned"] for s in from_export["samples"]]


def test_gate_fails_when_tuned_is_worse_and_still_writes_the_report(run, tiny_model_dir, tmp_path):
    # The trained export plays "base" and the untrained tiny model plays "tuned": tuned is clearly worse.
    untrained = tmp_path / "untrained"
    shutil.copytree(tiny_model_dir, untrained)
    write_manifest(untrained, "export", spec=run["spec"].model_dump(), method="lora")
    spec = run["spec"].model_copy(update={"model": run["spec"].model.model_copy(update={"base": run["export"]})})
    with pytest.raises(UserError, match=r"gate failed: tuned eval_loss is worse than base by \d+\.\d%.*max_regression 0.0"):
        evaluate_run(spec, str(untrained), str(tmp_path / "eval"), cache_dir=str(run["storage"] / "eval-run" / "data"))
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["gate"]["passed"] is False and "**FAILED**" in (tmp_path / "eval" / "report.md").read_text()
