"""Reading one data source into raw records, each with the `file:line` it came from; bad lines become drops, not crashes."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
from fsspec.core import url_to_fs

from cluster import storage
from cluster.data.drops import Drop
from cluster.errors import UserError
from cluster.spec.data import SourceSpec

FILE_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class Record:
    """One raw record: where it came from (`file:line` or `file:row N`) and its fields."""

    where: str
    fields: dict


@dataclass
class SourceRows:
    """Everything read from one source: records, rows that could not be parsed, and a digest of the bytes read."""

    path: str
    records: list[Record] = field(default_factory=list)
    drops: list[Drop] = field(default_factory=list)
    digest: str = ""

    @property
    def rows_read(self) -> int:
        """Rows seen in the source, parsed or not (blank lines are not rows)."""
        return len(self.records) + len(self.drops)


def read_source(src: SourceSpec) -> SourceRows:
    """Read a source (file, save_to_disk folder, embedded dataset; local path or URI) into records."""
    if src.path.startswith("embedded:"):
        from cluster.embedded import embedded_data_path

        return _read_jsonl(src.path, _read_bytes(str(embedded_data_path(src.path.removeprefix("embedded:")))))
    fs, fs_path = url_to_fs(src.path)
    if not fs.exists(fs_path):
        raise UserError(f"data source {src.path!r} does not exist. Fix: check data.train/data.eval paths "
                        "(local path, file://, s3:// or gs:// URI, or embedded:construction-faq).")
    if fs.isdir(fs_path):
        return _read_saved_dataset(src, fs, fs_path)
    kind = FILE_KINDS.get(Path(fs_path).suffix.lower())
    if kind is None:
        raise UserError(f"data source {src.path!r}: unknown file type {Path(fs_path).suffix!r}. "
                        f"Fix: use one of {', '.join(FILE_KINDS)} or a datasets.save_to_disk folder.")
    data = _read_bytes(src.path)
    return {"jsonl": _read_jsonl, "json": _read_json, "parquet": _read_parquet, "csv": _read_csv}[kind](src.path, data)


def _read_bytes(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as f:
        return f.read()


def _rows(path: str, data: bytes) -> SourceRows:
    return SourceRows(path=path, digest=hashlib.sha256(data).hexdigest())


def _decode_line(path: str, lineno: int, raw: bytes) -> tuple[dict | None, Drop | None]:
    """Parse one JSON line; a problem becomes a Drop naming the line instead of an exception."""
    where = f"{path}:{lineno}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, Drop("not utf-8", where, f"byte 0x{raw[e.start]:02x} at column {e.start + 1} is not UTF-8")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, Drop("unparseable", where, f"invalid JSON: {e.msg} at column {e.colno}")
    if not isinstance(obj, dict):
        return None, Drop("unparseable", where, f"a record is a JSON object, got {type(obj).__name__}")
    return obj, None


def _read_jsonl(path: str, data: bytes) -> SourceRows:
    # Parsed line by line, not with datasets.load_dataset, so one bad line is reported with its number
    # instead of failing the whole file.
    out = _rows(path, data)
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.strip()
        if not raw:
            continue
        obj, drop = _decode_line(path, lineno, raw)
        if drop:
            out.drops.append(drop)
        else:
            out.records.append(Record(f"{path}:{lineno}", obj))
    return out


def _read_json(path: str, data: bytes) -> SourceRows:
    """A JSON array of records (or an object holding one array); each record keeps the line it starts on."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x}); a .json file is parsed whole, so it "
                        "cannot be read. Fix: re-encode the file as UTF-8, or use .jsonl to skip bad lines.") from None
    start = _array_start(path, text)
    if start is None:  # not an array: maybe JSON Lines saved as .json
        return _read_jsonl(path, data)
    out, decoder, i = _rows(path, data), json.JSONDecoder(), start + 1
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text) or text[i] == "]":
            return out
        line = text.count("\n", 0, i) + 1
        try:
            obj, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            # Inside one array the parser cannot resynchronise, so the rest of the file is one drop.
            out.drops.append(Drop("unparseable", f"{path}:{e.lineno}", f"invalid JSON: {e.msg}; the rest of the file is skipped"))
            return out
        if isinstance(obj, dict):
            out.records.append(Record(f"{path}:{line}", obj))
        else:
            out.drops.append(Drop("unparseable", f"{path}:{line}", f"a record is a JSON object, got {type(obj).__name__}"))


def _array_start(path: str, text: str) -> int | None:
    """Index of the '[' opening the records array, or None when the file is not one JSON value."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        return len(text) - len(stripped)
    if not stripped.startswith("{"):
        return None
    try:
        top = json.loads(text)
    except json.JSONDecodeError:
        return None  # several objects, one per line: JSON Lines
    lists = [k for k, v in top.items() if isinstance(v, list)]
    if len(lists) != 1:
        raise UserError(f"{path}: a .json source is an array of records or an object with exactly one array; found "
                        f"keys {sorted(top)}. Fix: convert it to JSON Lines (one record per line).")
    return text.index("[", text.index(json.dumps(lists[0])))


def _read_parquet(path: str, data: bytes) -> SourceRows:
    import pyarrow.parquet as pq

    out = _rows(path, data)
    for i, row in enumerate(pq.read_table(io.BytesIO(data)).to_pylist(), start=1):
        out.records.append(Record(f"{path}:row {i}", row))
    return out


def _read_csv(path: str, data: bytes) -> SourceRows:
    out = _rows(path, data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x}). Fix: re-encode the file as UTF-8.") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    start = 2
    for row in reader:
        out.records.append(Record(f"{path}:{start}", {k: v for k, v in row.items() if k is not None}))
        start = reader.line_num + 1
    return out


def _read_saved_dataset(src: SourceSpec, fs, fs_path: str) -> SourceRows:
    """A datasets.save_to_disk folder (Dataset or DatasetDict), local or in object storage."""
    from datasets import DatasetDict, load_from_disk

    digest = hashlib.sha256()
    for name in sorted(fs.find(fs_path)):
        if name.endswith((".arrow", ".json")):
            digest.update(name.removeprefix(fs_path).encode() + fs.cat_file(name))
    opts = None if not storage.is_remote(src.path) else {}
    ds = load_from_disk(src.path, storage_options=opts) if opts is not None else load_from_disk(src.path)
    if isinstance(ds, DatasetDict):
        split = src.split or ("train" if "train" in ds else None)
        if split not in ds:
            raise UserError(f"data source {src.path!r} is a DatasetDict with splits {sorted(ds)}; "
                            f"split {src.split!r} is not one of them. Fix: set split: on this source.")
        ds = ds[split]
    elif src.split:
        raise UserError(f"data source {src.path!r} is a single Dataset, but split: {src.split} is set. Fix: remove split.")
    out = SourceRows(path=src.path, digest=digest.hexdigest())
    for i, row in enumerate(ds.to_list(), start=1):
        out.records.append(Record(f"{src.path}:row {i}", row))
    return out
