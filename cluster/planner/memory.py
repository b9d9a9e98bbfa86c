"""Bytes per GPU of a spec: weights, adapters, gradients, optimizer states, activations, ZeRO buffers and a reserve.

Every term is the size of tensors PyTorch, PEFT, bitsandbytes or DeepSpeed allocate, so the sum is a prediction of
`torch.cuda.max_memory_allocated`; the reserve stands for what that counter does not see (CUDA context, NCCL buffers,
allocator fragmentation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cluster.planner.params import DTYPE_BYTES, ParamCounts
from cluster.spec.job import JobSpec

GiB = 1024**3
CONTEXT_RESERVE = 1 * GiB  # CUDA context and NCCL communicators, outside max_memory_allocated
FRAGMENTATION = 0.05  # caching-allocator slack on top of what is allocated
SHARD_BYTES = 5 * 10**9  # safetensors shards on the hub are at most 5 GB; loading maps one at a time
ADAM_MOMENT_BYTES = {"adamw_torch": None, "adamw_torch_fused": None, "adamw_8bit": 2, "paged_adamw_8bit": 2}


@dataclass(frozen=True)
class Memory:
    """Per-GPU bytes of one training setup, plus host RAM and storage it needs."""

    weights: int  # frozen base (bf16, or NF4 for QLoRA) or the trained weights of a full fine-tune
    lora_params: int  # adapter (and modules_to_save) weights
    gradients: int
    optimizer: int  # AdamW moments, fp32 master weights under DeepSpeed, `step` tensors
    zero3_buffers: int  # parameters ZeRO-3 gathers for the current and the prefetched block
    activations: int  # for the spec's gradient_checkpointing setting
    activations_no_checkpointing: int
    activations_checkpointing: int
    reserve: int
    host_offload: int  # host RAM per worker for offloaded optimizer states, fp32 gradients and parameters
    host_load: int  # host RAM per worker while weights load (one safetensors shard mapped at a time)
    checkpoint: int  # one checkpoint in storage: trained weights plus optimizer state for resume
    export: int  # the merged model
    reference: int = 0  # full fine-tunes with a frozen reference (DPO/KTO frozen_copy, GRPO with beta > 0): its shard
    generation: int = 0  # GRPO's in-worker rollouts: the KV cache of the answers a worker samples at once
    rollout_engine: int = 0  # GRPO's vLLM rollouts: what the engine needs on its own device (not in `total`)

    @property
    def allocated(self) -> int:
        """What torch.cuda.max_memory_allocated should show at the peak of a step.

        Sampling (the KV cache) and the backward pass (activations) come one after the other in a GRPO step, so the
        larger of the two counts."""
        return (
            self.weights
            + self.lora_params
            + self.gradients
            + self.optimizer
            + self.zero3_buffers
            + max(self.activations, self.generation)
            + self.reference
        )

    @property
    def total(self) -> int:
        """Everything one GPU must hold, reserve included."""
        return self.allocated + self.reserve

    def to_json(self) -> dict:
        """Plain dict of bytes, with allocated and total."""
        return {**asdict(self), "allocated": self.allocated, "total": self.total}


def memory(spec: JobSpec, config, counts: ParamCounts) -> Memory:
    """Per-GPU memory of `spec` (its cluster.num_workers is the number of GPUs sharing the model); the objective's
    own terms (sequences per row, reference, rollouts) come from its recipe (cluster/objectives/)."""
    from cluster.objectives import recipe_for

    terms = recipe_for(spec).plan_terms(spec, config, counts)
    c, m = spec.cluster, spec.model
    world = c.num_workers
    half = DTYPE_BYTES[m.dtype]
    deepspeed = c.deepspeed != "none"
    # DeepSpeed casts the whole module (adapters too) to the half dtype and keeps fp32 master weights in the optimizer;
    # plain DDP keeps each parameter in the dtype it was created in (PEFT makes adapters float32 on half bases).
    elems = counts.trainable
    train_param = elems * half if deepspeed else counts.trainable_bytes
    grads = train_param
    optimizer = _optimizer_bytes(spec, counts, train_param)
    frozen = counts.frozen_bytes
    param_shard = world if c.deepspeed == "zero3" else 1
    state_shard = world if deepspeed else 1
    if m.method == "full":
        weights, lora = train_param, 0
    else:
        weights, lora = frozen, train_param
    host_offload = 0
    if c.offload_optimizer:
        host_offload += optimizer // state_shard + 4 * elems // state_shard  # CPU Adam steps on fp32 gradients in RAM
        optimizer = 0
    weights, lora = weights // param_shard, lora // param_shard
    if c.offload_params:
        host_offload += weights + lora
        weights = lora = 0
    ddp_buckets = grads if not deepspeed and world > 1 else 0  # DDP's reducer keeps a bucket copy of every gradient
    zero3 = 2 * counts.largest_block * half if c.deepspeed == "zero3" else 0
    act_ckpt = activation_bytes(spec, config, counts, True, terms)
    act_full = activation_bytes(spec, config, counts, False, terms)
    act = act_ckpt if spec.train.gradient_checkpointing else act_full
    gradients = grads // state_shard + ddp_buckets
    optimizer //= state_shard
    reference = terms.reference // param_shard
    allocated = weights + lora + gradients + optimizer + zero3 + max(act, terms.generation) + reference
    saved_weights = counts.total * half if m.method == "full" else counts.trainable_bytes
    return Memory(
        weights=weights,
        lora_params=lora,
        gradients=gradients,
        optimizer=optimizer,
        zero3_buffers=zero3,
        activations=act,
        activations_no_checkpointing=act_full,
        activations_checkpointing=act_ckpt,
        reserve=CONTEXT_RESERVE + int(FRAGMENTATION * allocated),
        host_offload=host_offload,
        host_load=min(SHARD_BYTES, counts.total * half),
        checkpoint=saved_weights + _optimizer_bytes(spec, counts, train_param),
        export=counts.total * half,
        reference=reference,
        generation=terms.generation,
        rollout_engine=terms.rollout_engine,
    )


def frozen_copy_bytes(spec: JobSpec, counts: ParamCounts) -> int:
    """A frozen reference model beside the policy, before ZeRO-3 sharding: a copy of a full fine-tune in the
    training dtype; nothing for LoRA/QLoRA, whose reference is the base with the adapter disabled."""
    return counts.total * DTYPE_BYTES[spec.model.dtype] if spec.model.method == "full" else 0


def kv_cache_bytes(config, dtype: str, sequences: int, tokens: int) -> int:
    """Keys and values of every layer for `sequences` sequences of `tokens` tokens each (what generation caches)."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * DTYPE_BYTES[dtype] * sequences * tokens


