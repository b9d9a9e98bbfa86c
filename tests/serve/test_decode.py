"""The decoder without Ray: one batch with rows on different adapters gives each row what it gets alone."""

from __future__ import annotations

import pytest
import torch

from serve.decode import Job, _safe_end, decode_steps
from tests.serve.lora_fixtures import ANSWERS, QUESTION, chat_ids

pytestmark = pytest.mark.slow  # the fixtures train two adapters


@pytest.fixture(scope="module")
def peft_model(lora_set):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(lora_set["base"])
    model = AutoModelForCausalLM.from_pretrained(lora_set["base"], dtype=torch.float32)
    peft = PeftModel.from_pretrained(model, str(lora_set["alpha"]), adapter_name="alpha")
    peft.load_adapter(str(lora_set["bravo"]), adapter_name="bravo")
    return peft.eval(), tokenizer


def _run(model, tokenizer, jobs):
    texts, finishes, counts = [""] * len(jobs), [None] * len(jobs), [0] * len(jobs)
    for events in decode_steps(lambda: (model, True), tokenizer, jobs, {tokenizer.eos_token_id}):
        for i, event in enumerate(events):
            if event is not None:
                texts[i] += event["text"]
                finishes[i], counts[i] = event["finish_reason"] or finishes[i], event["completion_tokens"]
    return texts, finishes, counts


def test_mixed_adapter_batch_matches_rows_run_alone(peft_model):
    model, tokenizer = peft_model
    prompt, _ = chat_ids(tokenizer, QUESTION)
    other, _ = chat_ids(tokenizer, "How long does a building permit take?")
    jobs = [Job(prompt, 16, "alpha", 0), Job(prompt, 16, "bravo", 0), Job(prompt, 5, None, 0), Job(other, 9, "alpha", 0),
            Job(other, 7, None, temperature=1.0, top_p=0.8, seed=3)]
    texts, finishes, counts = _run(model, tokenizer, jobs)
    assert texts[:2] == [ANSWERS["alpha"], ANSWERS["bravo"]] and finishes[:2] == ["stop", "stop"]
    assert finishes[2] == "length" and counts[2] == 5 and texts[2] not in ANSWERS.values()
    alone = [_run(model, tokenizer, [job]) for job in jobs]
    assert [a[0][0] for a in alone] == texts  # same text with or without batch neighbours (and the seeded row too)
    assert [a[2][0] for a in alone] == counts


def test_stop_strings_cut_the_text_and_are_never_streamed(peft_model):
    model, tokenizer = peft_model
    prompt, _ = chat_ids(tokenizer, QUESTION)
    texts, finishes, _ = _run(model, tokenizer, [Job(prompt, 16, "alpha", 0, stop=[" is req"])])
    assert texts == ["A building permit"] and finishes == ["stop"]


def test_safe_end_holds_back_stop_prefixes_and_broken_characters():
    assert _safe_end("hello wor", ["world"]) == len("hello ")
    assert _safe_end("hello", ["xyz"]) == 5
    assert _safe_end("abc\ufffd", []) == 3


@pytest.mark.gpu
def test_mixed_adapter_batch_on_gpu_matches_cpu(lora_set):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(lora_set["base"])
    model = AutoModelForCausalLM.from_pretrained(lora_set["base"], dtype=torch.float32).to("cuda")
    peft = PeftModel.from_pretrained(model, str(lora_set["alpha"]), adapter_name="alpha")
    peft.load_adapter(str(lora_set["bravo"]), adapter_name="bravo")
    prompt, _ = chat_ids(tokenizer, QUESTION)
    texts, _, _ = _run(peft.eval(), tokenizer, [Job(prompt, 16, "alpha", 0), Job(prompt, 16, "bravo", 0)])
    assert texts == [ANSWERS["alpha"], ANSWERS["bravo"]]
