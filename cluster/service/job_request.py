"""`POST /v1/fine_tuning/jobs`: OpenAI's request body, checked field by field, and the rayfit spec it resolves to.

OpenAI's hyperparameters map onto the template spec of the base: `n_epochs` -> train.epochs (and max_steps off),
`batch_size` -> examples per optimizer step (gradient accumulation over the template's workers and micro-batch),
`learning_rate_multiplier` -> a multiple of the template's learning rate, DPO's `beta` -> train.dpo.beta; "auto" keeps
the template's value. `method: reinforcement` trains GRPO (train.objective grpo) rewarded by its one `grader`, checked
as a train.grpo.graders entry; its `batch_size` counts prompts (each sampled train.grpo.num_generations times),
`eval_interval` -> train.eval_steps, `eval_samples` -> evaluate.max_samples. `extra_body={"rayfit": {"spec": {...}}}`
overrides any part of the spec except what the service itself sets (the base, data and output), and is validated with
the messages of `rayfit validate`.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cluster.spec import SpecError, validate_spec
from cluster.spec.base import Problem

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


class ReinforcementHyperparameters(Hyperparameters):
    """OpenAI's reinforcement hyperparameters; `batch_size` counts prompts."""

    eval_interval: Auto | Annotated[int, Field(ge=1)] = Field("auto", description="Training steps between evaluations.")
    eval_samples: Auto | Annotated[int, Field(ge=1)] = Field("auto", description="Held-out prompts the evaluation scores.")
    compute_multiplier: Auto | float = Field("auto", description="OpenAI's exploration budget; only auto here.")
    reasoning_effort: Literal["default", "low", "medium", "high"] = Field("default", description="Only default here.")


class Supervised(Strict):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Dpo(Strict):
    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)


class Reinforcement(Strict):
    grader: dict[str, Any] = Field(description="One OpenAI grader, checked as a train.grpo.graders entry.")
    hyperparameters: ReinforcementHyperparameters = Field(default_factory=ReinforcementHyperparameters)


class Method(Strict):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: Supervised | None = None
    dpo: Dpo | None = None
    reinforcement: Reinforcement | None = None


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
        inner = getattr(self.method, self.method.type) if self.method else None
        if inner is not None:
            return inner.hyperparameters
        kinds = {"dpo": DpoHyperparameters, "reinforcement": ReinforcementHyperparameters}
        return self.hyperparameters or kinds.get(self.method_type(), Hyperparameters)()


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
        request = JobRequest.model_validate(body)
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
    if request.method_type() == "reinforcement" and request.method.reinforcement is None:
        raise BadRequest(
            "method reinforcement needs method.reinforcement.grader: the grader that scores each sampled answer.",
            "method.reinforcement.grader",
        )
    return request


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
    method = request.method_type()
    if method == "dpo":
        train["objective"] = "dpo"
    template_spec = _validated(spec, "template")
    hyper = request.hyper()
    override = request.rayfit.spec if request.rayfit else {}
    workers, micro = template_spec.cluster.num_workers, template_spec.train.micro_batch_size
    if hyper.n_epochs != "auto":
        train["epochs"], train["max_steps"] = float(hyper.n_epochs), None
    if method == "reinforcement":
        _reinforcement(request.method.reinforcement, spec, template_spec, override)
    elif hyper.batch_size != "auto":
        train["gradient_accumulation_steps"] = max(1, math.ceil(hyper.batch_size / (workers * micro)))
    multiplier = 1.0 if hyper.learning_rate_multiplier == "auto" else hyper.learning_rate_multiplier
    train["learning_rate"] = template_spec.train.learning_rate * multiplier
    if request.seed is not None:
        train["seed"] = spec["data"]["seed"] = request.seed
    if method == "dpo" and getattr(hyper, "beta", "auto") != "auto":
        train.setdefault("dpo", {})["beta"] = hyper.beta
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
    answers = final.cluster.num_workers * t.micro_batch_size * t.gradient_accumulation_steps
    resolved = {
        "n_epochs": math.ceil(t.epochs) if t.max_steps is None else "auto",
        "batch_size": answers // t.grpo.num_generations if method == "reinforcement" else answers,
        "learning_rate_multiplier": multiplier,
        **({"beta": t.dpo.beta} if t.objective == "dpo" else {}),
    }
    if method == "reinforcement":  # "auto": no evaluation during training; every held-out prompt
        resolved |= {"eval_interval": t.eval_steps or "auto", "eval_samples": final.evaluate.max_samples or "auto"}
        resolved |= {"compute_multiplier": "auto", "reasoning_effort": "default"}
    return final.model_dump(mode="json", exclude_unset=True), {**resolved, "seed": t.seed, "max_steps": t.max_steps}


