"""Bytes per GPU of a spec: weights, adapters, gradients, optimizer states, activations, ZeRO buffers and a reserve.

Every term is the size of tensors PyTorch, PEFT, bitsandbytes or DeepSpeed allocate, so the sum is a prediction of
`torch.cuda.max_memory_allocated`; the reserve stands for what that counter does not see (CUDA context, NCCL buffers,
allocator fragmentation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cluster.planner.params import DTYPE_BYTES, ParamCounts
from cluster.sharding import SHARDINGS
from cluster.spec.job import JobSpec
from cluster.training.deepspeed_config import PREFETCH_BUCKET

GiB = 1024**3
CONTEXT_RESERVE = 1 * GiB  # CUDA context and NCCL communicators, outside max_memory_allocated
FRAGMENTATION = 0.05  # caching-allocator slack on top of what is allocated
SHARD_BYTES = 5 * 10**9  # safetensors shards on the hub are at most 5 GB; loading maps one at a time
CPU_FALLBACK_TILES = 8.25  # float32 logits tiles TRL's chunked head holds at once without Triton (head_tile_bytes)
ADAM_MOMENT_BYTES = {"adamw_torch": None, "adamw_torch_fused": None, "adamw_8bit": 2, "paged_adamw_8bit": 2}


@dataclass(frozen=True)
class Memory:
    """Per-GPU bytes of one training setup, plus host RAM and storage it needs."""

    weights: int  # frozen base (bf16, or NF4 for QLoRA) or the trained weights of a full fine-tune
    lora_params: int  # adapter (and modules_to_save) weights
    gradients: int
    optimizer: int  # AdamW moments, fp32 master weights under DeepSpeed, `step` tensors
    gather_buffers: int  # weights ZeRO-3 or FSDP2 gathers whole: the current and the prefetched block
    activations: int  # for the spec's gradient_checkpointing setting
    activations_no_checkpointing: int
    activations_checkpointing: int
    reserve: int
    host_offload: int  # host RAM per worker for offloaded optimizer states, fp32 gradients and parameters
    host_load: int  # host RAM per worker while weights load (a safetensors shard, or one layer when sharded)
    checkpoint: int  # one checkpoint in storage: trained weights plus optimizer state for resume
    export: int  # the merged model
    reference: int = 0  # full fine-tunes with a frozen reference (DPO/KTO frozen_copy, GRPO with beta > 0): its shard
    generation: int = 0  # GRPO's in-worker rollouts: the KV cache of the answers a worker samples at once
    rollout_engine: int = 0  # GRPO's vLLM rollouts: what the engine needs on its own device (not in `total`)
    overlap: int = 0  # counted in both gradients and activations but never held at once (FSDP2: head tiles, gradients)

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
            + self.gather_buffers
            + max(self.activations, self.generation)
            + self.reference
            - self.overlap
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
    backend = SHARDINGS[c.sharding]
    deepspeed, fsdp = backend.engine == "deepspeed", backend.engine == "fsdp2"
    elems = counts.trainable
    # DeepSpeed casts the whole module (adapters too) to the half dtype and keeps fp32 master weights in the optimizer.
    # FSDP2 keeps a full fine-tune's sharded weights in float32 and computes in the half dtype (cluster/model/load.py).
    # Otherwise each parameter keeps the dtype it was created in (PEFT makes adapters float32 on half bases).
    if deepspeed:
        train_param = elems * half
    elif fsdp and m.method == "full":
        train_param = 4 * elems
    else:
        train_param = counts.trainable_bytes
    grads = train_param
    optimizer = _optimizer_bytes(spec, counts, train_param)
    param_shard = world if backend.shards_weights else 1
    state_shard = world if backend.shards_states else 1
    if m.method == "full":
        weights, lora = train_param, 0
    else:
        weights, lora = _frozen_bytes(spec, counts), train_param
    host_offload = 0
    if c.offload_optimizer:
        # DeepSpeed's CPU Adam steps on fp32 gradients in host RAM; FSDP2's CPU offload keeps the gradients there
        host_offload += (optimizer + (grads if fsdp else 4 * elems)) // state_shard
        optimizer = 0
        grads = 0 if fsdp else grads
    gather = _gather_bytes(spec, counts, weights + lora) if backend.shards_weights else 0
    weights, lora = weights // param_shard, lora // param_shard
    if c.offload_params:
        host_offload += weights + lora
        weights = lora = 0
    ddp_buckets = grads if c.sharding == "ddp" and world > 1 else 0  # DDP's reducer keeps a bucket copy of each gradient
    act_ckpt = activation_bytes(spec, config, counts, True, terms)
    act_full = activation_bytes(spec, config, counts, False, terms)
    act = act_ckpt if spec.train.gradient_checkpointing else act_full
    if spec.train.activation_offloading:
        kept = offloaded_activation_bytes(spec, config, counts, terms)
        host_offload += act - kept
        act = kept
    gradients = grads // state_shard + ddp_buckets
    optimizer //= state_shard
    reference = terms.reference // param_shard
    # FSDP2 makes each sharded gradient at its layer's reduce-scatter and the Trainer's zero_grad frees them after the
    # step, so the chunked head's tiles, which live only while the backward starts, never sit beside them, unless
    # the gradients of earlier micro-batches wait there for the step (gradient accumulation).
    tiles = head_tile_bytes(spec, config, _activation_parts(spec, config, counts, terms)[0])
    fresh = fsdp and spec.train.gradient_accumulation_steps == 1
    overlap = min(gradients, tiles) if fresh and not spec.train.activation_offloading and act >= terms.generation else 0
    allocated = weights + lora + gradients + optimizer + gather + max(act, terms.generation) + reference - overlap
    saved_weights = counts.total * half if m.method == "full" else counts.trainable_bytes
    return Memory(
        weights=weights,
        lora_params=lora,
        gradients=gradients,
        optimizer=optimizer,
        gather_buffers=gather,
        activations=act,
        activations_no_checkpointing=act_full,
        activations_checkpointing=act_ckpt,
        reserve=CONTEXT_RESERVE + int(FRAGMENTATION * allocated),
        host_offload=host_offload,
        # Sharded backends read a tensor at a time into the layer being loaded (cluster/model/sharded_load.py);
        # from_pretrained maps a safetensors shard at a time.
        host_load=counts.largest_block * half if backend.shards_weights else min(SHARD_BYTES, counts.total * half),
        checkpoint=saved_weights + _optimizer_bytes(spec, counts, train_param),
        export=counts.total * half,
        reference=reference,
        generation=terms.generation,
        rollout_engine=terms.rollout_engine,
        overlap=overlap,
    )


def _gather_bytes(spec: JobSpec, counts: ParamCounts, whole: int) -> int:
    """Weights ZeRO-3 or FSDP2 hold whole at once: the current and the prefetched block (QLoRA's unquantized
    embedding, in the half dtype, is the largest of every model in the table). ZeRO-3 gathers up to
    stage3_prefetch_bucket_size elements in one all-gather, into a flat buffer that it then copies parameter by
    parameter and keeps until the bucket's last use, so a bucket costs twice its size; on a model whose blocks are
    small (a 4-bit 135M) one bucket holds all `whole` bytes of the model."""
    half = DTYPE_BYTES[spec.model.dtype]
    block = counts.largest_block * half
    if SHARDINGS[spec.cluster.sharding].engine == "deepspeed":
        block = max(block, min(PREFETCH_BUCKET * half, whole))
    return 2 * block


def _frozen_bytes(spec: JobSpec, counts: ParamCounts) -> int:
    """The frozen base. QLoRA unsharded: PEFT's prepare_model_for_kbit_training casts what is not 4-bit (embeddings,
    norms, head) to float32; sharded (ZeRO-3, FSDP2) those stay in the training dtype (cluster/model/load.py)."""
    if spec.model.method != "qlora" or not SHARDINGS[spec.cluster.sharding].shards_weights:
        return counts.frozen_bytes
    return counts.frozen_bytes - counts.unquantized * (4 - DTYPE_BYTES[spec.model.dtype])


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


def offloaded_activation_bytes(spec: JobSpec, config, counts: ParamCounts, terms) -> int:
    """Activations left on the GPU with train.activation_offloading (TRL's OffloadActivations): saved tensors go to
    host RAM in the forward and come back one layer ahead of their backward, while the head's stay on the GPU. With
    checkpointing: two layer inputs, the recomputed layer and the head; without: two layers' tensors and the head."""
    tokens, layer_input, per_layer, head = _activation_parts(spec, config, counts, terms)
    if spec.train.gradient_checkpointing:
        return tokens * (2 * layer_input + per_layer + head)
    return tokens * (2 * per_layer + head)


def _optimizer_bytes(spec: JobSpec, counts: ParamCounts, train_param: int) -> int:
    """AdamW state of all trainable parameters, before any sharding."""
    moment = ADAM_MOMENT_BYTES[spec.train.optimizer]
    elems = counts.trainable
    if SHARDINGS[spec.cluster.sharding].engine == "deepspeed":
        master = 4 * elems if DTYPE_BYTES[spec.model.dtype] < 4 else 0  # ZeRO paper: 16 bytes/param = 2 + 2 + 12
        return master + (8 * elems if moment is None else moment * elems)
    # torch.optim.AdamW: exp_avg and exp_avg_sq shaped and typed like the parameter, and a float32 `step` per tensor
    moments = 2 * train_param if moment is None else moment * elems
    return moments + 4 * counts.trainable_tensors


def activation_bytes(spec: JobSpec, config, counts: ParamCounts, checkpointing: bool, terms) -> int:
    """Saved activations of one micro-batch at its peak (the loss's backward), per GPU: every layer's saved tensors,
    or with checkpointing only each layer's input plus one recomputed layer; and the head. `terms` (the objective's
    PlanTerms) give the sequences per row and their length; a reference forward runs under no_grad and saves none."""
    tokens, layer_input, per_layer, head = _activation_parts(spec, config, counts, terms)
    layers = config.num_hidden_layers
    body = layers * layer_input + per_layer if checkpointing else layers * per_layer
    return tokens * (body + head) + fused_head_bytes(spec, config, tokens)


def fused_head_bytes(spec: JobSpec, config, tokens: int) -> int:
    """The loss's working memory beyond what each token keeps. TRL 1.16 computes every objective's loss with its own
    chunked LM head (`trl.trainer.utils.add_fused_lm_head`, `ChunkedLogProbFunction`): logits exist only as tiles
    of at most 4,096 tokens x 32,768 vocabulary entries (head_tile_bytes), and the head's weight gradient is
    accumulated in float32 when the head trains (a full fine-tune). It also refuses Liger's fused cross-entropy, so
    the chunked head is what every rayfit run computes."""
    weight_grad = 4 * config.vocab_size * config.hidden_size if spec.model.method == "full" else 0
    return head_tile_bytes(spec, config, tokens) + weight_grad


def head_tile_bytes(spec: JobSpec, config, tokens: int) -> int:
    """The chunked head's logits tiles: on a GPU one in the forward and one in the backward, which Triton kernels
    overwrite in place. A CPU has no Triton, and TRL's torch fallback (`_backward_tile` in trl/kernels/
    chunked_logprob.py) makes float32 copies of the whole tile (y, z, log p, p, the gradient, the target mask and
    the two temporaries of `grad += g * (is_target - p)`): 8.25 tiles at its peak, where a GPU holds one. Measured:
    262 MiB more RssAnon in its backward for SmolLM2's 255 x 32,768 float32 tile, 8.2 tiles."""
    m = spec.model
    cells = min(tokens, 4096) * min(config.vocab_size, 32768)
    if not spec.cluster.use_gpu:
        return int(CPU_FALLBACK_TILES * cells * 4)  # rayfit computes in float32 on CPU
    return 2 * cells * DTYPE_BYTES[m.quantization.compute_dtype if m.method == "qlora" else m.dtype]


def _activation_parts(spec: JobSpec, config, counts: ParamCounts, terms) -> tuple[int, int, int, int]:
    """Tokens of one micro-batch, and bytes per token of a layer's input, of what one layer saves, and of the head.

    Per token and decoder layer: the two RMSNorms (fp32 input copy + normalized output), attention q, k, v, output
    and o_proj input, the SwiGLU MLP's gate, up, SiLU and product, and what each adapter saves. The head: see
    fused_head_bytes.
    """
    m = spec.model
    seq = terms.sequence_tokens
    tokens = spec.train.micro_batch_size * seq * terms.sequences_per_row
    a = DTYPE_BYTES[m.quantization.compute_dtype if m.method == "qlora" else m.dtype]
    # Under DeepSpeed or FSDP2 the adapters compute in the half dtype; unsharded they keep PEFT's float32 (QLoRA: TRL's
    # bfloat16).
    unsharded_adapter = counts.trainable_bytes // max(counts.trainable, 1)
    adapter = a if spec.cluster.sharding != "ddp" or m.method == "full" else unsharded_adapter
    h = config.hidden_size
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
    # The chunked head (fused_head_bytes) keeps per token the final norm, the fp32 gradient of the hidden state and
    # four fp32 statistics (log-normaliser, entropy, target logit, running sums).
    head = norm + 4 * h + 16
    return tokens, a * h, per_layer, head
