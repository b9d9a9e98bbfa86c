"""Storage addressed by URI (local path, file://, s3://, gs://) through fsspec; no hand-written clients."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import fsspec
from filelock import FileLock
from fsspec.core import url_to_fs

from cluster.spec.base import Problem

DONE = ".rayfit-complete"  # written last into a cached folder: its presence means the folder is whole
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "abfss://", "az://", "hf://", "memory://")


def is_remote(uri: str) -> bool:
    """True for object-store URIs; False for local paths and file:// URIs."""
    return uri.startswith(REMOTE_SCHEMES)


def local_path(uri: str) -> Path:
    """The filesystem path of a local path or file:// URI, made absolute."""
    if is_remote(uri):
        raise ValueError(f"{uri} is not a local path")
    return Path(uri.removeprefix("file://")).expanduser().resolve()


def normalize(uri: str) -> str:
    """A URI every node can use: remote URIs unchanged, local paths absolute."""
    return uri.rstrip("/") if is_remote(uri) else str(local_path(uri))


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI or path."""
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def exists(uri: str) -> bool:
    """Whether a file or folder exists at `uri`."""
    fs, path = url_to_fs(uri)
    return fs.exists(path)


def read_text(uri: str) -> str:
    """The text of the file at `uri`."""
    with fsspec.open(uri, "r", encoding="utf-8") as f:
        return f.read()


def write_text(uri: str, text: str) -> None:
    """Write a file; locally via a temporary file and rename, so readers never see half of it."""
    write_bytes(uri, text.encode("utf-8"))


def write_bytes(uri: str, data: bytes) -> None:
    """Write a file's bytes; locally via a temporary file and rename, so readers never see half of it."""
    if is_remote(uri):
        with fsspec.open(uri, "wb") as f:
            f.write(data)
        return
    path = local_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def list_dirs(uri: str) -> list[str]:
    """Names of the sub-folders of `uri` (empty when it does not exist)."""
    fs, path = url_to_fs(uri)
    if not fs.exists(path):
        return []
    return sorted(Path(p["name"]).name for p in fs.ls(path, detail=True) if p["type"] == "directory")


def list_files(uri: str) -> list[str]:
    """Names of the files directly in `uri` (empty when it does not exist)."""
    fs, path = url_to_fs(uri)
    if not fs.exists(path):
        return []
    return sorted(Path(p["name"]).name for p in fs.ls(path, detail=True) if p["type"] == "file")


def remove(uri: str) -> None:
    """Delete the file or folder at `uri` with everything in it; nothing when there is none."""
    fs, path = url_to_fs(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def download_dir(uri: str, dest: Path) -> Path:
    """Copy a remote folder to `dest` (a no-op returning the path for local URIs)."""
    if not is_remote(uri):
        return local_path(uri)
    fs, path = url_to_fs(uri)
    dest.mkdir(parents=True, exist_ok=True)
    fs.get(path.rstrip("/") + "/", str(dest), recursive=True)
    return dest


def upload_dir(src: Path, uri: str) -> None:
    """Copy a local folder to `uri` (local or remote)."""
    if not is_remote(uri):
        dst = local_path(uri)
        if dst != src.resolve():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        return
    fs, path = url_to_fs(uri)
    fs.put(str(src).rstrip("/") + "/", path, recursive=True)


def cache_dir_for(uri: str, root: Path) -> Path:
    """A stable local cache folder for a remote URI."""
    return root / hashlib.sha256(uri.encode()).hexdigest()[:16]


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """`target`, built by `build(tmp_folder)` unless already there: concurrent processes on a node build it once
    (file lock), and a build cut short is never used (completion marker written last, then an atomic rename)."""
    if (target / DONE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / DONE).exists():
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            try:
                build(tmp)
                (tmp / DONE).write_text("complete\n")
                shutil.rmtree(target, ignore_errors=True)  # a stale folder from a crash before its marker
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def cached_copy(uri: str, root: Path) -> Path:
    """A local copy of the remote folder `uri` under `root`, downloaded once per node."""
    return build_once(cache_dir_for(uri, root), lambda tmp: download_dir(uri, tmp))


def shared_storage_problems(storage: str, num_nodes: int) -> list[Problem]:
    """A plain local path is only safe on one node; checked at submit, where the cluster is known."""
    if num_nodes > 1 and not is_remote(storage):
        return [
            Problem(
                "output.storage",
                f"{storage!r} is a local path but the cluster has {num_nodes} nodes, so "
                "checkpoints written on one node are invisible to the others.",
                "use an s3:// or gs:// URI, or a path on a filesystem mounted on every node (e.g. NFS) "
                "given as file:// only if it really is shared.",
            )
        ]
    return []
