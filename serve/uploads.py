"""A multipart upload (`POST /v1/files`) streamed to a local temporary file, refused the moment it passes the limit.

Starlette's form parser reads a whole upload before the route sees it; this one writes each chunk as it arrives and
stops at `max_upload_bytes`, so no upload is ever held whole in memory and an oversized one costs only the limit.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from serve.openai_protocol import ApiError

FIELD_LIMIT = 4096  # bytes of a plain form field (purpose): a field is a word, not data


@dataclass
class Upload:
    """What the form held: its plain fields, the file's name, local copy and size."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    path: Path | None = None
    size: int = 0


async def receive_upload(request: Request, folder: Path, limit: int) -> Upload:
    """Parse the multipart body into `folder`; ApiError(400) naming `max_upload_bytes` once the file passes `limit`."""
    kind, options = parse_options_header(request.headers.get("content-type"))
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise ApiError(400, "POST /v1/files takes multipart/form-data with `file` and `purpose`.", param="file")
    out, part = Upload(), {"name": None, "header": b"", "headers": {}, "value": bytearray()}
    sink = {"file": None}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["header"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        name = part["header"].decode("latin-1").lower()
        part["headers"][name] = part["headers"].get(name, b"") + data[start:end]

    def on_header_end() -> None:
        part["header"] = b""

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(part["headers"].get("content-disposition"))
        part["name"] = disposition.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in disposition and part["name"] == "file":
            out.filename = Path(disposition[b"filename"].decode("utf-8", "replace")).name or "upload.jsonl"
            out.path = folder / ("upload" + (Path(out.filename).suffix.lower() or ".jsonl"))
            sink["file"] = open(out.path, "wb")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if sink["file"] is not None:
            out.size += end - start
            if out.size > limit:
                raise _TooBig()
            sink["file"].write(data[start:end])
        elif len(part["value"]) + end - start > FIELD_LIMIT:
            raise ApiError(400, f"form field {part['name']!r} is longer than {FIELD_LIMIT} bytes.", param=part["name"])
        else:
            part["value"] += data[start:end]

    def on_part_end() -> None:
        if sink["file"] is not None:
            sink["file"].close()
            sink["file"] = None
        elif part["name"]:
            out.fields[part["name"]] = part["value"].decode("utf-8", "replace")
        part.update(name=None, header=b"", headers={}, value=bytearray())

    callbacks = {
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    parser = MultipartParser(options[b"boundary"], callbacks)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except _TooBig:
        raise ApiError(
            400,
            f"the file is larger than this server's max_upload_bytes ({limit} bytes); it was refused at that size.",
            param="file",
            code="file_too_large",
        ) from None
    finally:
        if sink["file"] is not None:
            sink["file"].close()
    return out


def scratch_folder() -> tempfile.TemporaryDirectory:
    """A private temporary folder for one upload, removed when the request ends."""
    return tempfile.TemporaryDirectory(prefix="rayfit-upload-")


class _TooBig(Exception):
    pass
