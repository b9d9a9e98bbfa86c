"""The service's records: one JSON object per file, each written whole, so readers never see half a record.

Why a file per record and not SQLite or one JSON document: on a folder each write is a temporary file and an atomic
rename (cluster.storage.write_text); on s3:// or gs:// each is a single PUT, which object stores make visible
atomically. Nothing is read-modify-written across processes except a job's status (see docs/service.md), so replicas
of the app and the job drivers never lock each other, a killed writer leaves the old record or the new one, and
SQLite's file locks, which do not hold on object storage or many network mounts, are not needed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from fsspec.core import url_to_fs

from cluster import storage


def new_id(prefix: str) -> str:
    """A fresh id such as `file-…` or `ftjob-…`: 24 random hex digits."""
    return f"{prefix}-{secrets.token_hex(12)}"


def sortable_id(prefix: str) -> str:
    """An id that sorts by creation time (events): nanoseconds, then random digits against ties."""
    return f"{prefix}-{time.time_ns():020d}{secrets.token_hex(3)}"


class Store:
    """JSON records and blobs under one storage URI."""

    def __init__(self, root: str):
        self.root = storage.normalize(root)

    def uri(self, *parts: str) -> str:
        """The URI of a path inside the store."""
        return storage.join(self.root, *parts)

    def put(self, path: str, record: dict[str, Any]) -> None:
        """Write one record whole (temporary file + rename on folders, one PUT on object stores)."""
        storage.write_text(self.uri(path), json.dumps(record, indent=1, sort_keys=True))

    def get(self, path: str) -> dict[str, Any] | None:
        """The record at `path`, or None when there is none."""
        try:
            return json.loads(storage.read_text(self.uri(path)))
        except FileNotFoundError:
            return None

    def names(self, folder: str, suffix: str = ".json") -> list[str]:
        """Names (without `suffix`) of the records directly in `folder`, sorted; temporary files are skipped."""
        return [n[: -len(suffix)] for n in storage.list_files(self.uri(folder)) if n.endswith(suffix) and not n.startswith(".")]

    def all(self, folder: str) -> list[dict[str, Any]]:
        """Every record in `folder`, in name order (one may vanish between listing and reading: it is left out)."""
        found = (self.get(f"{folder}/{name}.json") for name in self.names(folder))
        return [r for r in found if r is not None]

    def exists(self, path: str) -> bool:
        """Whether something is stored at `path`."""
        return storage.exists(self.uri(path))

    def delete(self, path: str) -> None:
        """Remove a record, a blob or a folder; nothing when it is not there."""
        fs, p = url_to_fs(self.uri(path))
        if fs.exists(p):
            fs.rm(p, recursive=fs.isdir(p))

    def put_file(self, local: Path, path: str) -> None:
        """Store a local file whole at `path` (a rename within a local store, one upload on object storage)."""
        target = self.uri(path)
        if storage.is_remote(target):
            fs, p = url_to_fs(target)
            fs.put_file(str(local), p)
            return
        dest = storage.local_path(target)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}")
        shutil.copyfile(local, tmp)
        os.replace(tmp, dest)

    def open(self, path: str):
        """A binary file object reading the blob at `path`."""
        fs, p = url_to_fs(self.uri(path))
        return fs.open(p, "rb")

    def put_text(self, path: str, text: str) -> None:
        """Write a text file whole (the resolved spec, a flag)."""
        storage.write_text(self.uri(path), text)
