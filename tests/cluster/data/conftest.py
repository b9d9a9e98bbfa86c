"""Tokenizers for the data tests: SmolLM2's (ChatML), and a Llama-3-style one built locally from the tiny model's."""

from __future__ import annotations

from pathlib import Path

import pytest

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    """SmolLM2-135M-Instruct's own tokenizer and ChatML template (no generation markers)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    """The tiny random Llama's tokenizer (ChatML)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def llama3_tokenizer_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny tokenizer with Llama-3's header and end-of-turn special tokens and a Llama-3-style template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_special_tokens({"additional_special_tokens": LLAMA3_SPECIALS})
    tok.bos_token, tok.eos_token = "<|begin_of_text|>", "<|eot_id|>"
    tok.chat_template = LLAMA3_TEMPLATE
    out = tmp_path_factory.mktemp("llama3-tokenizer")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def llama3_tokenizer(llama3_tokenizer_dir):
    """The Llama-3-style tokenizer loaded back from disk, as a user's model folder would be."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llama3_tokenizer_dir)