def _reinforcement(rft: Reinforcement, spec: dict[str, Any], template, override: dict[str, Any]) -> None:
    """GRPO on the template: the request's grader; `batch_size` prompts (or the template's batch, rounded up to whole
    groups of num_generations answers) per step; evaluations during training only where a batch holds whole groups."""
    hyper = rft.hyperparameters
    for name, auto in (("compute_multiplier", "auto"), ("reasoning_effort", "default")):
        if getattr(hyper, name) != auto:
            raise BadRequest(
                f"method.reinforcement.hyperparameters.{name} is not supported by this endpoint (rayfit has no "
                f"equivalent). Fix: leave it out or set it to {auto!r}; rayfit.spec.train.grpo holds GRPO's own settings.",
                f"method.reinforcement.hyperparameters.{name}",
            )
    _check_grader(rft.grader)
    train, evaluate = spec["train"], spec.setdefault("evaluate", {})
    train["objective"] = "grpo"
    train["grpo"] = {**train.get("grpo", {}), "graders": [rft.grader]}
    evaluate["gate_metric"] = "reward"
    wanted = _get(override, "train.grpo.num_generations")
    group = wanted if isinstance(wanted, int) and wanted >= 2 else template.train.grpo.num_generations
    per_pass = template.cluster.num_workers * template.train.micro_batch_size
    least = group * hyper.batch_size if hyper.batch_size != "auto" else per_pass * template.train.gradient_accumulation_steps
    steps = max(1, math.ceil(least / per_pass))
    while (per_pass * steps) % group:
        steps += 1
    train["gradient_accumulation_steps"] = steps
    whole = per_pass % group == 0  # TRL evaluates whole groups of answers per evaluation batch
    if hyper.eval_interval != "auto" and not whole:
        raise BadRequest(
            f"method.reinforcement.hyperparameters.eval_interval: evaluations during training score whole groups of "
            f"{group} answers per batch, but this base's evaluation batch (micro_batch_size x workers) holds {per_pass}. "
            "Fix: leave eval_interval auto (the held-out reward is then measured when training ends, with "
            "rayfit.spec.evaluate.enabled), or set rayfit.spec.train.micro_batch_size so that it holds whole groups.",
            "method.reinforcement.hyperparameters.eval_interval",
        )
    if hyper.eval_interval != "auto":
        train["eval_steps"] = hyper.eval_interval
    elif not whole:
        train["eval_steps"] = None
    if hyper.eval_samples != "auto":
        evaluate["max_samples"] = hyper.eval_samples


def _check_grader(grader: dict[str, Any]) -> None:
    """The grader validated as rayfit's spec validates a train.grpo.graders entry; a 400 naming its field otherwise."""
    from cluster.graders.grading import GRADERS
    from cluster.spec.grpo import GrpoSpec
    from cluster.spec.load import validate_model

    try:
        validate_model(GrpoSpec, {"graders": [grader]})
    except SpecError as e:
        # pydantic's paths hold the grader type that chose the model (graders.0.string_check.operation): not a key
        named = [
            Problem(".".join(["method.reinforcement.grader", *(k for k in p.field.split(".")[2:] if k not in GRADERS)]),
                    p.problem, p.fix)
            for p in e.problems
        ]  # fmt: skip
        raise BadRequest("; ".join(str(p) for p in named), named[0].field) from None


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


_MISSING = object()


def _get(tree: dict, path: str, default: Any = None) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _has(tree: dict, path: str) -> bool:
    return _get(tree, path, _MISSING) is not _MISSING
