"""Fast tests: collator, DeepSpeed configs, checkpoint discovery and the training rules of the spec."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from cluster.manifest import MANIFEST
from cluster.run_folder import CheckpointInfo, best, checkpoint_dir_name, checkpoints, newest
from cluster.spec import SpecError, validate_spec
from cluster.training.checkpoints import latest_metrics
from cluster.training.collator import IGNORE, make_collator
from cluster.training.deepspeed_config import deepspeed_config
from tests.conftest import REPO


def _spec(**sections):
    base = {
        "model": {"base": "org/model", "method": "full", "dtype": "bfloat16"},
        "data": {"train": [{"path": "data.jsonl"}]},
        "output": {"name": "run"},
    }
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return validate_spec(base)


def test_packed_rows_become_one_padding_free_row(tiny_model_dir):
    from transformers import AutoTokenizer

    collate = make_collator(AutoTokenizer.from_pretrained(tiny_model_dir))
    rows = [
        {"input_ids": [5, 6, 7, 8], "labels": [5, 6, 7, 8], "position_ids": [0, 1, 0, 1]},
        {"input_ids": [9, 10], "labels": [-100, 10], "position_ids": [0, 1]},
    ]
    batch = collate(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10]]
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1, 0, 1]]
    # no sample is trained to predict the first token of the next one
    assert batch["labels"].tolist() == [[IGNORE, 6, IGNORE, 8, IGNORE, 10]]
    assert "attention_mask" not in batch


def test_unpacked_rows_are_padded_and_masked(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pad = tok.pad_token_id
    batch = make_collator(tok)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, pad, pad]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["input_ids"].dtype == torch.long


def test_no_deepspeed_means_no_config():
    assert deepspeed_config(_spec(), world_size=2, on_gpu=True) is None


def test_zero3_with_offload_on_gpu():
    spec = _spec(
        cluster={"sharding": "deepspeed_zero3", "offload_optimizer": True, "offload_params": True},
        train={"micro_batch_size": 2, "gradient_accumulation_steps": 4, "max_grad_norm": 0.5},
    )
    cfg = deepspeed_config(spec, world_size=8, on_gpu=True)
    assert cfg["train_batch_size"] == 64 and cfg["train_micro_batch_size_per_gpu"] == 2
    assert cfg["gradient_accumulation_steps"] == 4 and cfg["gradient_clipping"] == 0.5
    assert cfg["bf16"] == {"enabled": True} and cfg["fp16"] == {"enabled": False}
    zero = cfg["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert zero["offload_param"] == {"device": "cpu", "pin_memory": True}
    assert "auto" not in json.dumps(cfg)  # zero.Init cannot resolve "auto" before the Trainer exists


def test_zero2_on_cpu_trains_in_fp32():
    cfg = deepspeed_config(_spec(cluster={"sharding": "deepspeed_zero2", "gpus_per_worker": 0}), world_size=2, on_gpu=False)
    assert cfg["zero_optimization"]["stage"] == 2 and "offload_param" not in cfg["zero_optimization"]
    assert cfg["bf16"] == {"enabled": False} and cfg["fp16"] == {"enabled": False}


def test_deepspeed_is_imported_without_mlflow_which_still_imports_after():
    """A fresh interpreter (this one may hold both already): the worker's DeepSpeed import leaves mlflow out, its
    autotuner knows it has none, and the `report_to: [mlflow]` callback can still import mlflow afterwards."""
    pytest.importorskip("mlflow")
    code = (
        "import sys; from cluster.training.deepspeed_config import import_deepspeed; import_deepspeed()\n"
        "from deepspeed.autotuning import autotuner\n"
        "print('deepspeed' in sys.modules, 'mlflow' in sys.modules, autotuner.has_mlflow)\n"
        "import mlflow; print(mlflow.__name__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-2:] == ["True False False", "mlflow"]  # after DeepSpeed's accelerator notice


def test_the_job_driver_does_not_import_the_training_stack():
    """The finetune job's driver builds the TorchTrainer without importing TRL, PEFT, bitsandbytes or DeepSpeed
    (seconds of CPU per job): only the workers do, when they run `worker_loop`."""
    code = (
        "import sys, jobs.finetune; from cluster.training.trainer import fit, worker_loop; "
        "import cluster.data, cluster.planner, cluster.tasks, cluster.model.load\n"
        "print(sorted(m for m in ('trl', 'peft', 'bitsandbytes', 'deepspeed', 'cluster.training.loop') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "[]"


def test_newest_complete_skips_folders_without_manifest(tmp_path):
    run = tmp_path / "run"
    for step, complete in ((5, True), (10, True), (15, False)):
        folder = run / checkpoint_dir_name(step)
        folder.mkdir(parents=True)
        if complete:
            (folder / MANIFEST).write_text('{"files": {}}')
    (run / "checkpoint_garbage").mkdir()
    assert newest(checkpoints(str(run))).uri == str(run / "checkpoint_00000010")
    assert newest(checkpoints(str(tmp_path / "missing"))) is None


def test_checkpoint_names_sort_by_step():
    assert sorted([checkpoint_dir_name(100), checkpoint_dir_name(20)]) == ["checkpoint_00000020", "checkpoint_00000100"]


def test_latest_metrics_keeps_the_newest_numbers():
    history = [{"loss": 2.0, "step": 1}, {"eval_loss": 1.5, "step": 1}, {"loss": 1.0, "step": 2, "note": "x"}]
    assert latest_metrics(history) == {"loss": 1.0, "train_loss": 1.0, "eval_loss": 1.5, "step": 2.0}


def test_qlora_with_zero3_needs_its_4bit_storage_in_the_model_dtype():
    assert _spec(model={"method": "qlora"}, cluster={"sharding": "deepspeed_zero3"}).model.quantization.storage_dtype is None
    with pytest.raises(SpecError, match=r"model\.quantization\.storage_dtype: deepspeed_zero3 splits and gathers the packed"):
        _spec(model={"method": "qlora", "quantization": {"storage_dtype": "uint8"}}, cluster={"sharding": "deepspeed_zero3"})


def test_save_steps_must_be_a_multiple_of_eval_steps():
    with pytest.raises(SpecError, match=r"train\.save_steps: save_steps \(50\) is not a multiple of eval_steps \(20\)"):
        _spec(train={"eval_steps": 20, "save_steps": 50})
    assert _spec(train={"eval_steps": None, "save_steps": 50}).train.save_steps == 50


def test_spec_survives_the_ray_boundary():
    spec = _spec(model={"method": "lora"}, train={"warmup_steps": 5})
    # model_dump(exclude_unset=True) is what crosses to workers and into manifests: it re-validates to the same spec
    assert validate_spec(spec.model_dump(mode="json", exclude_unset=True)) == spec


def _checkpoint(run, step: int, spec, eval_loss: float):
    from cluster.training.checkpoints import describe_checkpoint

    folder = run / checkpoint_dir_name(step)
    (folder / "global_step").mkdir(parents=True)
    (folder / "global_step" / "zero_pp_rank_0_optim_states.pt").write_bytes(b"rank0-%d" % step)
    (folder / "global_step" / "zero_pp_rank_1_optim_states.pt").write_bytes(b"rank1-%d" % step)
    describe_checkpoint(folder, str(folder), spec, step, "float32", {"eval_loss": eval_loss, "step": float(step)})
    return folder


def test_resubmitting_with_other_data_is_refused(tmp_path):
    from cluster.errors import UserError
    from cluster.training.run_record import check_same_run, write_run_record

    spec = _spec(output={"storage": str(tmp_path), "name": "run"})
    assert check_same_run(spec) is None
    write_run_record(spec, "running")
    assert check_same_run(spec)["status"] == "running"
    other = _spec(output={"storage": str(tmp_path), "name": "run"}, data={"max_seq_len": 512})
    with pytest.raises(UserError, match=r"output.name 'run': the run at .* different data section"):
        check_same_run(other)
    longer = _spec(output={"storage": str(tmp_path), "name": "run"}, train={"max_steps": 50})
    assert check_same_run(longer)["spec"]["output"]["name"] == "run"  # more steps continue the same run


def test_record_takes_checkpoints_from_rays_result_and_manifests(tmp_path):
    from types import SimpleNamespace

    from cluster.training.run_record import write_run_record

    spec = _spec(output={"storage": str(tmp_path), "name": "run"})
    run = tmp_path / "run"
    a, b = _checkpoint(run, 10, spec, 1.0), _checkpoint(run, 20, spec, 2.0)
    _checkpoint(run, 30, spec, 0.5)  # in storage, but Ray no longer keeps it: not part of the record
    result = SimpleNamespace(best_checkpoints=[(SimpleNamespace(path=str(b)), {}), (SimpleNamespace(path=str(a)), {})])
    record = write_run_record(spec, "trained", result)
    assert [c["step"] for c in record["checkpoints"]] == [10, 20]
    assert record["best_checkpoint"] == str(a) and record["latest_checkpoint"] == str(b)
    assert write_run_record(spec, "failed", error="boom")["best_checkpoint"] == str(a)  # no Result: kept


def test_resume_skips_incomplete_and_altered_checkpoints_with_a_reason(tmp_path):
    from cluster.run_folder import resume_point

    spec = _spec(output={"storage": str(tmp_path), "name": "run"})
    run = tmp_path / "run"
    old, new = _checkpoint(run, 10, spec, 1.0), _checkpoint(run, 20, spec, 1.0)
    cut = run / checkpoint_dir_name(30)
    cut.mkdir()
    (new / "global_step" / "zero_pp_rank_1_optim_states.pt").unlink()
    said: list[str] = []
    uri, local = resume_point([str(old), str(cut), str(new)], tmp_path / "cache", say=said.append)
    assert uri == str(old) and local == old
    assert said == [
        f"rayfit: skipping checkpoint {cut}: no manifest.json (its save was cut short)",
        f"rayfit: skipping checkpoint {new}: 1 file(s) differ from its manifest.json "
        "(global_step/zero_pp_rank_1_optim_states.pt: missing)",
    ]
    (old / "global_step" / "zero_pp_rank_0_optim_states.pt").write_bytes(b"rank0-99")  # same size, other bytes
    assert resume_point([str(old)], tmp_path / "cache", say=said.append) is None
    assert "zero_pp_rank_0_optim_states.pt: checksum differs" in said[-1]


def test_an_attempt_clears_the_checkpoints_past_its_resume_point(tmp_path, object_store):
    """Checkpoint folders past the one an attempt resumes from are removed before it trains, each named: one a 2-worker
    attempt began (its rank-1 shard, no manifest) and one written but never recorded. Written again by a 1-worker
    attempt, they would keep the rank-1 files, and the next resume would skip them as differing from their manifest.
    The resume point, older checkpoints and the rest of the run folder stay: in a local run folder and in a bucket."""
    from cluster import storage
    from cluster.run_folder import clear_past

    spec = _spec(output={"storage": str(tmp_path), "name": "run"})
    local = tmp_path / "run"
    for step in (10, 20, 40):
        _checkpoint(local, step, spec, 1.0)
    begun = local / checkpoint_dir_name(30) / "global_step"
    begun.mkdir(parents=True)
    (begun / "zero_pp_rank_1_optim_states.pt").write_bytes(b"rank1-30")
    (local / "data" / "abc").mkdir(parents=True)
    (local / "data" / "abc" / "rows.arrow").write_bytes(b"rows")
    remote = storage.join(object_store("runs"), "run")
    storage.upload_dir(local, remote)

    for run in (remote, str(local)):
        said: list[str] = []
        past = [storage.join(run, checkpoint_dir_name(step)) for step in (30, 40)]
        assert clear_past(run, 20, say=said.append) == past
        assert storage.list_dirs(run) == ["checkpoint_00000010", "checkpoint_00000020", "data"]
        assert storage.exists(storage.join(run, "data", "abc", "rows.arrow"))
        unfinished = "an earlier attempt left it unfinished or unrecorded; this one writes it again"
        assert said == [f"rayfit: removing {uri}: {unfinished}" for uri in past]
        assert clear_past(run, 20, say=said.append) == [] and len(said) == 2


def test_manifest_of_several_nodes_lists_each_file_once():
    from cluster.manifest import merge_file_tables

    a = {"x": {"sha256": "1", "bytes": 1}, "shared": {"sha256": "s", "bytes": 1}}
    b = {"y": {"sha256": "2", "bytes": 1}, "shared": {"sha256": "s", "bytes": 1}}
    assert list(merge_file_tables([a, b])) == ["shared", "x", "y"]
    with pytest.raises(RuntimeError, match="two nodes wrote different contents to shared"):
        merge_file_tables([a, {"shared": {"sha256": "t", "bytes": 1}}])


def test_best_checkpoint_prefers_lowest_eval_loss_then_newest():
    cks = [
        CheckpointInfo("a", 1, {"eval_loss": 2.0}),
        CheckpointInfo("b", 2, {"eval_loss": 1.0}),
        CheckpointInfo("c", 3, {"eval_loss": 1.0}),
    ]
    assert best(cks).uri == "c"
    assert best([CheckpointInfo("a", 1), CheckpointInfo("b", 2)]).uri == "b"
    assert best([]) is None
