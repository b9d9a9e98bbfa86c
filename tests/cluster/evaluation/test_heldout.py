"""Cutting generation prompts and references out of the data layer's tokenized (packed) eval rows."""

from __future__ import annotations

from cluster.evaluation.heldout import count_samples, generation_samples, last_answer, split_samples

M = -100


def test_packed_rows_split_where_position_ids_restart():
    row = {"input_ids": [1, 2, 3, 4, 5, 6, 7], "labels": [M, 2, 3, M, M, 6, 7], "position_ids": [0, 1, 2, 0, 1, 2, 3]}
    assert split_samples(row) == [([1, 2, 3], [M, 2, 3]), ([4, 5, 6, 7], [M, M, 6, 7])]
    assert split_samples({"input_ids": [1, 2], "labels": [M, 2]}) == [([1, 2], [M, 2])]
    assert count_samples([row, {"input_ids": [1, 2], "labels": [M, 2]}]) == 3  # two rows, three samples


def test_the_last_trained_span_is_the_answer_and_everything_before_it_the_prompt():
    # two assistant turns: the prompt keeps the first answer as context
    assert last_answer([1, 2, 3, 4, 5, 6], [M, 2, M, M, 5, 6]) == ([1, 2, 3, 4], [5, 6])
    assert last_answer([1, 2, 3], [1, 2, 3]) is None  # plain text: every token trained, no prompt
    assert last_answer([1, 2], [M, M]) is None


def test_samples_from_the_tiny_tokenizer_round_trip(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    convo = [{"role": "user", "content": "What is rebar?"}, {"role": "assistant", "content": "Steel bars in concrete."}]
    prompt = tok.apply_chat_template(convo[:1], add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(convo, tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    f_ids = tok(full, add_special_tokens=False)["input_ids"]
    answer_end = len(tok(full.rstrip("\n"), add_special_tokens=False)["input_ids"])  # through <|im_end|>
    labels = [M] * len(p_ids) + f_ids[len(p_ids) : answer_end] + [M] * (len(f_ids) - answer_end)
    row = {
        "input_ids": f_ids + f_ids,
        "labels": labels + labels,
        "position_ids": list(range(len(f_ids))) + list(range(len(f_ids))),
    }
    samples = generation_samples([row], tok, limit=5)
    assert len(samples) == 2 and samples[0].prompt_ids == p_ids
    assert samples[0].reference == "Steel bars in concrete."
    assert generation_samples([row], tok, limit=1) == samples[:1]
