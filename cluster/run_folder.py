"""The layout of a run folder, in one place: every reader and writer of a run goes through these functions.

```
{output.storage}/{output.name}/
  checkpoint_<step:08d>/   one per save, every rank's files; complete iff its manifest.json exists (written last,
                           after every rank's upload; it lists and checksums every rank's files)
  checkpoint_manager_snapshot.json   Ray Train's list of reported checkpoints: the run's source of truth for resume
  data/<content-hash>/     prepared datasets
  data_report.json         the data check's report
  run.json                 the run record: spec, status, best and latest checkpoints, metrics
  log_history.json, loss.png, tensorboard/
  export/                  merged model (manifest kind=export)
  eval/                    report.json, report.md, chart.png
```
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster import storage
from cluster.embedded import cache_root
from cluster.errors import UserError
from cluster.manifest import MANIFEST, read_manifest, verify

PREFIX = "checkpoint_"
CHECKPOINT_NAME = re.compile(rf"^{PREFIX}(\d+)$")
RECORD = "run.json"
DATA_REPORT = "data_report.json"
LOG_HISTORY = "log_history.json"
LOSS_PLOT = "loss.png"
# The metric that ranks checkpoints when their manifests name none (`rank_by`): lower is better; the newest wins
# when no checkpoint has it.
BEST_METRIC = "eval_loss"


def run_uri(spec) -> str:
    """The run folder `{output.storage}/{output.name}`, absolute when local."""
    return storage.join(storage.normalize(spec.output.storage), spec.output.name)


def part(run: str, name: str) -> str:
    """A fixed part of the run folder: "data", "export", "eval", "tensorboard", or one of the file names above."""
    return storage.join(run, name)


def checkpoint_dir_name(step: int) -> str:
    """The folder name of the checkpoint taken after optimizer step `step`; names sort in step order.

    Every rank derives the same name without talking to the others, and a save repeated after a restart writes
    the folder of the same step again (cleared first by `clear_past`) instead of leaving one beside the other.
    """
    return f"{PREFIX}{step:08d}"


def is_complete(uri: str) -> bool:
    """A checkpoint is complete once its manifest exists: the manifest is written after every file."""
    return storage.exists(storage.join(uri, MANIFEST))


@dataclass(frozen=True)
class CheckpointInfo:
    """One complete checkpoint of a run: where it is, its step and the metrics its manifest recorded."""

    uri: str
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    rank_by: tuple[str, bool] = (BEST_METRIC, False)  # the objective's eval metric and whether higher is better

    def to_json(self) -> dict[str, Any]:
        """A plain dict for run.json."""
        return {"uri": self.uri, "step": self.step, "metrics": self.metrics}


def step_of(uri: str) -> int | None:
    """The step in a checkpoint folder's name, or None when the name is not a checkpoint's."""
    match = CHECKPOINT_NAME.match(uri.rstrip("/").rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


def described(uris: list[str]) -> list[CheckpointInfo]:
    """The complete checkpoints among `uris` with the metrics their manifests recorded, oldest first."""
    out = []
    for uri in uris:
        if step_of(uri) is not None and is_complete(uri):
            manifest = read_manifest(uri)
            rank_by = tuple(manifest.get("rank_by", (BEST_METRIC, False)))
            out.append(CheckpointInfo(uri, step_of(uri), manifest.get("metrics", {}), rank_by))
    return sorted(out, key=lambda c: c.step)


def checkpoints(run: str) -> list[CheckpointInfo]:
    """Every complete checkpoint in the run folder, oldest first, found by listing it (for readers given only a
    folder: merge, serve, the CLI); a running job knows its checkpoints from Ray Train instead."""
    return described([storage.join(run, name) for name in storage.list_dirs(run)])


def resume_point(candidates: list[str], cache: Path, say=print) -> tuple[str, Path] | None:
    """The newest of `candidates` that is complete and intact, with a local copy of its files; None when none is.

    Each checkpoint skipped is named with its reason on one line, and the next older one is tried: a save cut
    short has no manifest, and a file deleted or altered in storage no longer matches the manifest's checksum.
    """
    for uri in sorted(candidates, key=lambda u: step_of(u) or -1, reverse=True):
        if not is_complete(uri):
            say(f"rayfit: skipping checkpoint {uri}: no {MANIFEST} (its save was cut short)")
            continue
        local = local_copy(uri, cache)
        bad = verify(local)
        if bad:
            say(
                f"rayfit: skipping checkpoint {uri}: {len(bad)} file(s) differ from its {MANIFEST} "
                f"({'; '.join(bad[:3])}{'; ...' if len(bad) > 3 else ''})"
            )
            continue
        return uri, local
    return None


def clear_past(run: str, step: int, say=print) -> list[str]:
    """Remove the run's checkpoint folders past `step`, the checkpoint an attempt resumes from (0: none), and return them.

    None of them can be resumed from (`step` is the newest recorded, complete and intact checkpoint), and the attempt
    writes their steps again. A file an earlier attempt left in one (a rank's shards whose save never completed, or
    the shards of another worker count) would stay beside the new files, and the next resume would skip the folder
    as differing from its manifest.
    """
    past = [storage.join(run, name) for name in storage.list_dirs(run) if (s := step_of(name)) is not None and s > step]
    for uri in past:
        say(f"rayfit: removing {uri}: an earlier attempt left it unfinished or unrecorded; this one writes it again")
        storage.remove(uri)
    return past


def newest(found: list[CheckpointInfo]) -> CheckpointInfo | None:
    """The complete checkpoint with the highest step."""
    return found[-1] if found else None


def best(found: list[CheckpointInfo]) -> CheckpointInfo | None:
    """The best value of the metric the checkpoints rank by (eval loss, lowest; GRPO's eval reward, highest), the
    newer on a tie; the newest when no checkpoint has one."""
    scored = [c for c in found if c.rank_by[0] in c.metrics]
    if scored:
        return max(scored, key=lambda c: (c.metrics[c.rank_by[0]] * (1 if c.rank_by[1] else -1), c.step))
    return newest(found)


def read_record(run: str) -> dict[str, Any] | None:
    """The run record `run.json`, or None when the run has none yet."""
    uri = part(run, RECORD)
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


def write_record(run: str, record: dict[str, Any]) -> None:
    """Write the run record `run.json`."""
    storage.write_text(part(run, RECORD), json.dumps(record, indent=2, default=str))


def run_of(checkpoint_uri: str) -> str:
    """The run folder holding a checkpoint (its parent folder)."""
    return checkpoint_uri.rstrip("/").rsplit("/", 1)[0]


def find_checkpoint(uri: str) -> tuple[str, dict]:
    """The checkpoint URI and its manifest for a checkpoint folder, or for a run folder (its best complete checkpoint)."""
    uri = storage.normalize(uri)
    if storage.exists(storage.join(uri, MANIFEST)):
        manifest = read_manifest(uri)
        if manifest.get("kind") != "checkpoint":
            raise UserError(
                f"{uri} is a rayfit {manifest.get('kind')!r}, not a checkpoint. "
                f"Fix: give a checkpoint folder (RUN/{PREFIX}NNNNNNNN) or the run folder."
            )
        return uri, manifest
    chosen = best(checkpoints(uri))
    if chosen is None:
        raise UserError(
            f"{uri} has no {MANIFEST} and no complete {PREFIX}NNNNNNNN/ folder (one with a {MANIFEST}). "
            "Fix: give a run folder written by `rayfit finetune` (or `python -m jobs.finetune`), or one of its checkpoint "
            "folders; "
            "a checkpoint without manifest.json was interrupted while saving."
        )
    return chosen.uri, read_manifest(chosen.uri)


def local_copy(uri: str, cache: Path | None = None) -> Path:
    """A local folder with the files of the checkpoint or export at `uri`: the folder itself, or a download into `cache`
    (default: rayfit's cache folder).

    A cached copy with the same manifest is the same artefact; a save repeated at the same URI replaces the copy.
    """
    if not storage.is_remote(uri):
        return storage.local_path(uri)
    dest = storage.cache_dir_for(uri, cache or cache_root() / "checkpoints")
    remote_manifest = storage.read_text(storage.join(uri, MANIFEST))
    if not (dest / MANIFEST).exists() or (dest / MANIFEST).read_text(encoding="utf-8") != remote_manifest:
        shutil.rmtree(dest, ignore_errors=True)
        storage.download_dir(uri, dest)
    return dest
