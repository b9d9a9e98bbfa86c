"""Every new record shape: detection, exact token ids and loss-mask boundaries (ChatML, Llama-3-style, tool calls)."""

from __future__ import annotations

import json

import pytest

from cluster.data.formats import _signatures, refuse_untrainable, to_sample
from cluster.data.mapping import apply_fields
from cluster.data.render import IGNORE, render_sample, special_ids
from cluster.errors import UserError
from tests.cluster.data.test_render import SMOL_IDS, SMOL_TRAINED, trained_spans

SYSTEM, USER, ANSWER = "Be brief.", "Hi", "Hello!"
# Each renders to the same conversation as the old shapes: system, user "Hi", assistant "Hello!" (trained).
SAME_CONVERSATION = {
    "prompt_completion": {
        "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}],
        "completion": [{"role": "assistant", "content": ANSWER}],
    },
    "openai_evals": {"input": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}], "ideal": ANSWER},
    "messages": {
        "messages": [{"from": "system", "value": SYSTEM}, {"from": "human", "value": USER}, {"from": "gpt", "value": ANSWER}]
    },
    "sharegpt": {
        "conversations": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": USER},
            {"role": "assistant", "content": ANSWER},
        ]
    },
}
WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
TOOL_RECORD = {
    "tools": WEATHER_TOOLS,
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "18 C"},
        {"role": "assistant", "content": "It is 18 degrees in Paris."},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "You are welcome.", "weight": 0},
        {"role": "user", "content": "Rain?"},
        {"role": "assistant", "content": "No rain today."},
    ],
}


@pytest.mark.parametrize("fmt", sorted(SAME_CONVERSATION))
def test_new_shapes_chatml_exact_ids_and_mask(smollm2_tokenizer, fmt):
    assert _signatures(SAME_CONVERSATION[fmt]) == {fmt}
    sample = to_sample(SAME_CONVERSATION[fmt], fmt, None)
    ids, labels = render_sample(smollm2_tokenizer, sample, special_ids(smollm2_tokenizer))
    assert ids == SMOL_IDS
    assert trained_spans(labels) == [SMOL_TRAINED]


@pytest.mark.parametrize("fmt", sorted(SAME_CONVERSATION))
def test_new_shapes_llama3_exact_ids_and_mask(llama3_tokenizer, fmt):
    tok = llama3_tokenizer
    sample = to_sample(SAME_CONVERSATION[fmt], fmt, None)
    ids, labels = render_sample(tok, sample, special_ids(tok))
    assert ids == tok.apply_chat_template(sample["messages"], tokenize=True)["input_ids"]
    ((start, end),) = trained_spans(labels)
    assert end == len(ids) and tok.decode(ids[start:end]) == "Hello!<|eot_id|>"
    assert ids[start - 1] == tok("\n\n", add_special_tokens=False)["input_ids"][-1]


def test_conversational_prompt_completion_trains_only_the_completion(smollm2_tokenizer):
    record = {
        "prompt": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Again"},
        ],
        "completion": [{"role": "assistant", "content": "Yes"}],
    }
    sample = to_sample(record, "prompt_completion", None)
    ids, labels = render_sample(smollm2_tokenizer, sample, special_ids(smollm2_tokenizer))
    assert [smollm2_tokenizer.decode(ids[a:b]) for a, b in trained_spans(labels)] == ["Yes<|im_end|>"]


def test_string_prompt_completion_is_plain_text_like_trl(smollm2_tokenizer):
    tok = smollm2_tokenizer
    sample = to_sample({"prompt": "Question: Hi\nAnswer:", "completion": " Hello!"}, "prompt_completion", None)
    ids, labels = render_sample(tok, sample, special_ids(tok))
    assert ids == [*tok("Question: Hi\nAnswer: Hello!")["input_ids"], tok.eos_token_id]
    assert ids == [
        17872,
        42,
        21041,
        198,
        21350,
        42,
        38699,
        17,
        2,
    ]  # "Question", ":", " Hi", "\n", "Answer", ":", " Hello", "!", <|im_end|>
    ((start, end),) = trained_spans(labels)
    assert tok.decode(ids[start:end]) == " Hello!<|im_end|>" and end == len(ids)