def _optimizer_bytes(spec: JobSpec, counts: ParamCounts, train_param: int) -> int:
    """AdamW state of all trainable parameters, before any sharding."""
    moment = ADAM_MOMENT_BYTES[spec.train.optimizer]
    elems = counts.trainable
    if spec.cluster.deepspeed != "none":
        master = 4 * elems if DTYPE_BYTES[spec.model.dtype] < 4 else 0  # ZeRO paper: 16 bytes/param = 2 + 2 + 12
        return master + (8 * elems if moment is None else moment * elems)
    # torch.optim.AdamW: exp_avg and exp_avg_sq shaped and typed like the parameter, and a float32 `step` per tensor
    moments = 2 * train_param if moment is None else moment * elems
    return moments + 4 * counts.trainable_tensors


def activation_bytes(spec: JobSpec, config, counts: ParamCounts, checkpointing: bool, terms) -> int:
    """Saved activations of one micro-batch at its peak (the loss's backward), per GPU; `terms` (the objective's
    PlanTerms) give the sequences per row and their length. A reference forward runs under no_grad and saves
    no activations.

    Per token and decoder layer: the two RMSNorms (fp32 input copy + normalized output), attention q, k, v, output
    and o_proj input, the SwiGLU MLP's gate, up, SiLU and product, and what each adapter saves; with checkpointing,
    only each layer's input plus one recomputed layer. The head holds logits, their fp32 log-softmax and gradients.
    """
    m = spec.model
    seq = terms.sequence_tokens
    tokens = spec.train.micro_batch_size * seq * terms.sequences_per_row
    a = DTYPE_BYTES[m.quantization.compute_dtype if m.method == "qlora" else m.dtype]
    adapter = a if spec.cluster.deepspeed != "none" or m.method == "full" else counts.trainable_bytes // max(counts.trainable, 1)
    h, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    q_dim = heads * head_dim
    kv_dim = (getattr(config, "num_key_value_heads", None) or heads) * head_dim
    # SDPA repeats k/v for grouped-query attention whenever a mask is passed (packing or padding); flash/flex do not.
    native_gqa = m.attn_implementation in ("flash_attention_2", "flex_attention")
    kv_saved = kv_dim if native_gqa else q_dim
    inter = getattr(config, "intermediate_size", None) or 4 * h
    norm = 4 * h + a * h
    attention = a * (3 * q_dim + 2 * kv_saved)
    if m.attn_implementation == "eager":
        attention += heads * seq * (4 + a)  # fp32 softmax and its cast back, per query token
    mlp = 4 * a * inter
    dropout = m.method != "full" and m.lora.dropout > 0
    copies = dropout or adapter != a
    lora = counts.lora_inputs_per_layer * (adapter * copies + dropout) + counts.lora_rank_per_layer * adapter
    per_layer = 2 * norm + attention + mlp + lora
    body = layers * a * h + per_layer if checkpointing else layers * per_layer
    head = norm + vocab * (a + 12)  # logits, fp32 log-probs saved by cross-entropy, fp32 gradient in and out
    return tokens * (body + head)
