"""The per-worker training loop: a plain function of a dict, run by Ray Train workers or by one process alone."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from cluster import storage
from cluster.manifest import read_manifest
from cluster.model.load import load_tokenizer, train_dtype
from cluster.objectives import recipe_for
from cluster.run_folder import clear_past, local_copy, resume_point, step_of
from cluster.service.training_hooks import metrics_sink, service_callbacks
from cluster.sharding import SHARDINGS
from cluster.spec import JobSpec, validate_spec
from cluster.training.callbacks import CheckpointReporter, FaultInjection, RunArtifacts, node_leader
from cluster.training.collectives import barrier, from_rank0
from cluster.training.deepspeed_config import deepspeed_config, import_deepspeed
from cluster.training.elastic import OwnStepCounters, checkpoint_world, for_world, universal_copy
from cluster.training.fsdp import ConsolidatedWeights, trainer_on_cpu
from cluster.training.levers import check_levers
from cluster.training.progress import ProgressLog


def train_loop(config: dict[str, Any], callbacks: tuple = ()) -> dict[str, Any]:
    """Train this worker's share of the run described by `config`; returns the log history and final step.

    `config` holds only plain values: `spec` (JobSpec.model_dump()), `run` (run folder URI), `train_path` and
    `eval_path` (prepared datasets, eval may be None) and `scratch` (a folder name under each node's own temporary
    folder, or an absolute path). Under Ray it resumes from the newest complete, intact checkpoint that Ray Train
    recorded for the run, so a restarted worker group or a resubmitted run continues; without Ray it resumes from
    `resume_from` when given.
    `callbacks` are extra Trainer callbacks for a caller without Ray (benchmarks.gpu times steps with one).
    """
    from transformers import PrinterCallback, set_seed

    import_deepspeed()  # before the Trainer's own import of it, which would also import mlflow
    spec = validate_spec(config["spec"])  # the worker re-validates what crossed the Ray boundary
    run = config["run"]
    scratch = Path(tempfile.gettempdir(), "rayfit", config["scratch"])  # an absolute `scratch` stays as it is
    under_ray = _in_ray_worker()
    rank, local_rank, world = _ranks(under_ray)
    leader = node_leader(under_ray, rank)
    if leader:  # a previous attempt's local checkpoints: stale files there would be uploaded with the new ones
        shutil.rmtree(scratch / "hf", ignore_errors=True)
    on_gpu = spec.cluster.use_gpu and torch.cuda.is_available()
    run_spec, resized = for_world(spec, world)  # the spec as this many workers run it (elastic runs)
    if resized and rank == 0:
        print(f"rayfit: {resized}", flush=True)
    ds_config = deepspeed_config(run_spec, world, on_gpu, _hidden_size(spec))
    fsdp = spec.cluster.sharding == "fsdp2"
    if ds_config:
        _init_deepspeed_comm(on_gpu)  # zero.Init reads the world size from DeepSpeed's comm before the model exists
    elif fsdp:
        _init_process_group(on_gpu)  # fully_shard splits over the process group as each layer loads
    sharded_state = SHARDINGS[spec.cluster.sharding].shards_states
    resume, resume_local, reshard = _resume_point(config, scratch, rank, leader, world, sharded_state, under_ray, fsdp)
    if resume and _finished(manifest := read_manifest(str(resume_local)), spec):  # the node's verified copy
        if rank == 0:
            print(f"rayfit: {resume} already completes this run; nothing to train", flush=True)
        return {"log_history": [], "global_step": manifest["step"]}
    check_levers(spec, on_gpu)
    if ds_config and reshard:
        ds_config["checkpoint"] = {"load_universal": True}

    set_seed(spec.train.seed)  # adapter init happens before the Trainer seeds anything
    tokenizer = load_tokenizer(spec)
    train_ds = _load_dataset(config["train_path"])
    eval_ds = _load_dataset(config["eval_path"]) if config.get("eval_path") and spec.train.eval_steps else None
    if "tensorboard" in spec.train.report_to:  # transformers 5 reads the event-file folder from here only
        os.environ["TENSORBOARD_LOGGING_DIR"] = _tensorboard_dir(run, scratch)
    dtype = str(train_dtype(spec, on_gpu)).removeprefix("torch.")
    with trainer_on_cpu(spec, on_gpu):
        trainer = recipe_for(run_spec).trainer(
            run_spec,
            tokenizer,
            ds_config,
            on_gpu,
            local_rank,
            scratch / "hf",
            train_ds,
            eval_ds,
            eval_on_start=resume is None,
            callbacks=[
                *([ConsolidatedWeights(rank)] if fsdp else []),  # before the reporter uploads the folder
                CheckpointReporter(spec, run, dtype, under_ray, rank, leader, _resumed_from(resume, reshard, world)),
                ProgressLog(rank, sink=metrics_sink(rank)),
                RunArtifacts(run, rank, f"{spec.output.name}: {spec.model.method} of {spec.model.base}"),
                FaultInjection(run, rank),
                *_early_stopping(spec),
                *([OwnStepCounters()] if reshard and ds_config else []),
                *service_callbacks(rank),
                *callbacks,
            ],
            actors=config.get("actors", {}),
        )
    trainer.remove_callback(PrinterCallback)  # ProgressLog prints the same numbers once, with tokens/s
    if under_ray:
        from ray.train.huggingface.transformers import prepare_trainer

        trainer = prepare_trainer(trainer)
    if resume and rank == 0:
        written = f" (written by {reshard} worker{'s' * (reshard != 1)}; resharded for {world})" if reshard else ""
        print(f"rayfit: resuming from {resume}{written}", flush=True)
    trainer.train(resume_from_checkpoint=str(resume_local) if resume else None)
    barrier()  # every rank is done with the node-local copies (checkpoints are already in storage)
    if leader:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"log_history": trainer.state.log_history, "global_step": trainer.state.global_step}


def _resume_point(
    config: dict[str, Any],
    scratch: Path,
    rank: int,
    leader: bool,
    world: int,
    sharded: bool,
    under_ray: bool,
    dcp: bool = False,
) -> tuple[str | None, Path | None, int | None]:
    """The checkpoint every rank continues from, this node's local copy of it, and the worker count that wrote it
    when its sharded state must be resharded for `world` workers; (None, None, None) for a fresh start.

    Ray Train's record of reported checkpoints (restored from the run folder when a run is submitted again) is the
    one list of candidates; rank 0 picks the newest complete, intact one (cluster.run_folder.resume_point) and the
    other ranks take its choice, so all ranks load the same step. Each node downloads it once (its lowest rank),
    and converts it to DeepSpeed's universal form when the worker count changed; FSDP2's DCP state (`dcp`) is
    resharded by torch.distributed.checkpoint as it loads.
    """
    cache = scratch / "resume"
    choice = None
    if rank == 0:
        candidates = _recorded_checkpoints(config["run"]) if under_ray else [c for c in [config.get("resume_from")] if c]
        found = resume_point(candidates, cache)
        choice = (found[0], checkpoint_world(read_manifest(str(found[1])))) if found else None
        if under_ray:  # the folders past it are written again: no earlier attempt's files may stay in them
            clear_past(config["run"], step_of(found[0]) if found else 0)
    choice = from_rank0(choice)  # (URI, workers that wrote it): one manifest read, from rank 0's verified copy
    if not choice:
        return None, None, None
    choice, written_by = choice
    reshard = written_by if sharded and written_by not in (None, world) else None
    universal = reshard and not dcp
    if leader:
        local = local_copy(choice, cache)
        if universal:
            universal_copy(local, cache / "universal" / Path(choice).name)
    barrier()  # the node's copy is complete before any rank reads it
    local = local_copy(choice, cache)
    return choice, (cache / "universal" / Path(choice).name if universal else local), reshard


def _resumed_from(resume: str | None, reshard: int | None, world: int) -> dict[str, Any] | None:
    """What this attempt's checkpoints record about where it started."""
    if not resume:
        return None
    return {"checkpoint": resume, "world_size": reshard or world, **({"resharded_for": world} if reshard else {})}


