"""Merge and export: a checkpoint becomes one deployable model that reproduces what was trained.

Public API:
    merge_checkpoint(checkpoint_uri, into="dequantized", out_uri=None) -> str   export URI (idempotent); LoRA and
                                                                                QLoRA stream tensor by tensor (stream.py)
    find_checkpoint(uri) -> (checkpoint_uri, manifest)                          a checkpoint or a run's best one
    merged_model(ckpt_dir, spec, into) -> transformers model                    the merge in memory, without writing
    dequantized_weights(model, dtype)                                           4-bit weights, safe after any forward
"""

from cluster.merge.export import default_export_uri, merge_checkpoint
from cluster.merge.quantized import dequantized_weights
from cluster.merge.weights import merge_adapter, merged_model
from cluster.run_folder import find_checkpoint

__all__ = ["default_export_uri", "dequantized_weights", "find_checkpoint", "merge_adapter", "merge_checkpoint", "merged_model"]
