"""The plan as a table for people."""

from __future__ import annotations

from cluster.planner.gpus import GiB
from cluster.planner.plan import Plan


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / GiB:8.2f} GiB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "- (token count unknown: pass --dataset-tokens or set train.max_steps)"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h {rest // 60:02d}m"


def format_plan(plan: Plan) -> str:
    """A plain-text report: model, memory per GPU by part, sharding alternatives, host RAM, storage, speed, cost."""
    s, m, c, t = plan.spec, plan.memory, plan.counts, plan.throughput
    if plan.gpu is not None:
        where = f"{plan.num_gpus} x {plan.gpu.name} ({_gib(plan.gpu.memory).strip()} each)"
    elif s.cluster.use_gpu:
        where = f"{plan.num_gpus} GPUs of unknown type (pass --gpu or set plan.gpu to check the fit)"
    else:
        where = f"{plan.num_gpus} CPU workers (per-worker RAM below)"
    sharding = (
        s.cluster.sharding
        + (" + offload optimizer" if s.cluster.offload_optimizer else "")
        + (" + offload params" if s.cluster.offload_params else "")
        + (" + offload activations" if s.train.activation_offloading else "")
    )
    method = (
        s.model.method
        + (f" r={s.model.lora.r}" if s.model.method != "full" else "")
        + (
            f" ({s.model.quantization.quant_type}{' double-quant' if s.model.quantization.double_quant else ''})"
            if s.model.method == "qlora"
            else ""
        )
    )
    lines = [
        f"model        {s.model.base}  [{plan.architecture}, config from {plan.config_source}]",
        f"parameters   {c.total:,} total, {c.trainable:,} trainable ({100 * c.trainable / c.total:.3f}%)",
        f"setup        {method}, {s.model.dtype}, {where}, {sharding}",
        f"batch        micro-batch {s.train.micro_batch_size} x {_sequence_tokens(plan)} tokens, "
        f"gradient checkpointing {'on' if s.train.gradient_checkpointing else 'off'}",
        "",
        "memory per GPU" if plan.gpu is not None or s.cluster.use_gpu else "memory per worker (RAM)",
        f"  weights                {_gib(m.weights)}",
        f"  adapters               {_gib(m.lora_params)}",
        f"  gradients              {_gib(m.gradients)}",
        f"  optimizer states       {_gib(m.optimizer)}",
        f"  gathered layers        {_gib(m.gather_buffers)}   (ZeRO-3, FSDP2: the current and the next, whole)",
        *([f"  reference model        {_gib(m.reference)}   (frozen copy for {s.train.objective})"] if m.reference else []),
        f"  activations            {_gib(m.activations)}   (checkpointing on {_gib(m.activations_checkpointing).strip()}, "
        f"off {_gib(m.activations_no_checkpointing).strip()})",
        *(
            [f"  KV cache (sampling)    {_gib(m.generation)}   (not at once with activations: the larger counts)"]
            if m.generation
            else []
        ),
        *(
            [f"  never at once          {_gib(-m.overlap)}   (FSDP2: the head's logits tiles and the gradients)"]
            if m.overlap
            else []
        ),
        f"  reserve                {_gib(m.reserve)}",
        f"  total                  {_gib(m.total)}   " + _verdict(plan),
        "",
        *_rollout_lines(plan),
        "total per GPU by sharding  " + ", ".join(f"{k} {v / GiB:.1f}" for k, v in plan.by_sharding.items()) + " GiB",
        f"host RAM per worker   offload {_gib(m.host_offload).strip()}, loading {_gib(m.host_load).strip()}",
        f"storage               checkpoint {_gib(m.checkpoint).strip()}, merged export {_gib(m.export).strip()}",
        *_step_lines(plan),
        "",
        f"compute      {t.flops_per_token / 1e9:.1f} GFLOP per token, {t.tokens_per_step:,} tokens per optimizer step",
    ]
    if t.tokens_per_s is not None:
        sampling = f" (sampling {t.sampling_s:.2f} s of it)" if t.sampling_s else ""
        lines.append(
            f"speed        {t.tokens_per_s:,.0f} tokens/s at {plan.mfu:.0%} utilisation, {t.step_time_s:.2f} s per step{sampling}"
        )
    lines.append(f"train tokens {t.train_tokens:,}" if t.train_tokens is not None else "train tokens unknown")
    if plan.gpu is not None:
        lines.append(f"wall time    {_duration(t.wall_time_s)}")
        cost = "- (pass --price-per-gpu-hour or set plan.price_per_gpu_hour)" if t.cost is None else f"{t.cost:,.2f}"
        lines.append(f"cost         {cost}")
    return "\n".join(lines) + "\n"


def _rollout_lines(plan: Plan) -> list[str]:
    """GRPO's vLLM engine: its own device, so its own line and its own fit."""
    m = plan.memory
    if not m.rollout_engine:
        return []
    where = "its own GPU" if plan.spec.cluster.use_gpu else "one CPU, host RAM"
    fit = ""
    if plan.gpu is not None:
        fit = "  FITS" if plan.rollout_fits else f"  DOES NOT FIT a {plan.gpu.name}"
    return [f"rollout engine         {_gib(m.rollout_engine)}   (vLLM on {where}: weights, KV cache, reserve){fit}", ""]


def _sequence_tokens(plan: Plan) -> int:
    """Tokens of one training sequence: data.max_seq_len, or GRPO's prompt + answer."""
    t, s = plan.throughput, plan.spec
    return t.tokens_per_step // (s.train.micro_batch_size * s.train.gradient_accumulation_steps * s.cluster.num_workers)


def _verdict(plan: Plan) -> str:
    if plan.fits is None:
        return "(no GPU to check against)"
    headroom = (plan.gpu.memory - plan.memory.total) / GiB
    return f"FITS ({headroom:.1f} GiB free)" if plan.fits else f"DOES NOT FIT ({-headroom:.1f} GiB over)"


def _step_lines(plan: Plan) -> list[str]:
    """One line per Ray task or actor after training (merge, evaluate, an evaluation engine): what it asks for."""
    lines = []
    for r in (plan.merge, plan.evaluate, plan.generate):
        if r is not None:
            gpu = f", 1 GPU with {_gib(r.gpu_memory).strip()}" if r.num_gpus else ""
            name = "eval engine" if r.step == "generate" else r.step + " task"
            lines.append(f"{name:<21} host RAM {_gib(r.host_ram).strip()}{gpu}, {r.num_cpus:g} CPU ({r.how})")
    return lines
