"""Packing: samples in a packed row see only themselves (logits equal to running each alone), and rows are >= 99% full."""

from __future__ import annotations

import random

import pytest
from datasets import Dataset

from cluster.data import prepare_datasets
from cluster.data.binpack import best_fit_decreasing, pack_lengths
from cluster.data.packing import pack
from cluster.data.render import render_conversation
from tests.cluster.data.test_prepare import make_spec


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_each_sample_alone(tiny_model_dir, tiny_tokenizer, attn):
    import torch
    from transformers import AutoModelForCausalLM

    convs = [
        [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        for q, a in [
            ("What is a permit?", "A decision from the municipality."),
            ("Hi", "Hello"),
            ("How long does it take?", "About ten weeks, sometimes longer."),
        ]
    ]
    samples = [render_conversation(tiny_tokenizer, c) for c in convs]
    ds = Dataset.from_dict({"input_ids": [s[0] for s in samples], "labels": [s[1] for s in samples]})
    row = pack(ds, 512)[0]
    assert len(row["input_ids"]) == sum(len(s[0]) for s in samples)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=attn).eval()
    with torch.no_grad():
        packed = model(
            input_ids=torch.tensor([row["input_ids"]]), position_ids=torch.tensor([row["position_ids"]]), use_cache=False
        ).logits[0]
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
        seen = 0
        for a, b in zip(starts, starts[1:], strict=False):
            ids = row["input_ids"][a:b]
            alone = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
            assert (packed[a:b] - alone).abs().max().item() <= 1e-4
            assert ids in [s[0] for s in samples]
            seen += 1
    assert seen == 3
    # Without position ids restarting, the later samples would attend to the earlier ones: the check above has teeth.
    with torch.no_grad():
        leaky = model(input_ids=torch.tensor([row["input_ids"]]), use_cache=False).logits[0]
    a, b = starts[1], starts[2]
    assert (leaky[a:b] - model(input_ids=torch.tensor([row["input_ids"][a:b]]), use_cache=False).logits[0]).abs().max() > 1e-2


def test_embedded_data_packs_at_least_99_percent_full(smollm2_tokenizer, tmp_path):
    spec = make_spec([{"path": "embedded:construction-faq"}], max_seq_len=1024, eval_split=0.0)
    report = prepare_datasets(spec, smollm2_tokenizer, str(tmp_path)).report
    assert (report.train_samples, report.train_tokens) == (503, 51037)
    assert report.train_rows == 50 and report.packing_efficiency >= 0.99
    assert report.padded_efficiency < 0.11


def test_bin_packing_keeps_every_sample_once_and_beats_bfd():
    rng = random.Random(0)
    lengths = [rng.randint(60, 170) for _ in range(300)]
    bins = pack_lengths(lengths, 1024)
    assert sorted(i for b in bins for i in b) == list(range(300))
    assert all(sum(lengths[i] for i in b) <= 1024 for b in bins)
    assert len(bins) == -(-sum(lengths) // 1024) < len(best_fit_decreasing(lengths, 1024))
    assert pack_lengths([], 8) == [] and pack_lengths([8, 8], 8) == [[0], [1]]
    with pytest.raises(ValueError, match="longer than the bin capacity 8"):
        pack_lengths([9], 8)
