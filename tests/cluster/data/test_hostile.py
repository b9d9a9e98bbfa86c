"""Hostile rows (issue 17): each is dropped with its reason and file:line, every good row is kept, nothing crashes,
and files are read streaming, never whole."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc

import pytest

from cluster.data.sources import Record, stream_source
from cluster.spec import SourceSpec
from jobs.cli import main
from tests.cluster.data.test_corpus import demo_spec

GOOD = [{"instruction": f"Question number {i} about permits?", "output": f"Answer number {i}, about permits."} for i in range(6)]
DEEP = "[" * 20_000 + "]" * 20_000
# (raw JSON text of one row, reason, detail fragment); rows 2, 4, 6, ... of the files below
HOSTILE = [
    ('{"instruction": ' + DEEP + ', "output": "x"}', "unparseable", "nested more than 64 levels"),
    ('{"instruction": "q", "output": NaN}', "unparseable", "NaN is not valid JSON"),
    ('{"instruction": "q", "output": -Infinity}', "unparseable", "-Infinity is not valid JSON"),
    ('{"instruction": "\\ud800 lone", "output": "x"}', "not utf-8", "unpaired surrogate \\ud800"),
    ('["not", "an", "object"]', "unparseable", "got list"),
    ('{"instruction": "caf\xe9", "output": "x"}', "not utf-8", "byte 0xe9"),  # latin-1 byte, written raw
]


def _bytes(text: str) -> bytes:
    return text.encode("latin-1") if "\xe9" in text else text.encode()


def hostile_jsonl(path) -> None:
    """Good and hostile rows alternating: good rows on odd lines, hostile ones on even lines."""
    lines = []
    for good, (bad, _, _) in zip(GOOD, HOSTILE, strict=True):
        lines += [json.dumps(good).encode(), _bytes(bad)]
    path.write_bytes(b"\n".join(lines) + b"\n")


def hostile_json(path) -> None:
    """The same rows as one JSON array, one element per line (line 1 is '[')."""
    lines = [b"["]
    for good, (bad, _, _) in zip(GOOD, HOSTILE, strict=True):
        lines += [json.dumps(good).encode() + b",", _bytes(bad) + b","]
    lines[-1] = lines[-1].rstrip(b",")
    path.write_bytes(b"\n".join(lines + [b"]"]))


@pytest.mark.parametrize("kind,first", [("jsonl", 1), ("json", 2)])
def test_hostile_rows_are_dropped_by_line_and_good_rows_kept(kind, first, tmp_path, capsys):
    path = tmp_path / f"mixed.{kind}"
    (hostile_jsonl if kind == "jsonl" else hostile_json)(path)
    spec = demo_spec(tmp_path, path, {"max_dropped_fraction": 0.6})
    assert main(["data", "check", spec, "--json"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    report = json.loads(captured.out)
    assert report["rows_read"] == 12 and report["rows_kept"] == 6
    assert report["train_samples"] + report["eval_samples"] == 6
    for k, (_, reason, detail) in enumerate(HOSTILE):
        line = first + 1 + 2 * k
        assert any(e.startswith(f"{path}:{line} (") and detail in e for e in report["dropped"][reason]["examples"]), (
            line,
            reason,
        )


def test_hostile_csv_rows(tmp_path, capsys):
    path = tmp_path / "mixed.csv"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["instruction", "output"])
    writer.writerow(["Deep brackets are text here " + DEEP[:100], "Fine answer."])  # line 2: a good row
    writer.writerow(["Question two?", "x" * 200_000])  # line 3: over csv's field limit
    writer.writerow(["Question three?", "Answer three."])  # line 4
    data = buf.getvalue().encode() + "caf\xe9,latin-1 row\n".encode("latin-1") + b"Question five?,Answer five.\n"
    path.write_bytes(data)  # line 5 latin-1, line 6 good
    items = list(stream_source(SourceSpec(path=str(path))))
    kept = [i.where for i in items if isinstance(i, Record)]
    dropped = {i.where: (i.reason, i.detail) for i in items if not isinstance(i, Record)}
    assert kept == [f"{path}:2", f"{path}:4", f"{path}:6"]
    assert dropped[f"{path}:3"][0] == "unparseable" and "field larger than field limit" in dropped[f"{path}:3"][1]
    assert dropped[f"{path}:5"] == ("not utf-8", "byte 0xe9 is not UTF-8")


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv"])
def test_files_are_read_streaming(kind, tmp_path):
    """Reading a 15 MB file row by row holds a few MB at most, never the file."""
    path = tmp_path / f"big.{kind}"
    row = {"instruction": "How long does a permit take? " * 4, "output": "Six to ten weeks. " * 8}
    n = 15_000_000 // len(json.dumps(row))
    with open(path, "w", newline="") as f:
        if kind == "csv":
            writer = csv.DictWriter(f, fieldnames=list(row))
            writer.writeheader()
            writer.writerows(row for _ in range(n))
        else:
            body = (json.dumps(row) + ("\n" if kind == "jsonl" else ",\n")) * n
            f.write(body if kind == "jsonl" else "[\n" + body.rstrip(",\n") + "\n]")
    tracemalloc.start()
    count = sum(isinstance(item, Record) for item in stream_source(SourceSpec(path=str(path))))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == n
    assert peak < 4_000_000, f"peak {peak / 1e6:.1f} MB while reading a {path.stat().st_size / 1e6:.0f} MB file"
