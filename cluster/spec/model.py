"""The `model` section: which base model, and how it is fine-tuned (full, LoRA, QLoRA)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from cluster.spec.base import Problem, Section

EMBEDDED_MODELS = ("smollm2-135m-instruct",)
Dtype = Literal["bfloat16", "float16", "float32"]


class LoraSpec(Section):
    """Low-rank adapter settings (PEFT `LoraConfig`)."""

    r: int = Field(16, ge=1, le=1024, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="Scaling numerator; the update is scaled by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear", description="Modules that get adapters: 'all-linear' or a list of module names like [q_proj, v_proj]."
    )
    modules_to_save: list[str] = Field(
        default_factory=list, description="Modules trained in full and saved beside the adapter (e.g. lm_head, embed_tokens)."
    )
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha / sqrt(r).")

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("target_modules is empty; give module names or 'all-linear'")
        return v


class QuantizationSpec(Section):
    """bitsandbytes 4-bit settings for QLoRA."""

    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type; NF4 is what QLoRA uses.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too (saves ~0.4 bit per weight).")
    compute_dtype: Dtype = Field("bfloat16", description="Dtype the 4-bit layers compute in.")
    storage_dtype: Literal["uint8", "bfloat16", "float16", "float32"] | None = Field(
        None,
        description="Dtype the packed 4-bit weights are stored in. Null: uint8, or under ZeRO-3 the training dtype "
        "(model.dtype; float32 on CPU), which lets ZeRO-3 partition the 4-bit base like any other weight (PEFT's "
        "DeepSpeed QLoRA recipe).",
    )


class ModelSpec(Section):
    """Base model and fine-tuning method."""

    base: str = Field(
        description="Base model: a local folder, an s3:// or gs:// URI of a Hugging Face folder, a hub id "
        "(org/name), or embedded:smollm2-135m-instruct (ships with rayfit, works offline)."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) when `base` is a hub id.")
    method: Literal["full", "lora", "qlora"] = Field(
        "lora", description="full: all weights; lora: adapters on a frozen base; qlora: adapters on a 4-bit base."
    )
    lora: LoraSpec | None = Field(
        None, description="Adapter settings (method lora or qlora only; their defaults when not given)."
    )
    quantization: QuantizationSpec | None = Field(
        None, description="4-bit settings (method qlora only; their defaults when not given)."
    )
    dtype: Dtype = Field("bfloat16", description="Dtype of the trained (or, for QLoRA, non-quantized) weights; float32 on CPU.")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flex_attention"] = Field(
        "sdpa", description="Attention kernel passed to from_pretrained."
    )
    trust_remote_code: bool = Field(False, description="Run Python code shipped with the model. Off unless you trust its author.")
    init_from: str | None = Field(
        None,
        description="Warm start: an earlier rayfit run folder (its best checkpoint), checkpoint or export, local or "
        "URI. An adapter checkpoint is trained further (same base and method lora/qlora); an export or full checkpoint "
        "replaces the base weights. The manifest records this lineage.",
    )
    chat_template: str | None = Field(
        None, description="A Jinja chat template replacing the tokenizer's own (needed when the base has none)."
    )

    @model_validator(mode="before")
    @classmethod
    def _resolve_defaults(cls, data):
        """The one place where method-dependent defaults are filled in: lora/qlora get adapter settings, qlora 4-bit ones."""
        if not isinstance(data, dict):
            return data
        method = data.get("method", cls.model_fields["method"].default)
        out = dict(data)
        if method in ("lora", "qlora") and out.get("lora") is None:
            out["lora"] = {}
        if method == "qlora" and out.get("quantization") is None:
            out["quantization"] = {}
        return out

    @field_validator("base")
    @classmethod
    def _known_base(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("base is empty; give a folder, a URI, a hub id or embedded:smollm2-135m-instruct")
        if v.startswith("embedded:") and v.removeprefix("embedded:") not in EMBEDDED_MODELS:
            raise ValueError(
                f"unknown embedded model {v!r}; embedded models: {', '.join('embedded:' + m for m in EMBEDDED_MODELS)}"
            )
        return v

    def problems(self) -> list[Problem]:
        out = []
        if self.method == "full" and self.lora is not None:
            out.append(
                Problem(
                    "lora",
                    "LoRA settings given but method is 'full', which trains all weights and uses no adapter.",
                    "remove model.lora, or set model.method to lora or qlora.",
                )
            )
        if self.method != "qlora" and self.quantization is not None:
            out.append(
                Problem(
                    "quantization",
                    f"4-bit settings given but method is '{self.method}'.",
                    "remove model.quantization, or set model.method: qlora.",
                )
            )
        if self.method == "qlora" and self.dtype == "float16" and self.quantization.compute_dtype == "bfloat16":
            out.append(
                Problem(
                    "quantization.compute_dtype",
                    "compute dtype bfloat16 with model dtype float16 mixes half types.",
                    "use the same half type for model.dtype and model.quantization.compute_dtype.",
                )
            )
        return out
