"""`POST /v1/fine_tuning/jobs`: OpenAI's request body, checked field by field, and the rayfit spec it resolves to.

OpenAI's hyperparameters map onto the template spec of the base: `n_epochs` -> train.epochs (and max_steps off),
`batch_size` -> examples per optimizer step (gradient accumulation over the template's workers and micro-batch),
`learning_rate_multiplier` -> a multiple of the template's learning rate, DPO's `beta` -> train.dpo.beta; "auto" keeps
the template's value. `extra_body={"rayfit": {"spec": {...}}}` overrides any part of the spec except what the service
itself sets (the base, data and output), and is validated with the messages of `rayfit validate`.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cluster.spec import SpecError, validate_spec

Auto = Literal["auto"]
# union branch names in an error's loc (left out of the param a 400 names)
_BRANCH = re.compile(r"^(literal\[.*\]|constrained-.*|int|float|str|bool|function-.*|dict\[.*\]|list\[.*\])$")
SERVICE_OWNED = ("output", "data.train", "data.eval", "model.base", "model.init_from", "model.trust_remote_code")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(Strict):
    """OpenAI's supervised hyperparameters (the deprecated top-level `hyperparameters` too)."""

    n_epochs: Auto | Annotated[int, Field(ge=1, le=50)] = Field("auto", description="Passes over the training file.")
    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] = Field("auto", description="Examples per optimizer step.")
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=10)] = Field(
        "auto", description="Multiple of the template's rate."
    )


class DpoHyperparameters(Hyperparameters):
    """OpenAI's DPO hyperparameters."""

    beta: Auto | Annotated[float, Field(gt=0, le=2)] = Field(
        "auto", description="How far the policy may move from the reference."
    )


class Supervised(Strict):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Dpo(Strict):
    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)


class Method(Strict):
    type: Literal["supervised", "dpo"]
    supervised: Supervised | None = None
    dpo: Dpo | None = None


class RayfitExtension(Strict):
    spec: dict[str, Any] = Field(default_factory=dict, description="Any part of a rayfit spec.")


class JobRequest(Strict):
    """The job-create body as OpenAI's client sends it, plus the `rayfit` extension."""

    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = None
    method: Method | None = None
    hyperparameters: Hyperparameters | None = None
    integrations: list[Any] | None = None
    rayfit: RayfitExtension | None = None

    def method_type(self) -> str:
        return self.method.type if self.method else "supervised"

    def hyper(self) -> Hyperparameters:
        """The hyperparameters given (method's first, then the deprecated top-level ones)."""
        m = self.method
        inner = (m.supervised if m and m.type == "supervised" else m.dpo if m else None) if m else None
        if inner is not None:
            return inner.hyperparameters
        return self.hyperparameters or (DpoHyperparameters() if self.method_type() == "dpo" else Hyperparameters())


class BadRequest(Exception):
    """A request the API answers 400, naming `param`."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def parse_request(body: Any) -> JobRequest:
    """The body as a JobRequest; BadRequest naming the first bad parameter otherwise."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object.")
    try:
        return JobRequest.model_validate(body)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        # A value that is neither "auto" nor a valid number fails both union branches: the number's error says more.
        first = next((err for err in errors if err["type"] != "literal_error"), errors[0])
        loc = [str(x) for x in first["loc"] if isinstance(x, int) or not _BRANCH.match(str(x))]
        param = ".".join(loc) or None
        if first["type"] == "extra_forbidden":
            raise BadRequest(f"unknown parameter {param!r}.", param, "unknown_parameter") from None
        got = first.get("input")
        raise BadRequest(f"invalid {param}: {first['msg']} (got {got!r:.60}).", param) from None


def resolve_spec(
    request: JobRequest,
    template: dict[str, Any],
    base_uri: str,
    train_uri: str,
    valid_uri: str | None,
    output: tuple[str, str],
    init_from: str | None = None,
    max_lora_rank: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the validated spec as a plain dict, the resolved hyperparameters as OpenAI shows them). `max_lora_rank` is the
    largest rank the serving engine holds: a larger adapter would train, then be refused at its first request."""
    spec = copy.deepcopy(template)
    spec.setdefault("model", {})["base"] = base_uri
    if init_from:
        spec["model"]["init_from"] = init_from
    data = spec.setdefault("data", {})
    data["train"] = [{"path": train_uri}]
    if valid_uri:
        data["eval"], data["eval_split"] = [{"path": valid_uri}], 0.0
    spec["output"] = {"storage": output[0], "name": output[1]}
    spec.setdefault("merge", {})["enabled"] = False  # the adapter is what is published
    train = spec.setdefault("train", {})
    if request.method_type() == "dpo":
        train["objective"] = "dpo"
    template_spec = _validated(spec, "template")
    hyper = request.hyper()
    workers, micro = template_spec.cluster.num_workers, template_spec.train.micro_batch_size
    if hyper.n_epochs != "auto":
        train["epochs"], train["max_steps"] = float(hyper.n_epochs), None
    if hyper.batch_size != "auto":
        train["gradient_accumulation_steps"] = max(1, math.ceil(hyper.batch_size / (workers * micro)))
    multiplier = 1.0 if hyper.learning_rate_multiplier == "auto" else hyper.learning_rate_multiplier
    train["learning_rate"] = template_spec.train.learning_rate * multiplier
    if request.seed is not None:
        train["seed"] = spec["data"]["seed"] = request.seed
    if request.method_type() == "dpo" and getattr(hyper, "beta", "auto") != "auto":
        train.setdefault("dpo", {})["beta"] = hyper.beta
    override = request.rayfit.spec if request.rayfit else {}
    for path in SERVICE_OWNED:
        if _has(override, path):
            raise BadRequest(f"rayfit.spec.{path} is set by the service and cannot be overridden.", f"rayfit.spec.{path}")
    final = _validated(_merged(spec, override), "rayfit.spec")
    if final.model.method == "full":
        raise BadRequest(
            "model.method full is not served by this endpoint: a full fine-tune's merged export is a new model, not an "
            "adapter. Fix: use lora or qlora here, or run the full fine-tune with `rayfit submit SPEC` and serve its "
            "export with `serve run serve.app:build_app model=EXPORT_URI`.",
            "rayfit.spec.model.method",
        )
    rank = final.model.lora.r if final.model.lora else None
    if max_lora_rank is not None and rank is not None and rank > max_lora_rank:
        raise BadRequest(
            f"model.lora.r {rank} is above the largest LoRA rank this endpoint's vLLM engine serves ({max_lora_rank}, "
            f"its vllm.max_lora_rank): the adapter would train, then be refused. Fix: set rayfit.spec.model.lora.r to "
            f"at most {max_lora_rank}, or serve the base with a larger vllm.max_lora_rank.",
            "rayfit.spec.model.lora.r",
        )
    t = final.train
    resolved = {
        "n_epochs": math.ceil(t.epochs) if t.max_steps is None else "auto",
        "batch_size": workers * t.micro_batch_size * t.gradient_accumulation_steps,
        "learning_rate_multiplier": multiplier,
        **({"beta": t.dpo.beta} if t.objective == "dpo" else {}),
    }
    return final.model_dump(mode="json", exclude_unset=True), {**resolved, "seed": t.seed, "max_steps": t.max_steps}


def _validated(spec: dict[str, Any], where: str):
    try:
        return validate_spec(spec)
    except SpecError as e:
        first = e.problems[0]
        raise BadRequest(f"{where}: {e}", f"rayfit.spec.{first.field}" if where == "rayfit.spec" else None) from None


def _merged(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _has(tree: dict, path: str) -> bool:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
