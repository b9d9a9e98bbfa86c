"""Long documents become windows with every token kept; near-duplicates and contamination are found and handled by
policy; few rows and short-answer imbalance are reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster.data import check_data, prepare_datasets
from cluster.data.assemble import ContaminationError
from cluster.data.render import IGNORE, render_text, windows
from tests.cluster.data.test_prepare import make_spec

WORDS = (
    "permit council facade scaffold architect budget neighbour licence inspection extension foundation roof "
    "window concrete timber plumbing wiring insulation drainage survey"
).split()


def document(seed: int, words: int) -> str:
    """A deterministic pseudo-text of `words` words."""
    return " ".join(WORDS[(seed * 7 + i * i + i * seed) % len(WORDS)] for i in range(words)) + "."


@pytest.mark.parametrize("overlap", [0, 32])
def test_windows_keep_every_token_once(overlap):
    ids = list(range(1000))
    parts = windows(ids, 256, overlap)
    assert all(len(w) <= 256 for w, _ in parts)
    trained = [t for _, labels in parts for t in labels if t != IGNORE]
    assert trained == ids  # every token trained exactly once, in order
    for (prev, _), (nxt, labels) in zip(parts, parts[1:], strict=False):
        assert nxt[:overlap] == prev[len(prev) - overlap :] and labels[:overlap] == [IGNORE] * overlap
    assert len(parts) == (4 if overlap == 0 else 5)


def test_a_tail_under_min_tokens_reaches_back_and_every_token_is_trained_once():
    parts = windows(list(range(1000)), 256, 16, min_tokens=32)  # after 4 windows (to 976) the tail holds 24 tokens
    assert [len(w) for w, _ in parts] == [256] * 5 and parts[-1][0] == list(range(744, 1000))
    assert [t for _, labels in parts for t in labels if t != IGNORE] == list(range(1000))
    assert parts[-1][1] == [IGNORE] * 232 + list(range(976, 1000))  # the 232 tokens before are context only
    assert [len(w) for w, _ in windows(list(range(1000)), 256, 16)] == [256] * 4 + [40]  # a tail of min_tokens stays


def _documents_with_short_tails(tokenizer, count: int, size: int, min_tokens: int) -> list[str]:
    """`count` documents of about 1,000 tokens whose last window would hold fewer than `min_tokens` new tokens."""
    found = []
    for seed in range(20):
        for words in range(1010, 1040):  # about a token a word: 1,025-1,031 tokens leave a tail of 1-7
            n = len(render_text(tokenizer, document(seed, words))[0])
            if 900 < n < 1300 and 0 < n % size < min_tokens:
                found.append(document(seed, words))
                break
        if len(found) == count:
            return found
    raise AssertionError("no documents with short tails found")


def test_long_documents_with_short_tails_drop_nothing_and_data_check_passes(smollm2_tokenizer, tmp_path):
    """Issue 21: 4 documents at max_seq_len 256, each tail under min_tokens. Every token is trained, no row is
    dropped, and `rayfit data check` (its main in a fresh process, about 20 s to start) passes."""
    docs = _documents_with_short_tails(smollm2_tokenizer, 4, 256, min_tokens=8)
    lengths = [len(render_text(smollm2_tokenizer, d)[0]) for d in docs]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    spec = {
        "model": {"base": "embedded:smollm2-135m-instruct"},
        "data": {
            "train": [{"path": str(tmp_path / "docs.jsonl"), "format": "text"}],
            "max_seq_len": 256,
            "min_tokens": 8,
            "eval_split": 0.0,
        },
        "train": {"eval_steps": None},
        "output": {"storage": str(tmp_path / "runs"), "name": "long"},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    command = [sys.executable, "-m", "jobs.cli", "data", "check", str(tmp_path / "spec.yaml"), "--json"]  # `rayfit`'s main
    r = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[3])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads(r.stdout)
    expected_windows = sum(-(-n // 256) for n in lengths)  # the short tail reaches back instead of adding a window
    assert (report["rows_read"], report["rows_kept"], report["rows_dropped"], report["dropped"]) == (4, 4, 0, {})
    assert (report["documents_split"], report["windows"], report["train_samples"]) == (4, expected_windows, expected_windows)
    assert report["trained_tokens"] == sum(lengths)  # every token of every document, once
    assert report["train_rows"] <= expected_windows


def test_long_documents_are_split_not_dropped(smollm2_tokenizer, tmp_path):
    path = tmp_path / "docs.jsonl"
    docs = [document(k, 1000) for k in range(3)]
    path.write_text("\n".join(json.dumps({"text": d}) for d in docs) + "\n" + json.dumps({"text": "A short note."}))
    lengths = [len(render_text(smollm2_tokenizer, d)[0]) for d in docs]
    assert all(900 < n < 1300 for n in lengths)  # about 1,000 tokens each
    spec = make_spec([{"path": str(path)}], max_seq_len=256, eval_split=0.0, window_overlap=16)
    prepared = prepare_datasets(spec, smollm2_tokenizer, str(tmp_path / "cache"))
    report = prepared.report
    expected_windows = sum(len(windows(list(range(n)), 256, 16)) for n in lengths)
    assert (report.documents_split, report.windows) == (3, expected_windows)
    assert report.rows_dropped == 0 and report.train_samples == expected_windows + 1
    short = len(render_text(smollm2_tokenizer, "A short note.")[0])
    assert report.trained_tokens == sum(lengths) + short  # every token of every document is trained once
    assert report.train_tokens == sum(lengths) + short + 16 * (expected_windows - 3)
    assert f"Long documents: 3 rows split into {expected_windows} windows (samples)" in report.to_table()
    rows = prepared.train()
    assert all(len(r) <= 256 for r in rows["input_ids"])


BASE = [
    "Do I need a permit to replace my kitchen windows? Yes, if the new windows change how the facade looks; a like "
    "for like replacement only needs a prior notice to the council before the work starts.",
    "How long does a building permit take? Usually between six and ten weeks once the application is complete, "
    "longer when the project needs a heritage report or a public information period.",
    "Who signs the technical project for a house extension? A qualified architect or engineer signs it and takes "
    "legal responsibility for the calculations, the drawings and the site supervision.",
    "Is a skip on the street allowed without a licence? No, a skip placed on the public road needs a licence for "
    "occupying public space, and it must carry reflective markings at night.",
    "What happens when my permit expires before the work ends? You must apply for an extension before it expires, "
    "otherwise you file a new application and pay the fee again.",
    "Can a neighbour object to my extension? Yes, during the public information period any neighbour can file an "
    "objection, which the council must answer before deciding.",
]
VARIANTS = [  # lines 7-10: near copies of lines 1-4
    BASE[0].upper(),
    BASE[1].replace(",", "").replace("?", "").replace(".", "!"),
    BASE[2].replace(" ", "   ").replace("? ", "?\n\n"),
    BASE[3].replace("public road", "road public").replace("reflective markings", "markings reflective"),
]


def test_near_duplicates_and_contamination(tiny_tokenizer, tmp_path):
    train, evalf = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train.write_text("\n".join(json.dumps({"text": t}) for t in BASE + VARIANTS))
    leaked = BASE[4].replace("apply for", "ask for").replace("pay the fee", "pay the whole fee")
    evalf.write_text(json.dumps({"text": leaked}) + "\n" + json.dumps({"text": "Is the sky blue? Yes, usually."}))
    spec = dict(eval=[{"path": str(evalf)}], max_seq_len=256, max_dropped_fraction=1.0)
    report = check_data(make_spec([{"path": str(train)}], **spec), tiny_tokenizer)
    pairs = {e.split(" (")[0] for e in report.near_duplicates.examples}
    assert pairs == {f"{train}:{a} <-> {train}:{b}" for a, b in [(1, 7), (2, 8), (3, 9), (4, 10)]}
    assert [e.split(" (")[0] for e in report.contamination_pairs.examples] == [f"train {train}:5 <-> eval {evalf}:1"]
    assert report.train_samples == 10  # warn: nothing dropped

    dropped = check_data(
        make_spec([{"path": str(train)}], near_duplicates={"train": "drop", "contamination": "drop"}, **spec), tiny_tokenizer
    )
    assert [e.split(" (")[0] for e in dropped.dropped["near duplicate"].examples] == [f"{train}:{n}" for n in (7, 8, 9, 10)]
    assert dropped.dropped["contamination"].examples == [f"{train}:5 (near eval {evalf}:1)"]
    assert dropped.train_samples == 5 and dropped.eval_samples == 2

    with pytest.raises(ContaminationError, match=f"1 eval samples are equal or near to train samples.*{train}:5 <-> {evalf}:1"):
        check_data(make_spec([{"path": str(train)}], near_duplicates={"contamination": "fail"}, **spec), tiny_tokenizer)


def test_few_rows_warning_and_answer_distribution(tiny_tokenizer, tmp_path):
    path = tmp_path / "yn.jsonl"
    rows = [{"instruction": f"Is permit {i} approved?", "output": "Y" if i % 5 < 3 else "N"} for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    report = check_data(
        make_spec([{"path": str(path)}], max_seq_len=128, eval_split=0.0, min_tokens=1, near_duplicates=None), tiny_tokenizer
    )
    assert report.answers == {"Y": 0.6, "N": 0.4}
    assert report.warnings == [
        "only 40 training samples: with fewer than 50, few-shot prompting may serve better than fine-tuning."
    ]
    assert "Most common answers: 'Y' 60%, 'N' 40%" in report.to_table()
