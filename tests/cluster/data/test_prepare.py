"""prepare_datasets / load_prepared: the contract with training, the content-hash cache, and URIs."""

from __future__ import annotations

import json
import time

import pytest

from cluster.data import DataQualityError, check_data, load_prepared, prepare_datasets
from cluster.data.render import IGNORE
from cluster.spec import validate_spec
from tests.conftest import private_ray


def make_spec(train, **data):
    """A minimal valid job spec around the given data section."""
    return validate_spec(
        {
            "model": {"base": "embedded:smollm2-135m-instruct"},
            "data": {"train": train, **data},
            "train": {"eval_steps": None},
            "output": {"storage": "/tmp/unused", "name": "t"},
        }
    )


def sample_starts(position_ids: list[int]) -> list[int]:
    return [i for i, p in enumerate(position_ids) if p == 0]


def test_packed_rows_follow_the_contract(tiny_tokenizer, tmp_path):
    spec = make_spec([{"path": "embedded:construction-faq"}], max_seq_len=512, eval_split=0.1, num_proc=2)
    prepared = prepare_datasets(spec, tiny_tokenizer, str(tmp_path))
    train, evalset = prepared.train(), prepared.eval()
    assert train.column_names == ["input_ids", "labels", "position_ids"]
    assert prepared.report.train_samples == 453 and prepared.report.eval_samples == 50
    src = prepared.report.sources[0]
    assert (src.rows_read, src.rows_kept, src.rows_held_out, src.rows_used) == (503, 503, 50, 453)

    def split(rows):
        samples = set()
        for r in rows:
            starts = sample_starts(r["position_ids"])
            for a, b in zip(starts, [*starts[1:], len(r["input_ids"])], strict=True):
                samples.add(tuple(r["input_ids"][a:b]))
        return samples

    held_out, trained_on = split(evalset), split(train)
    assert len(held_out) == 50 and not held_out & trained_on
    assert len(evalset) >= 1 and prepared.eval_path.startswith(str(tmp_path))
    im_start, im_end = tiny_tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    samples = 0
    for row in train:
        ids, labels, pos = row["input_ids"], row["labels"], row["position_ids"]
        assert len(ids) == len(labels) == len(pos) <= 512
        starts = sample_starts(pos)
        samples += len(starts)
        for a, b in zip(starts, [*starts[1:], len(ids)], strict=False):
            assert pos[a:b] == list(range(b - a))  # restart per sample
            assert ids[a] == im_start and labels[a] == IGNORE  # every sample starts with the system header, untrained
            trained = [i for i in range(a, b) if labels[i] != IGNORE]
            assert ids[trained[-1]] == im_end  # the answer's end-of-turn token is trained
            assert all(labels[i] == ids[i] for i in trained)
    assert samples == 453


def test_same_content_reuses_cache_and_changes_rehash(tiny_tokenizer, tmp_path, monkeypatch):
    spec = make_spec([{"path": "embedded:construction-faq"}], max_seq_len=512, eval_split=0.0)
    first = prepare_datasets(spec, tiny_tokenizer, str(tmp_path))
    import cluster.data.pipeline as pipeline  # SFT's recipe (cluster/objectives/sft.py) tokenizes through it

    def no_tokenizing(*a, **k):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(pipeline, "tokenize", no_tokenizing)
    again = prepare_datasets(spec, tiny_tokenizer, "file://" + str(tmp_path))
    assert again.train_path == first.train_path and again.report == first.report
    assert again.eval_path is None
    monkeypatch.undo()
    other = prepare_datasets(
        make_spec([{"path": "embedded:construction-faq"}], max_seq_len=256, eval_split=0.0), tiny_tokenizer, str(tmp_path)
    )
    assert other.report.hash != first.report.hash
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == sorted(
        [first.report.hash, other.report.hash]
    )
    assert max(len(r) for r in load_prepared(other.train_path)["input_ids"]) <= 256


def test_unpacked_rows_and_truncation(tiny_tokenizer, tmp_path):
    rows = [{"instruction": "What is a permit?", "output": "word " * 200}, {"instruction": "Hi", "output": "Hello there"}]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    short = len(
        tiny_tokenizer.apply_chat_template(
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}], tokenize=True
        )["input_ids"]
    )
    spec = make_spec([{"path": str(path)}], max_seq_len=short + 20, eval_split=0.0, packing=False, too_long="truncate")
    prepared = prepare_datasets(spec, tiny_tokenizer, str(tmp_path / "cache"))
    train = prepared.train()
    assert train.column_names == ["input_ids", "labels"]
    assert sorted(len(r) for r in train["input_ids"]) == [short, short + 20]
    assert prepared.report.truncated == 1 and prepared.report.rows_dropped == 0


