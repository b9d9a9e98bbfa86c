"""Reading one data source as a stream of raw records, each with the `file:line` it came from.

`stream_source(src)` is the one reader every consumer uses (the SFT pipeline here, preference pairs elsewhere): it
yields a `Record` per row and a `Drop` per row that cannot be read, from .jsonl/.json/.csv/.parquet files,
datasets.save_to_disk folders, folders of such files (local or s3://, gs://), Hugging Face Hub datasets and the
embedded data. Files are read in chunks, never whole, so one huge or hostile row costs memory for that row only.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
from fsspec.core import url_to_fs

from cluster import storage
from cluster.data.drops import Drop, RowProblem
from cluster.data.json_rows import _ESCAPED_BYTE, check_strings, decoded_chunks, iter_array, parse_record
from cluster.errors import UserError
from cluster.spec.data import SourceSpec

FILE_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
HUB_PREFIX = "hf:"
BATCH = 1000  # rows per batch read from parquet and Arrow


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
    """Every record and drop of a source in memory (for small sources and tests; the pipeline streams)."""
    digest = hashlib.sha256()
    out = SourceRows(path=src.path)
    for item in stream_source(src, digest):
        (out.records if isinstance(item, Record) else out.drops).append(item)
    out.digest = digest.hexdigest()
    return out


def stream_source(src: SourceSpec, digest=None) -> Iterator[Record | Drop]:
    """Records and per-row Drops of one source, in file order; `digest` (a hashlib object) gets every byte read.

    Raises UserError only for what makes the whole source unreadable (missing, unknown type, corrupt parquet).
    """
    digest = digest if digest is not None else hashlib.sha256()
    if src.path.startswith(HUB_PREFIX):
        yield from _read_hub(src, digest)
        return
    if src.path.startswith("embedded:"):
        from cluster.embedded import embedded_data_path

        yield from _read_file(str(embedded_data_path(src.path.removeprefix("embedded:"))), "jsonl", digest, src.path)
        return
    fs, fs_path = url_to_fs(src.path)
    if not fs.exists(fs_path):
        raise UserError(
            f"data source {src.path!r} does not exist. Fix: check data.train/data.eval paths "
            "(local path, file://, s3:// or gs:// URI, hf:<dataset id>, or embedded:construction-faq)."
        )
    if fs.isdir(fs_path):
        if (
            fs.exists(f"{fs_path}/dataset_info.json")
            or fs.exists(f"{fs_path}/dataset_dict.json")
            or fs.exists(f"{fs_path}/state.json")
        ):
            yield from _read_saved_dataset(src, fs, fs_path, digest)
        else:
            yield from _read_folder(src, fs, fs_path, digest)
        return
    kind = FILE_KINDS.get(Path(fs_path).suffix.lower())
    if kind is None:
        raise UserError(
            f"data source {src.path!r}: unknown file type {Path(fs_path).suffix!r}. "
            f"Fix: use one of {', '.join(FILE_KINDS)}, a folder of them, or a datasets.save_to_disk folder."
        )
    yield from _read_file(src.path, kind, digest, src.path)


def _read_file(uri: str, kind: str, digest, shown: str) -> Iterator[Record | Drop]:
    """One file of a known kind; `shown` is the name used in `file:line`."""
    with fsspec.open(uri, "rb") as f:
        yield from {"jsonl": _read_jsonl, "json": _read_json, "parquet": _read_parquet, "csv": _read_csv}[kind](shown, f, digest)


def _read_folder(src: SourceSpec, fs, fs_path: str, digest) -> Iterator[Record | Drop]:
    """Every data file in a folder (e.g. parquet shards written by Spark or Ray), in name order."""
    files = sorted(p for p in fs.find(fs_path) if Path(p).suffix.lower() in FILE_KINDS)
    if not files:
        raise UserError(
            f"data source {src.path!r} is a folder with no {', '.join(FILE_KINDS)} files and is not a "
            "datasets.save_to_disk folder. Fix: point path: at the data files or their folder."
        )
    prefix = src.path.split("://")[0] + "://" if "://" in src.path else ""
    for p in files:
        digest.update(p.removeprefix(fs_path).encode())
        uri = prefix + p if prefix and not p.startswith(prefix) else p
        yield from _read_file(uri, FILE_KINDS[Path(p).suffix.lower()], digest, uri)


class _Hashing(io.RawIOBase):
    """A binary file that feeds every byte read to a hash, so the cache key covers exactly what was read."""

    def __init__(self, f, digest):
        self.f, self.digest = f, digest

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.f.seekable()

    def seek(self, offset, whence=0):
        return self.f.seek(offset, whence)

    def tell(self):
        return self.f.tell()

    def readinto(self, b) -> int:
        data = self.f.read(len(b))
        self.digest.update(data)
        b[: len(data)] = data
        return len(data)


def _read_jsonl(path: str, f, digest) -> Iterator[Record | Drop]:
    # Parsed line by line, not with datasets.load_dataset, so one bad line is reported with its number
    # instead of failing the whole file.
    for lineno, raw in enumerate(f, start=1):
        digest.update(raw)
        raw = raw.strip()
        if not raw:
            continue
        where = f"{path}:{lineno}"
        try:
            text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as e:
            yield Drop("not utf-8", where, f"byte 0x{raw[e.start]:02x} at column {e.start + 1} is not UTF-8")
            continue
        try:
            yield Record(where, parse_record(text))
        except RowProblem as p:
            yield Drop(p.reason, where, p.detail)


def _read_json(path: str, f, digest) -> Iterator[Record | Drop]:
    """A JSON array of records (or an object holding one array), element by element; or JSON Lines saved as .json."""
    head = f.read(4096)
    f.seek(0)
    first_line = head.split(b"\n", 1)[0].strip()
    if first_line.startswith(b"{"):
        try:
            first = parse_record(first_line.decode("utf-8-sig"))
        except (RowProblem, UnicodeDecodeError):
            first = None
        wrapper = first is not None and len(first) == 1 and isinstance(next(iter(first.values())), list)
        if first is not None and not wrapper:
            yield from _read_jsonl(path, f, digest)  # a whole record on the first line: JSON Lines
            return
    for line, text, problem in iter_array(decoded_chunks(f, digest)):
        where = f"{path}:{line}"
        if problem:
            yield Drop("unparseable", where, problem)
            continue
        try:
            yield Record(where, parse_record(text))
        except RowProblem as p:
            yield Drop(p.reason, where, p.detail)


def _read_parquet(path: str, f, digest) -> Iterator[Record | Drop]:
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(_Hashing(f, digest))
        row = 0
        for batch in reader.iter_batches(batch_size=BATCH):
            for fields in batch.to_pylist():
                row += 1
                yield _checked(f"{path}:row {row}", fields)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid/ArrowIOError are these
        raise UserError(
            f"data source {path!r} is not a readable parquet file ({type(e).__name__}: {e}). "
            "Fix: rewrite the file, or convert it to JSON Lines."
        ) from None


def _read_csv(path: str, f, digest) -> Iterator[Record | Drop]:
    text = io.TextIOWrapper(io.BufferedReader(_Hashing(f, digest)), encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.DictReader(text)
    start = 2
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # e.g. a field over csv.field_size_limit(): that row only
            yield Drop("unparseable", f"{path}:{start}", f"CSV: {e}")
            start = max(start + 1, reader.line_num + 1)  # the reader stops counting at the bad row's line
            continue
        where = f"{path}:{start}"
        start = reader.line_num + 1
        fields = {k: v for k, v in row.items() if k is not None}
        bad = next((v for v in fields.values() if isinstance(v, str) and _ESCAPED_BYTE.search(v)), None)
        if bad is not None:
            byte = ord(_ESCAPED_BYTE.search(bad).group()) - 0xDC00
            yield Drop("not utf-8", where, f"byte 0x{byte:02x} is not UTF-8")
            continue
        yield Record(where, fields)


def _checked(where: str, fields: dict) -> Record | Drop:
    try:
        check_strings(fields)
    except RowProblem as p:
        return Drop(p.reason, where, p.detail)
    return Record(where, fields)


def _read_saved_dataset(src: SourceSpec, fs, fs_path: str, digest) -> Iterator[Record | Drop]:
    """A datasets.save_to_disk folder (Dataset or DatasetDict), local or in object storage, memory-mapped."""
    from datasets import DatasetDict, load_from_disk

    for name in sorted(fs.find(fs_path)):
        if name.endswith((".arrow", ".json")):
            digest.update(name.removeprefix(fs_path).encode() + fs.cat_file(name))
    ds = load_from_disk(src.path, storage_options={}) if storage.is_remote(src.path) else load_from_disk(src.path)
    if isinstance(ds, DatasetDict):
        split = src.split or ("train" if "train" in ds else None)
        if split not in ds:
            raise UserError(
                f"data source {src.path!r} is a DatasetDict with splits {sorted(ds)}; "
                f"split {src.split!r} is not one of them. Fix: set split: on this source."
            )
        ds = ds[split]
    elif src.split:
        raise UserError(f"data source {src.path!r} is a single Dataset, but split: {src.split} is set. Fix: remove split.")
    yield from _rows_of_dataset(src.path, ds)


def _rows_of_dataset(path: str, ds) -> Iterator[Record | Drop]:
    row = 0
    for batch in ds.iter(batch_size=BATCH):
        for values in zip(*batch.values(), strict=True):
            row += 1
            yield _checked(f"{path}:row {row}", dict(zip(batch.keys(), values, strict=True)))


def _read_hub(src: SourceSpec, digest) -> Iterator[Record | Drop]:
    """A Hugging Face Hub dataset through datasets.load_dataset (offline: from the local cache only)."""
    import datasets

    repo = src.path.removeprefix(HUB_PREFIX)
    try:
        ds = datasets.load_dataset(repo, src.name, split=src.split or "train", revision=src.revision)
    except Exception as e:  # noqa: BLE001 - datasets raises many types for "not found / not cached / offline"
        raise UserError(
            f"data source {src.path!r}: datasets.load_dataset({repo!r}, name={src.name!r}, "
            f"split={src.split or 'train'!r}, revision={src.revision!r}) failed: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}. Fix: check the id, name, split and revision; "
            "offline (HF_HUB_OFFLINE=1) the dataset must already be in the local Hugging Face cache."
        ) from None
    digest.update(f"{repo}|{src.name}|{src.split}|{src.revision}|{ds._fingerprint}".encode())
    yield from _rows_of_dataset(src.path, ds)