def _recorded_checkpoints(run: str) -> list[str]:
    """The URIs of the checkpoints Ray Train has recorded for this run (it keeps the best `keep_checkpoints`)."""
    import ray.train

    reported = ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
    return [storage.join(run, Path(r.checkpoint.path).name) for r in reported]


def _finished(manifest: dict, spec: JobSpec) -> bool:
    """Whether a checkpoint is the end of the run (the Trainer would otherwise take one more step on resume)."""
    if spec.train.max_steps is not None:
        return manifest["step"] >= spec.train.max_steps
    return manifest["metrics"].get("epoch", 0.0) >= spec.train.epochs - 1e-9


def _load_dataset(path: str):
    """A prepared dataset written by cluster.data on the driver."""
    from cluster.data import load_prepared

    return load_prepared(path)


def _early_stopping(spec: JobSpec) -> list:
    if spec.train.early_stopping_patience is None:
        return []
    from transformers import EarlyStoppingCallback

    return [EarlyStoppingCallback(spec.train.early_stopping_patience, spec.train.early_stopping_threshold)]


def _tensorboard_dir(run: str, scratch: Path) -> str:
    """TensorBoard event files go in the run folder when it is local; remote runs keep them on the worker."""
    return str(scratch / "tensorboard") if storage.is_remote(run) else storage.join(run, "tensorboard")


def _in_ray_worker() -> bool:
    try:
        import ray.train

        ray.train.get_context().get_world_rank()
        return True
    except Exception:  # no Ray, or not inside a Ray Train worker
        return False


def _ranks(under_ray: bool) -> tuple[int, int, int]:
    """(world rank, local rank, world size): from Ray Train, from torchrun's variables, or a single process."""
    if under_ray:
        import ray.train

        ctx = ray.train.get_context()
        return ctx.get_world_rank(), ctx.get_local_rank(), ctx.get_world_size()
    if dist.is_initialized():
        return dist.get_rank(), int(os.environ.get("LOCAL_RANK", dist.get_rank())), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _init_deepspeed_comm(on_gpu: bool) -> None:
    """DeepSpeed's comm over the existing process group (Ray's), or over a new one-process group without Ray."""
    deepspeed = import_deepspeed()
    _one_process_env()
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", auto_mpi_discovery=False)


def _init_process_group(on_gpu: bool) -> None:
    """torch.distributed's process group: Ray's, or a new one-process group without Ray."""
    if dist.is_initialized():
        return
    _one_process_env()
    dist.init_process_group(backend="nccl" if on_gpu else "gloo")


def _one_process_env() -> None:
    """Rendezvous variables for a process group of one (no Ray, no torchrun)."""
    if dist.is_initialized() or "MASTER_ADDR" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})


def _hidden_size(spec: JobSpec) -> int | None:
    """The base model's hidden size (ZeRO-3 keeps parameters no larger than this whole on every worker)."""
    if spec.cluster.zero_stage != 3:
        return None
    from cluster.model.load import load_base_config

    config = load_base_config(spec)
    return getattr(config.get_text_config(), "hidden_size", None)