def test_tool_calls_train_the_call_never_the_result_or_schema(smollm2_tool_tokenizer):
    tok = smollm2_tool_tokenizer
    sample = to_sample(TOOL_RECORD, "messages", None)
    assert sample["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}  # JSON text -> object
    ids, labels = render_sample(tok, sample, special_ids(tok))
    assert ids == tok.apply_chat_template(sample["messages"], tools=sample["tools"], tokenize=True)["input_ids"]
    trained = [tok.decode(ids[a:b]) for a, b in trained_spans(labels)]
    assert trained == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
        "It is 18 degrees in Paris.<|im_end|>",
        "No rain today.<|im_end|>",
    ]  # weight: 0 turn masked
    text = tok.decode(ids)
    assert "<tools>" in text and "18 C" in text and "You are welcome." in text  # rendered, but none of it trained
    assert all(v == IGNORE for v in labels[: ids.index(tok.convert_tokens_to_ids("<|im_start|>"), 1)])


def test_template_without_tool_support_is_refused(smollm2_tokenizer, tmp_path):
    from cluster.data import check_data
    from tests.cluster.data.test_prepare import make_spec

    path = tmp_path / "tools.jsonl"
    path.write_text(json.dumps(TOOL_RECORD))
    with pytest.raises(UserError, match="chat template has no tool support: it does not render tool schemas"):
        check_data(make_spec([{"path": str(path)}], max_seq_len=512, eval_split=0.0), smollm2_tokenizer)


@pytest.mark.parametrize(
    "record,shape",
    [
        ({"prompt": "Q", "chosen": "A", "rejected": "B"}, "preference"),
        ({"chosen": [{"role": "user", "content": "Q"}], "rejected": [{"role": "user", "content": "Q"}]}, "preference"),
        ({"prompt": "Q", "completion": "A", "label": False}, "unpaired_preference"),
        ({"prompt": "Q"}, "prompt_only"),
    ],
)
def test_pair_shapes_are_detected_and_refused_for_sft_with_the_fix(record, shape):
    assert _signatures(record) == {shape}
    fix = "train.objective: dpo" if shape != "prompt_only" else "add a completion"
    with pytest.raises(UserError, match=f"shape {shape}.*{fix}"):
        refuse_untrainable("f.jsonl", shape)


def test_field_and_role_mapping(smollm2_tokenizer):
    mapped = apply_fields(
        {"dialog": [{"speaker": "bot", "text": "x"}], "id": 3}, {"messages": "dialog", "role": "speaker", "content": "text"}
    )
    assert mapped == {"messages": [{"role": "bot", "content": "x"}], "id": 3}
    record = apply_fields(
        {"question": "Hi", "answer": "Hello!", "sys": SYSTEM}, {"prompt": "question", "completion": "answer", "system": "sys"}
    )
    assert set(record) == {"prompt", "completion", "system"}
    convo = apply_fields(
        {"turns": [{"who": "system", "say": SYSTEM}, {"who": "human", "say": USER}, {"who": "bot", "say": ANSWER}]},
        {"messages": "turns", "role": "who", "content": "say"},
    )
    sample = to_sample(convo, "messages", None, {"bot": "assistant"})
    ids, labels = render_sample(smollm2_tokenizer, sample, special_ids(smollm2_tokenizer))
    assert ids == SMOL_IDS and trained_spans(labels) == [SMOL_TRAINED]
    from cluster.data.drops import RowProblem

    with pytest.raises(RowProblem, match="no 'answer' \\(mapped to completion by fields:\\)"):
        apply_fields({"question": "Hi"}, {"prompt": "question", "completion": "answer"})