def test_too_many_dropped_rows_fail_before_saving(tiny_tokenizer, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "Hi", "output": "Hello there"}\n{"bad json\n{"instruction": "x"}\n')
    spec = make_spec([{"path": str(path)}], max_seq_len=128, eval_split=0.0, max_dropped_fraction=0.5)
    with pytest.raises(DataQualityError, match=r"2 of 3 rows dropped \(66.7%\), more than data.max_dropped_fraction 50.0%") as e:
        prepare_datasets(spec, tiny_tokenizer, str(tmp_path / "cache"))
    assert e.value.report.dropped["unparseable"].examples == [
        f"{path}:2 (invalid JSON: Unterminated string starting at at column 2)"
    ]
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    assert (
        check_data(
            make_spec([{"path": str(path)}], max_seq_len=128, eval_split=0.0, max_dropped_fraction=0.7), tiny_tokenizer
        ).rows_kept
        == 1
    )


@pytest.mark.slow
def test_object_storage_cache_dir_and_source(tiny_tokenizer, object_store):
    """Sources and the cache in object storage (moto S3, GCS emulator): written once, loaded back on a 'worker'
    through a local copy."""
    import fsspec

    root = object_store("rayfit-data")
    with fsspec.open(f"{root}/data/faq.jsonl", "w") as f:
        f.write('{"instruction": "Hi", "output": "Hello there"}\n{"instruction": "Bye", "output": "See you"}\n')
    spec = make_spec([{"path": f"{root}/data/faq.jsonl"}], max_seq_len=128, eval_split=0.0)
    prepared = prepare_datasets(spec, tiny_tokenizer, f"{root}/runs/x/data")
    assert prepared.train_path == f"{root}/runs/x/data/{prepared.report.hash}/train"
    rows = load_prepared(prepared.train_path)
    assert sum(len(sample_starts(p)) for p in rows["position_ids"]) == 2
    assert prepare_datasets(spec, tiny_tokenizer, f"{root}/runs/x/data").report == prepared.report


def test_parallel_tokenization_gives_the_same_rows_and_hash(tiny_tokenizer, tmp_path):
    """num_proc is left out of the hash, so 1 and 2 processes must produce identical datasets."""
    rows = {}
    for procs in (1, 2):
        spec = make_spec([{"path": "embedded:construction-faq"}], max_seq_len=512, eval_split=0.05, num_proc=procs)
        prepared = prepare_datasets(spec, tiny_tokenizer, str(tmp_path / f"p{procs}"))
        rows[procs] = (prepared.report.hash, prepared.train()[:], prepared.eval()[:])
    assert rows[1] == rows[2]


@pytest.mark.slow
def test_ray_data_tokenization_matches_the_local_path(tiny_tokenizer, tmp_path, monkeypatch):
    """With Ray running, prepare_datasets tokenizes through Ray Data on 2 actors from pipeline.ROWS_FOR_RAY samples
    on (lowered here to 1): same rows, same hash, same report. Below it, in this process, Ray or not."""
    import ray

    import cluster.data.pipeline as pipeline
    import cluster.data.ray_tokenize as ray_tokenize

    calls = []
    real = ray_tokenize.tokenize_on_ray
    monkeypatch.setattr(ray_tokenize, "tokenize_on_ray", lambda *a: calls.append(1) or real(*a))

    spec = make_spec([{"path": "embedded:construction-faq"}], max_seq_len=512, eval_split=0.05)
    local = prepare_datasets(spec, tiny_tokenizer, str(tmp_path / "local"))
    private_ray(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    try:
        small = prepare_datasets(spec, tiny_tokenizer, str(tmp_path / "small"))
        assert calls == [] and pipeline.ROWS_FOR_RAY > local.report.rows_read  # fewer samples: no actors started
        monkeypatch.setattr(pipeline, "ROWS_FOR_RAY", 1)
        on_ray = prepare_datasets(spec, tiny_tokenizer, str(tmp_path / "ray"))
        # The tokenizing actors are gone once the data is prepared, so the trainer's workers can take every CPU.
        deadline = time.time() + 60
        while ray.available_resources().get("CPU", 0) < 2 and time.time() < deadline:
            time.sleep(1)
        assert ray.available_resources().get("CPU", 0) == 2
    finally:
        ray.shutdown()
    assert calls == [1] and on_ray.report == local.report == small.report
    assert on_ray.train()[:] == local.train()[:] and on_ray.eval()[:] == local.eval()[:]
    assert small.train()[:] == local.train()[:]
