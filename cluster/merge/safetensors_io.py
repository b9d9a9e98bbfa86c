"""Reading and writing safetensors files a slice of rows at a time, so no shard is ever held in memory.

safetensors' own `save_file` takes a whole dict of tensors, and `safe_open` memory-maps the whole file (every page
read stays resident while it is open). The format is simple (an 8-byte header length, a JSON header of dtype, shape
and byte offsets, then the raw data), so rayfit reads the rows it needs with ordinary file reads, and writes each
shard's header first (every name, dtype and shape is known from the base's headers before any value is) and then
appends the data as it is computed. The files and the index are what `save_pretrained` writes: `model.safetensors`,
or `model-0000i-of-0000n.safetensors` plus `model.safetensors.index.json`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

# The safetensors format's dtype codes (its spec's "dtype" field).
DTYPE_CODES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}
CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}
INDEX = "model.safetensors.index.json"


class ShardReader:
    """One safetensors file opened for reading: its tensors' names, dtypes and shapes, and their rows on demand."""

    def __init__(self, path: Path):
        self.file = open(path, "rb")
        size = int.from_bytes(self.file.read(8), "little")
        header = json.loads(self.file.read(size))
        header.pop("__metadata__", None)
        self.start = 8 + size
        # in storage order, so reads go forward through the file
        self.entries = dict(sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]))

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    def layout(self) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        """(name, dtype, shape) of every tensor, in storage order."""
        return [(name, CODE_DTYPES[e["dtype"]], tuple(e["shape"])) for name, e in self.entries.items()]

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """Tensor `name`, or only its rows [a, b) (leading dimension)."""
        entry = self.entries[name]
        dtype, shape = CODE_DTYPES[entry["dtype"]], list(entry["shape"])
        begin, end = entry["data_offsets"]
        if rows is not None and shape:
            row_bytes = math.prod(shape[1:]) * dtype.itemsize
            begin, end = begin + rows[0] * row_bytes, begin + rows[1] * row_bytes
            shape[0] = rows[1] - rows[0]
        buffer = bytearray(end - begin)
        self.file.seek(self.start + begin)
        if self.file.readinto(buffer) != len(buffer):
            raise ValueError(f"{self.file.name}: {name} is cut short")
        if not buffer:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype).reshape(shape)


class ShardedWriter:
    """Writes the tensors of `layout` [(name, dtype, shape)] in that order into shards of at most `max_shard_size`
    bytes (a tensor larger than that gets a shard of its own, as transformers does)."""

    def __init__(self, out_dir: Path, layout: list[tuple[str, torch.dtype, tuple[int, ...]]], max_shard_size: int):
        self.out_dir = out_dir
        self.shards: list[list[tuple[str, torch.dtype, tuple[int, ...], int]]] = [[]]
        size = 0
        for name, dtype, shape in layout:
            nbytes = math.prod(shape) * dtype.itemsize
            if self.shards[-1] and size + nbytes > max_shard_size:
                self.shards.append([])
                size = 0
            self.shards[-1].append((name, dtype, shape, nbytes))
            size += nbytes
        n = len(self.shards)
        self.names = ["model.safetensors"] if n == 1 else [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
        self.order = [(i, name, nbytes) for i, shard in enumerate(self.shards) for name, _, _, nbytes in shard]
        self.position = 0  # index in self.order of the tensor being written
        self.written = 0  # bytes of it written so far
        self.file = None
        self.shard = -1

    def write(self, name: str, piece: torch.Tensor) -> None:
        """Append the next slice (leading rows, contiguous) of tensor `name`; tensors must come in layout order."""
        shard, expected, nbytes = self.order[self.position]
        if name != expected:
            raise RuntimeError(f"safetensors writer expected {expected}, got {name}")
        if shard != self.shard:
            self._open(shard)
        data = piece.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        self.file.write(memoryview(data))
        self.written += data.nbytes
        if self.written > nbytes:
            raise RuntimeError(f"{name}: wrote {self.written} bytes, the header says {nbytes}")
        if self.written == nbytes:
            self.position += 1
            self.written = 0

    def close(self) -> None:
        """Finish the last shard and write the index (when there is more than one shard)."""
        if self.position != len(self.order):
            raise RuntimeError(f"safetensors writer closed before {self.order[self.position][1]} was written")
        if self.file is not None:
            self.file.close()
        if len(self.names) > 1:
            weight_map = {name: self.names[i] for i, shard in enumerate(self.shards) for name, *_ in shard}
            total = sum(nbytes for _, _, nbytes in self.order)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.out_dir / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    def _open(self, shard: int) -> None:
        if self.file is not None:
            self.file.close()
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, dtype, shape, nbytes in self.shards[shard]:
            header[name] = {"dtype": DTYPE_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes with spaces
        self.file = open(self.out_dir / self.names[shard], "wb")
        self.file.write(len(raw).to_bytes(8, "little"))
        self.file.write(raw)
        self.shard = shard
