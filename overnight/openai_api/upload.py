"""Receiving a `POST /v1/files` multipart body as it arrives, without holding the file in memory.

The body is parsed as it streams in (python-multipart's push parser); the file part goes to a temporary
file in the data directory, a megabyte at a time, and the text parts (`purpose`, `expires_after[...]`)
are kept. Past the size cap the parser stops storing and the rest of the body is drained, so the client
gets its error at once, however much it meant to send.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.requests import Request

from overnight.api.body import drain, raw_chunks
from overnight.openai_api.errors import OpenAIRequestError

_SPOOL_WRITE_BYTES = 1 << 20
_MAX_FIELD_BYTES = 4096
_MAX_FIELDS = 8


@dataclass
class Upload:
    """What a multipart upload held: the file's bytes (in `content`, a temporary file), its name and
    size, and the text parts. Close `content` when done."""

    content: IO[bytes]
    filename: str | None = None
    size: int = 0
    too_large: bool = False
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def purpose(self) -> str | None:
        return self.fields.get("purpose")


class _Parts:
    """python-multipart's callbacks: which part we are in, and where its bytes go."""

    def __init__(self, upload: Upload, limit: int) -> None:
        self.upload = upload
        self.limit = limit
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.name: str | None = None
        self.is_file = False
        self.value = bytearray()
        self.pending: list[bytes] = []  # file bytes not yet written to the spool
        self.pending_bytes = 0

    def on_part_begin(self) -> None:
        self.disposition, self.name, self.is_file = b"", None, False
        self.value = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        name = options.get(b"name")
        if name is None:
            raise OpenAIRequestError("Each multipart part needs a Content-Disposition name.")
        self.name = name.decode("utf-8", "replace")
        if self.name == "file":
            if self.upload.filename is not None:
                raise OpenAIRequestError("file: only one file part is allowed", param="file")
            self.is_file = True
            self.upload.filename = options.get(b"filename", b"upload").decode("utf-8", "replace")
        elif len(self.upload.fields) >= _MAX_FIELDS:
            raise OpenAIRequestError(f"At most {_MAX_FIELDS} form fields are allowed.")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self.is_file:
            if len(self.value) + end - start > _MAX_FIELD_BYTES:
                raise OpenAIRequestError(f"{self.name}: a form field is at most {_MAX_FIELD_BYTES} bytes")
            self.value += data[start:end]
            return
        self.upload.size += end - start
        if self.upload.size > self.limit:
            self.upload.too_large = True
        elif end > start:
            self.pending.append(data[start:end])
            self.pending_bytes += end - start

    def on_part_end(self) -> None:
        if not self.is_file and self.name is not None:
            self.upload.fields[self.name] = self.value.decode("utf-8", "replace")

    def take_pending(self) -> bytes:
        data = b"".join(self.pending)
        self.pending, self.pending_bytes = [], 0
        return data


async def receive_upload(request: Request, *, limit: int, timeout_seconds: float, spool_dir: Path | None) -> Upload:
    """The upload's parts; the file part is in a temporary file under `spool_dir`, at most `limit` bytes
    of it (past that, `too_large` is set and the rest of the body drained)."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        await drain(request, timeout_seconds)
        raise OpenAIRequestError("The body must be multipart/form-data with 'file' and 'purpose' parts.")
    upload = Upload(tempfile.TemporaryFile(dir=spool_dir))  # noqa: SIM115 (the caller closes it)
    parts = _Parts(upload, limit)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": parts.on_part_begin,
            "on_part_data": parts.on_part_data,
            "on_part_end": parts.on_part_end,
            "on_header_field": parts.on_header_field,
            "on_header_value": parts.on_header_value,
            "on_header_end": parts.on_header_end,
            "on_headers_finished": parts.on_headers_finished,
        },
    )
    try:
        async for chunk in raw_chunks(request, timeout_seconds):
            parser.write(chunk)
            if upload.too_large:
                await drain(request, timeout_seconds)
                return upload
            if parts.pending_bytes >= _SPOOL_WRITE_BYTES:
                await asyncio.to_thread(upload.content.write, parts.take_pending())
        parser.finalize()
        if parts.pending:
            await asyncio.to_thread(upload.content.write, parts.take_pending())
    except MultipartParseError as exc:
        upload.content.close()
        await drain(request, timeout_seconds)
        raise OpenAIRequestError(f"The multipart body is malformed: {exc}") from None
    except OpenAIRequestError:
        upload.content.close()
        await drain(request, timeout_seconds)
        raise
    except BaseException:
        upload.content.close()
        raise
    return upload
