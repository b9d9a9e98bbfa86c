"""Writing a batch generation's output in blocks, so a job killed halfway loses at most the blocks it was writing.

Block b holds the output rows of input rows [b * block_rows, (b + 1) * block_rows), sorted by (index, sample), in
OUTPUT.parts/part-BBBBBB.{jsonl,parquet}, each written whole (a temporary file and a rename locally; one object
put in object storage). A rerun lists the finished parts and skips their rows; when every block is there, the parts
are joined into OUTPUT and the parts folder goes. `job.json` in the parts folder records what the parts answer, so
a rerun with another model, input or sampling does not mix its answers with theirs.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from typing import Any

from fsspec.core import url_to_fs

from cluster import storage
from cluster.errors import UserError

PART = re.compile(r"^part-(\d{6})\.(jsonl|parquet)$")
JOB = "job.json"


class BlockWriter:
    """Output blocks of one generation job at `output` (a .jsonl or .parquet file, local or object storage)."""

    def __init__(self, output: str, kind: str, block_rows: int, job: dict[str, Any]):
        self.output, self.kind, self.block_rows, self.job = storage.normalize(output), kind, block_rows, job
        self.parts = self.output + ".parts"

    def check_writable(self) -> None:
        """Write and remove a probe file where the parts go: an output that cannot be written fails before generating."""
        probe = storage.join(self.parts, ".probe")
        try:
            storage.write_text(probe, "probe\n")
            fs, path = url_to_fs(probe)
            fs.rm(path)
        except Exception as e:  # noqa: BLE001 - any storage failure (permissions, no bucket, bad credentials) is the user's to fix
            raise UserError(
                f"output {self.output!r} cannot be written ({type(e).__name__}: {e}). Fix: give a writable local path "
                "or an s3:// / gs:// URI whose bucket exists and whose credentials (from the environment) may write."
            ) from None

    def finished(self) -> set[int]:
        """Blocks already written by an earlier run of this same job (a different job's parts are refused)."""
        job_uri = storage.join(self.parts, JOB)
        if storage.exists(job_uri):
            before = json.loads(storage.read_text(job_uri))
            if before != self.job:
                changed = sorted(k for k in self.job.keys() | before.keys() if self.job.get(k) != before.get(k))
                raise UserError(
                    f"{self.parts} holds blocks of another generation job (it differs in {', '.join(changed)}). "
                    "Fix: delete that folder to start over, or write to another output."
                )
        else:
            storage.write_text(job_uri, json.dumps(self.job, indent=2, sort_keys=True))
        return {int(m.group(1)) for name in storage.list_files(self.parts) if (m := PART.match(name))}

    def block_of(self, index: int) -> int:
        """The block holding input row `index`."""
        return index // self.block_rows

    def write_block(self, block: int, rows: list[dict]) -> None:
        """Write one block's rows, sorted by input row and sample."""
        rows = sorted(rows, key=lambda r: (r["index"], r["sample"]))
        _write(storage.join(self.parts, f"part-{block:06d}.{self.kind}"), rows, self.kind)

    def assemble(self, blocks: int, shape: Callable[[list[dict]], tuple[list, list]] | None = None) -> Any:
        """Join blocks 0..blocks-1 into the output, remove the parts folder; the number of rows written.

        With `shape` (rows -> (rows to write, rows set aside)) the output gets the first list, written as JSON Lines
        whatever their shape, OUTPUT.rejected.jsonl the second, and the result is both counts."""
        rows = []
        for block in range(blocks):
            rows += _read(storage.join(self.parts, f"part-{block:06d}.{self.kind}"), self.kind)
        if shape is None:
            _write(self.output, rows, self.kind)
        else:
            kept, aside = shape(rows)
            _write(self.output, kept, "jsonl")
            if aside:
                _write(self.output + ".rejected.jsonl", aside, "jsonl")
        fs, path = url_to_fs(self.parts)
        fs.rm(path, recursive=True)
        return len(rows) if shape is None else (len(kept), len(aside))


def _write(uri: str, rows: list[dict], kind: str) -> None:
    if kind == "jsonl":
        storage.write_text(uri, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    # `input` (the row's own fields, any shape) is a JSON string in Parquet: one column type for every row.
    pq.write_table(pa.Table.from_pylist([r | {"input": json.dumps(r["input"], ensure_ascii=False)} for r in rows]), buffer)
    storage.write_bytes(uri, buffer.getvalue())


def _read(uri: str, kind: str) -> list[dict]:
    if kind == "jsonl":
        return [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]
    import pyarrow.parquet as pq

    fs, path = url_to_fs(uri)
    with fs.open(path, "rb") as f:
        return [r | {"input": json.loads(r["input"])} for r in pq.read_table(f).to_pylist()]
