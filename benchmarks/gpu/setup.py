"""What every case needs before it runs: the model shapes, random-weight model folders and the synthetic data.

Shapes come from the planner's built-in table (cluster.planner.architectures), so the benchmark and the planner
describe the same model. Weights are random (nothing is downloaded); the tokenizer is a word-level stand-in whose
only job is the pad token, since the data is random token ids of seeded random lengths.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from cluster.planner.architectures import ARCHITECTURES

TINY = {
    "model_type": "llama",
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
}
SHAPES = {"llama-3.1-8b": ARCHITECTURES["llama-3.1-8b"], "llama-3.2-1b": ARCHITECTURES["llama-3.2-1b"], "tiny": TINY}
SPECIALS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2; random tokens are drawn above them


def build_model(shape: str, folder: Path, on_gpu: bool) -> Path:
    """Write a random-weight model of `shape` (bf16 on GPU, float32 on CPU) and a tokenizer to `folder`, once."""
    from tokenizers import Tokenizer, models
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    if (folder / "done").exists():
        return folder
    fields = dict(SHAPES[shape])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    with torch.device("cuda" if on_gpu else "cpu"):  # initialising 8B weights on a GPU takes seconds, not minutes
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if on_gpu else torch.float32)
    model.save_pretrained(folder)
    del model
    if on_gpu:
        torch.cuda.empty_cache()  # this process holds no model while the cases run in theirs
    words = {w: i for i, w in enumerate(SPECIALS + [f"w{i}" for i in range(64)])}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(words, unk_token="<pad>")),
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<pad>",
    )
    tok.save_pretrained(folder)
    (folder / "done").write_text("ok")
    return folder


def sample_lengths(count: int, low: int, high: int, seed: int = 0) -> list[int]:
    """Seeded uniform sample lengths in [low, high]."""
    rng = random.Random(seed)
    return [rng.randint(low, high) for _ in range(count)]


def samples(lengths: list[int], vocab: int, seed: int = 0) -> list[list[int]]:
    """Random token ids (never a special token) of the given lengths."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(len(SPECIALS), vocab, (n,), generator=g).tolist() for n in lengths]


def write_data(folder: Path, shape: str, lengths: list[int], max_seq_len: int) -> dict[str, str]:
    """The same samples twice: packed rows as cluster.data writes them, and unpacked rows for TRL's own collator.

    Rows are packed by rayfit's own packer (cluster.data.binpack); position ids restart at every sample.
    """
    from datasets import Dataset

    from cluster.data.binpack import pack_lengths

    paths = {"packed": str(folder / "packed"), "plain": str(folder / "plain")}
    if (folder / "done").exists():
        return paths
    ids = samples(lengths, SHAPES[shape]["vocab_size"])
    rows = []
    for bin_ in pack_lengths(lengths, max_seq_len):
        tokens = [t for i in bin_ for t in ids[i]]
        rows.append({"input_ids": tokens, "labels": tokens, "position_ids": [p for i in bin_ for p in range(len(ids[i]))]})
    Dataset.from_list(rows).save_to_disk(paths["packed"])
    Dataset.from_list([{"input_ids": s} for s in ids]).save_to_disk(paths["plain"])
    (folder / "done").write_text(json.dumps({"samples": len(ids), "tokens": sum(lengths), "rows": len(rows)}))
    return paths


def matmul_params(shape: str) -> int:
    """Parameters that take part in a matrix multiply per token: every linear layer and the LM head (not the
    embedding lookup)."""
    c = SHAPES[shape]
    h, heads, kv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    head_dim = c.get("head_dim") or h // heads
    q, k = heads * head_dim, kv * head_dim
    per_layer = h * q + 2 * h * k + q * h + 3 * h * c["intermediate_size"]
    return c["num_hidden_layers"] * per_layer + c["vocab_size"] * h


def flops_per_token(shape: str, method: str, lengths: list[int]) -> float:
    """Model FLOPs per trained token: k·N + 6·L·d_q·Σn²/Σn (stated in README.md).

    k = 6 for a full fine-tune (forward 2N, backward 4N) and 4 for LoRA/QLoRA (the frozen weights get no weight
    gradient; the adapters' own FLOPs are under 1% and left out). The second term is causal attention: a sample of
    n tokens costs 2·n²·d_q per layer forward (QKᵀ and AV over the lower triangle) and twice that backward.
    Recomputation under gradient checkpointing is not counted (that is what makes it *model* FLOPs).
    """
    c = SHAPES[shape]
    d_q = c["num_attention_heads"] * (c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"])
    k = 6 if method == "full" else 4
    attention = 6 * c["num_hidden_layers"] * d_q * sum(n * n for n in lengths) / sum(lengths)
    return k * matmul_params(shape) + attention
