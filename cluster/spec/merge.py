"""The `merge` section: turning a trained adapter into one deployable model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cluster.spec.base import Section


class MergeSpec(Section):
    """Whether and how the finetune job exports a merged model at its end."""

    enabled: bool = Field(False, description="Merge the best checkpoint into a full model when training ends.")
    into: Literal["dequantized", "original"] = Field(
        "dequantized",
        description="QLoRA only: merge into the dequantized 4-bit base the adapter was trained against (reproduces "
        "the trained model) or into the original full-precision weights.",
    )
    max_shard_size: str = Field("5GB", description="Largest safetensors shard in the export.")
