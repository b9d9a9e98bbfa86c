"""A tiny random Llama with a real BPE tokenizer and a ChatML template, built in seconds, saved like a hub model."""

from __future__ import annotations

from pathlib import Path

# SmolLM2's own template (ChatML), so tests of the tiny model exercise the same rendering as the embedded model.
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# ChatML with tools in the Hermes/Qwen2.5 style (tersely: the tiny tokenizer spends many tokens on JSON): tool
# signatures in the system turn, calls as <tool_call>{"name": ..., "arguments": ...}</tool_call> (what vLLM's `hermes`
# parser reads), results as <tool_response>. Without `tools` it renders exactly what CHATML renders.
TOOLS_CHATML = (
    "{%- if tools %}{{- '<|im_start|>system\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- else %}{{- '" + DEFAULT_SYSTEM + "' }}{%- endif %}"
    "{{- '\n# Tools\n<tools>' }}{%- for tool in tools %}{{- '\n' }}{{- tool | tojson }}{%- endfor %}"
    '{{- \'\n</tools>\nCall a tool as <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call><|im_end|>\n\' }}'
    "{%- elif messages[0]['role'] != 'system' %}{{- '<|im_start|>system\n" + DEFAULT_SYSTEM + "<|im_end|>\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}"
    "{%- if not (tools and loop.first) %}{{- '<|im_start|>system\n' + message['content'] + '<|im_end|>\n' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' and message.tool_calls %}"
    "{{- '<|im_start|>assistant\n' + (message['content'] or '') }}"
    "{%- for call in message.tool_calls %}{%- set f = call.function if call.function is defined else call %}"
    '{{- \'<tool_call>\n{"name": "\' + f.name + \'", "arguments": \' }}'
    "{{- f.arguments if f.arguments is string else f.arguments | tojson }}{{- '}\n</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{{- '<|im_start|>user\n<tool_response>\n' + message['content'] + '\n</tool_response><|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


def corpus() -> list[str]:
    """Text the tokenizer is trained on: the embedded FAQ plus chat words."""
    import json

    from cluster.embedded import embedded_data_path

    rows = [json.loads(line) for line in open(embedded_data_path("construction-faq"), encoding="utf-8")]
    return [r["instruction"] + " " + r["output"] for r in rows] + ["system user assistant human gpt hello world"] * 10


def build_tiny_model(
    out: Path, vocab_size: int = 512, hidden: int = 128, layers: int = 2, seed: int = 0, init_std: float = 0.02
) -> Path:
    """Write a 2-layer Llama (head_dim 32) and its tokenizer to `out`; load both back with from_pretrained.

    `init_std` is the weights' initializer range. At the default 0.02 the final RMSNorm bounds every logit near 0,
    so a LoRA (which cannot move that norm or the embeddings) cannot make any token likely; GRPO tests use 0.2."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(corpus(), trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHATML
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        initializer_range=init_std,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
