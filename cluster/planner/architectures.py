"""The base model's config.json, and nothing else: from a folder, an object store, the hub cache, or a built-in table."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from cluster import storage
from cluster.embedded import embedded_model_dir
from cluster.errors import UserError
from cluster.model.config import read_config
from cluster.model.source import HUB_ID

_LLAMA3 = dict(
    model_type="llama",
    vocab_size=128256,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    max_position_embeddings=131072,
    hidden_act="silu",
    tie_word_embeddings=False,
    bos_token_id=128000,
    eos_token_id=128001,
)
_LLAMA2 = dict(
    model_type="llama",
    vocab_size=32000,
    rms_norm_eps=1e-5,
    max_position_embeddings=4096,
    hidden_act="silu",
    tie_word_embeddings=False,
)
_QWEN25 = dict(
    model_type="qwen2",
    vocab_size=152064,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    max_position_embeddings=32768,
    hidden_act="silu",
    tie_word_embeddings=False,
)
_MISTRAL = dict(
    model_type="mistral",
    vocab_size=32768,
    rms_norm_eps=1e-5,
    rope_theta=1000000.0,
    max_position_embeddings=32768,
    hidden_act="silu",
    tie_word_embeddings=False,
)


def _shape(h: int, i: int, layers: int, heads: int, kv: int, **extra) -> dict:
    return dict(
        hidden_size=h, intermediate_size=i, num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv, **extra
    )


# The shapes of the config.json files these models publish; only what decides parameter counts and activations.
ARCHITECTURES: dict[str, dict] = {
    "llama-3.2-1b": {**_LLAMA3, **_shape(2048, 8192, 16, 32, 8, head_dim=64), "tie_word_embeddings": True},
    "llama-3.2-3b": {**_LLAMA3, **_shape(3072, 8192, 28, 24, 8, head_dim=128), "tie_word_embeddings": True},
    "llama-3.1-8b": {**_LLAMA3, **_shape(4096, 14336, 32, 32, 8)},
    "llama-3.1-70b": {**_LLAMA3, **_shape(8192, 28672, 80, 64, 8)},
    "llama-3.1-405b": {**_LLAMA3, **_shape(16384, 53248, 126, 128, 8)},
    "llama-2-7b": {**_LLAMA2, **_shape(4096, 11008, 32, 32, 32)},
    "llama-2-13b": {**_LLAMA2, **_shape(5120, 13824, 40, 40, 40)},
    "llama-2-70b": {**_LLAMA2, **_shape(8192, 28672, 80, 64, 8)},
    "llama-65b": {**_LLAMA2, **_shape(8192, 22016, 80, 64, 64), "max_position_embeddings": 2048, "rms_norm_eps": 1e-6},
    "qwen2.5-7b": {**_QWEN25, **_shape(3584, 18944, 28, 28, 4)},
    "qwen2.5-14b": {**_QWEN25, **_shape(5120, 13824, 48, 40, 8)},
    "qwen2.5-32b": {**_QWEN25, **_shape(5120, 27648, 64, 40, 8)},
    "qwen2.5-72b": {**_QWEN25, **_shape(8192, 29568, 80, 64, 8)},
    "mistral-7b-v0.1": {
        **_MISTRAL,
        **_shape(4096, 14336, 32, 32, 8),
        "vocab_size": 32000,
        "rope_theta": 10000.0,
        "sliding_window": 4096,
    },
    "mistral-7b-v0.3": {**_MISTRAL, **_shape(4096, 14336, 32, 32, 8)},
}
# Other spellings of the same shapes (Llama 3 and 3.3 share Llama 3.1's; LLaMA 1 65B is published as huggyllama/llama-65b).
ALIASES = {
    "llama-3-8b": "llama-3.1-8b",
    "llama-3-70b": "llama-3.1-70b",
    "llama-3.3-70b": "llama-3.1-70b",
    "llama-2-65b": "llama-65b",
    "mistral-7b-v0.2": "mistral-7b-v0.3",
    "mistral-7b": "mistral-7b-v0.1",
}


def table_key(hub_id: str) -> str | None:
    """The built-in table's key for a hub id such as meta-llama/Llama-3.1-8B-Instruct, or None."""
    name = hub_id.split("/")[-1].lower().removeprefix("meta-")
    name = re.sub(r"-(instruct|chat|hf|base)(?=-|$)", "", name)  # Mistral-7B-Instruct-v0.3 -> mistral-7b-v0.3
    name = ALIASES.get(name, name)
    return name if name in ARCHITECTURES else None


def load_config(base: str, revision: str | None = None, trust_remote_code: bool = False):
    """The `PretrainedConfig` of `base` and where it came from, reading config.json only (never weights)."""
    if base.startswith("embedded:"):
        folder = embedded_model_dir(base.removeprefix("embedded:"))
        return read_config(folder, trust_remote_code=trust_remote_code), f"{folder}/config.json"
    if storage.is_remote(base):
        uri = storage.join(base, "config.json")
        if not storage.exists(uri):
            raise UserError(
                f"model.base {base!r}: no config.json at {uri}. Fix: point model.base at a Hugging Face model folder."
            )
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "config.json").write_text(storage.read_text(uri), encoding="utf-8")
            return read_config(tmp, trust_remote_code=trust_remote_code), uri
    folder = Path(base.removeprefix("file://")).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UserError(f"model.base {base!r}: the folder has no config.json. Fix: point it at a Hugging Face model folder.")
        return read_config(folder, trust_remote_code=trust_remote_code), str(folder / "config.json")
    if not HUB_ID.match(base):
        raise UserError(
            f"model.base {base!r}: no such folder, and not a hub id (org/name) or a URI. Fix: give an existing folder."
        )
    return _hub_config(base, revision, trust_remote_code)


def _hub_config(hub_id: str, revision: str | None, trust_remote_code: bool):
    """A hub model's config from the local hub cache when it is there, else from the built-in table; never the network."""
    from transformers import AutoConfig

    try:
        config = read_config(hub_id, revision, trust_remote_code, local_files_only=True)
        return config, f"hub cache ({hub_id})"
    except (OSError, ValueError):
        pass
    key = table_key(hub_id)
    if key is None:
        known = ", ".join(sorted(ARCHITECTURES))
        raise UserError(
            f"model.base {hub_id!r}: its config.json is not in the local hub cache and not in rayfit's built-in "
            f"table ({known}). Fix: download the model's config.json into a folder and point model.base at it, "
            "or run once with network access so the hub cache has it."
        )
    shape = dict(ARCHITECTURES[key])
    return AutoConfig.for_model(shape.pop("model_type"), **shape), f"built-in table ({key})"
