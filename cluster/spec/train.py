"""The `train` section: optimisation, schedule, evaluation and checkpoint cadence."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cluster.spec.base import Problem, Section
from cluster.spec.grpo import GrpoSpec
from cluster.spec.objective import DpoSpec, KtoSpec, Objective, objective_problems

DEFAULT_WARMUP_RATIO = 0.03


class TrainSpec(Section):
    """Optimisation and cadence of the training loop."""

    epochs: float = Field(1.0, gt=0, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps to run; overrides epochs.")
    learning_rate: float = Field(2e-4, gt=0, lt=1, description="Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float | None = Field(
        None, ge=0, lt=1, description="Fraction of steps spent warming up; default 0.03 unless warmup_steps is given."
    )
    warmup_steps: int | None = Field(None, ge=0, description="Warmup in steps; replaces warmup_ratio.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit"] = Field(
        "adamw_torch", description="Optimizer (transformers name); 8-bit ones need bitsandbytes and a GPU."
    )
    micro_batch_size: int = Field(1, ge=1, description="Rows per worker per forward pass.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    gradient_checkpointing: bool = Field(True, description="Recompute activations in backward to save memory.")
    logging_steps: int = Field(10, ge=1, description="Steps between loss/throughput log lines.")
    eval_steps: int | None = Field(50, ge=1, description="Steps between evaluations; none disables evaluation during training.")
    save_steps: int = Field(100, ge=1, description="Steps between checkpoints.")
    keep_checkpoints: int = Field(
        2,
        ge=1,
        description="Checkpoints kept in storage, best by eval loss (newest when there is no eval); "
        "the newest is always kept for resume.",
    )
    early_stopping_patience: int | None = Field(None, ge=1, description="Stop after this many evaluations without improvement.")
    early_stopping_threshold: float = Field(0.0, ge=0, description="Least eval-loss improvement that counts.")
    seed: int = Field(42, description="Seed for weights init, dropout and data order.")
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(default_factory=list, description="Experiment trackers.")
    liger_kernel: bool = Field(
        False,
        description="Liger Kernel's fused RMSNorm, RoPE and SwiGLU (Triton; CUDA GPUs and the "
        "architectures Liger supports only). TRL computes the loss with its own chunked LM head.",
    )
    activation_offloading: bool = Field(
        False,
        description="Move the activations each layer saves for backward to host RAM during the forward and back "
        "before their backward (TRL's activation offloading; CUDA GPUs only). With gradient checkpointing only each "
        "layer's input is saved, so the GPU keeps one recomputed layer and the head; the host holds the rest.",
    )
    torch_compile: bool = Field(False, description="Compile the model with torch.compile (the first steps pay the compile time).")

    objective: Objective = Field(
        "sft",
        description="sft: next-token loss on answers; dpo: preference pairs; kto: thumbs-up/down feedback; "
        "grpo: sampled answers rewarded by graders.",
    )
    dpo: DpoSpec = Field(default_factory=DpoSpec, description="DPO settings (objective dpo only).")
    kto: KtoSpec = Field(default_factory=KtoSpec, description="KTO settings (objective kto only).")
    grpo: GrpoSpec = Field(default_factory=GrpoSpec, description="GRPO settings and graders (objective grpo only).")

    @model_validator(mode="before")
    @classmethod
    def _resolve_warmup(cls, data):
        """The one place where the warmup default is chosen: a ratio of 0.03 unless warmup_steps is given."""
        if isinstance(data, dict) and data.get("warmup_ratio") is None and data.get("warmup_steps") is None:
            return {**data, "warmup_ratio": DEFAULT_WARMUP_RATIO}
        return data

    def problems(self) -> list[Problem]:
        out = objective_problems(self.objective, self.micro_batch_size, self.kto)
        out += [p.within("dpo") for p in self.dpo.problems()]
        out += [p.within("grpo") for p in self.grpo.problems()]
        for name, default in (("dpo", DpoSpec()), ("kto", KtoSpec()), ("grpo", GrpoSpec())):
            if getattr(self, name) != default and self.objective != name:
                out.append(
                    Problem(
                        name,
                        f"{name} settings given but objective is '{self.objective}'.",
                        f"set train.objective: {name}, or remove train.{name}.",
                    )
                )
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            out.append(Problem("warmup_steps", "both warmup_steps and warmup_ratio are given.", "keep one of them."))
        if self.eval_steps is not None and self.save_steps % self.eval_steps:
            out.append(
                Problem(
                    "save_steps",
                    f"save_steps ({self.save_steps}) is not a multiple of eval_steps ({self.eval_steps}), "
                    "so checkpoints cannot be ranked by the eval loss of their own step.",
                    f"set train.save_steps to a multiple of {self.eval_steps}, "
                    f"e.g. {self.eval_steps * max(1, round(self.save_steps / self.eval_steps))}.",
                )
            )
        if self.early_stopping_patience is not None and self.eval_steps is None:
            out.append(
                Problem(
                    "early_stopping_patience",
                    "early stopping needs evaluations, but eval_steps is none.",
                    "set train.eval_steps, or remove train.early_stopping_patience.",
                )
            )
        return out
