"""Every record format to exact token ids and loss-mask boundaries, for ChatML (SmolLM2) and a Llama-3-style template."""

from __future__ import annotations

import pytest

from cluster.data.formats import to_sample
from cluster.data.render import IGNORE, render_conversation, render_sample, special_ids
from cluster.errors import UserError

RECORDS = {
    "alpaca": {"instruction": "Hi", "input": "", "output": "Hello!", "system": "Be brief."},
    "messages": {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
        ]
    },
    "sharegpt": {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello!"},
        ]
    },
}
# SmolLM2's tokenizer on
# "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
SMOL_IDS = [1, 9690, 198, 6077, 5453, 30, 2, 198, 1, 4093, 198, 26843, 2, 198, 1, 520, 9531, 198, 19556, 17, 2, 198]
SMOL_TRAINED = (18, 21)  # "Hello", "!", "<|im_end|>"; the "\n" after <|im_end|> is template, not answer


def trained_spans(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) runs of trained positions."""
    spans, start = [], None
    for i, v in enumerate([*labels, IGNORE]):
        if v != IGNORE and start is None:
            start = i
        if v == IGNORE and start is not None:
            spans.append((start, i))
            start = None
    return spans


@pytest.mark.parametrize("fmt", sorted(RECORDS))
def test_chatml_exact_ids_and_mask(smollm2_tokenizer, fmt):
    sample = to_sample(RECORDS[fmt], fmt, None)
    ids, labels = render_sample(smollm2_tokenizer, sample, special_ids(smollm2_tokenizer))
    assert ids == SMOL_IDS
    assert ids == smollm2_tokenizer.apply_chat_template(sample["messages"], tokenize=True)["input_ids"]
    assert trained_spans(labels) == [SMOL_TRAINED]
    assert labels[18:21] == [19556, 17, 2] and smollm2_tokenizer.convert_ids_to_tokens(2) == "<|im_end|>"


def test_text_format_trains_every_token_and_ends_with_eos(smollm2_tokenizer):
    sample = to_sample({"text": "Hello world"}, "text", None)
    ids, labels = render_sample(smollm2_tokenizer, sample, special_ids(smollm2_tokenizer))
    assert ids == [*smollm2_tokenizer("Hello world")["input_ids"], smollm2_tokenizer.eos_token_id]
    assert labels == ids


def test_multi_turn_masks_every_assistant_turn_only(smollm2_tokenizer):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "Yes"},
    ]
    ids, labels = render_conversation(smollm2_tokenizer, messages)
    assert ids == smollm2_tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]
    texts = [smollm2_tokenizer.decode(ids[a:b]) for a, b in trained_spans(labels)]
    assert texts == ["Hello!<|im_end|>", "Yes<|im_end|>"]


def test_system_prompt_from_spec_only_when_missing(smollm2_tokenizer):
    with_default = to_sample({"instruction": "Hi", "output": "Yo"}, "alpaca", "Spec prompt.")
    assert with_default["messages"][0] == {"role": "system", "content": "Spec prompt."}
    own = to_sample(RECORDS["messages"], "messages", "Spec prompt.")
    assert own["messages"][0]["content"] == "Be brief."


@pytest.mark.parametrize("fmt", sorted(RECORDS))
def test_llama3_template_ids_and_mask(llama3_tokenizer, fmt):
    tok = llama3_tokenizer
    sample = to_sample(RECORDS[fmt], fmt, None)
    ids, labels = render_sample(tok, sample, special_ids(tok))
    assert ids == tok.apply_chat_template(sample["messages"], tokenize=True)["input_ids"]
    bot, sh, eh, eot = tok.convert_tokens_to_ids(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    assert ids[0] == bot and ids[-1] == eot
    ((start, end),) = trained_spans(labels)
    assert end == len(ids)  # the answer runs through <|eot_id|>, the last token
    assert tok.decode(ids[start:end]) == "Hello!<|eot_id|>"
    assert ids[start - 1] == tok("\n\n", add_special_tokens=False)["input_ids"][-1]
    assert ids.count(sh) == 3 and ids.count(eh) == 3 and ids.count(eot) == 3
    assert all(v == IGNORE for v in labels[:start])


def test_template_without_end_of_turn_token_is_refused(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    with pytest.raises(UserError, match="no end-of-turn special token"):
        render_conversation(tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])


def test_llama3_report_example_shows_the_trained_answer(llama3_tokenizer, tmp_path):
    import json

    from cluster.data import check_data
    from tests.cluster.data.test_prepare import make_spec

    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(RECORDS["sharegpt"]))
    report = check_data(make_spec([{"path": str(path)}], max_seq_len=128, eval_split=0.0), llama3_tokenizer)
    assert [text for text, trained in report.example if trained] == ["Hello!<|eot_id|>"]
    assert "[[Hello!<|eot_id|>]]" in report.to_table()
