"""Reading a model's `config.json` alone (never its weights), for the planner and anything else that sizes a model."""

from __future__ import annotations

from pathlib import Path


def read_config(source: str | Path, revision: str | None = None, trust_remote_code: bool = False, local_files_only: bool = False):
    """The transformers `PretrainedConfig` of a model folder or hub id; hub ids are read from the local cache only
    when `local_files_only` is set (OSError or ValueError when it is not there)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(
        source, revision=revision, trust_remote_code=trust_remote_code, local_files_only=local_files_only
    )
