"""Batches to send and the plain HTTP client calls that send them, poll them and download results.

Bodies are built once, before anything is timed, from per-request params encoded on their own: the
same bytes can then feed both the server (inside a create body) and a baseline (e.g. a bare insert).
The client is plain httpx, not the SDK, so the client's own overhead stays out of the figures.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import msgspec

MODEL = "claude-sonnet-4-5"
HEADERS = {"x-api-key": "bench", "anthropic-version": "2023-06-01", "content-type": "application/json"}
POLL_SECONDS = 0.05

_encode = msgspec.json.Encoder().encode

_VOCABULARY = (
    "the of and to in is that for it as with was on be by this are from at or an have not which but "
    "all were when we there can been has more if will one so no their what about would out up into "
    "them some time only new could these two may first then do any like my now over such our man me "
    "even most made after also did many before must through back years where much your way well down "
    "should because each just those people how too little state good very make world still own see "
    "work long get here between both life being under never day same another know while last might us "
    "great old year off come since against go came right used take three customer invoice shipment "
    "contract summary report quarterly revenue analysis policy account request support order delivery "
    "product service review feedback question answer document section paragraph table figure result "
    "model data value error warning status update schedule meeting project budget team manager"
)
_WORDS = _VOCABULARY.split()


def custom_ids(count: int) -> list[str]:
    return [f"req-{index:06d}" for index in range(count)]


def small_params(count: int, *, max_tokens: int = 16) -> list[bytes]:
    """Tiny requests (~120 bytes): what a control-plane benchmark pushes through."""
    return [
        _encode(
            {
                "model": MODEL,
                "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": f"Say hello number {index}"}],
            }
        )
        for index in range(count)
    ]


def prose(rng: random.Random, sentences: Sequence[str], size: int) -> str:
    """About `size` characters of sentences drawn from `sentences`."""
    per_sentence = sum(map(len, sentences[:64])) / 64 + 1
    return " ".join(rng.choices(sentences, k=max(1, round(size / per_sentence))))


def sentence_pool(rng: random.Random, count: int = 4096) -> list[str]:
    pool = []
    for _ in range(count):
        words = rng.choices(_WORDS, k=rng.randint(8, 22))
        pool.append(" ".join(words).capitalize() + rng.choice(".?!."))
    return pool


def realistic_params(count: int, *, size: int = 2500, seed: int = 4) -> list[bytes]:
    """Requests of about `size` bytes each: a shared system prompt, a document, a question."""
    rng = random.Random(seed)
    pool = sentence_pool(rng)
    system = (
        "You are a careful analyst. Answer from the document only, cite the paragraph you rely on, "
        "and say so plainly when the document does not contain the answer."
    )
    overhead = len(system) + 220
    return [
        _encode(
            {
                "model": MODEL,
                "max_tokens": 512,
                "temperature": 0.2,
                "system": system,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "text",
                                "text": "<document>\n" + prose(rng, pool, size - overhead) + "\n</document>",
                            },
                            {
                                "type": "text",
                                "text": f"Question {index}: what does the document say about the customer?",
                            },
                        ],
                    }
                ],
                "metadata": {"user_id": f"user-{index % 977}"},
            }
        )
        for index in range(count)
    ]


def batch_body(ids: Sequence[str], params: Sequence[bytes]) -> bytes:
    """`{"requests": [{"custom_id": ..., "params": ...}, ...]}` around already-encoded params."""
    items = b",".join(b'{"custom_id":"%s","params":%s}' % (cid.encode(), p) for cid, p in zip(ids, params, strict=True))
    return b'{"requests":[' + items + b"]}"


def client(base_url: str, *, timeout: float = 600.0) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers=HEADERS, timeout=timeout)


def create_batch(http: httpx.Client, body: bytes) -> tuple[dict[str, Any], TimedPost]:
    """POST the body over a plain socket (httpx's own upload of a 250 MB body costs it a second or more)."""
    posted = post_timing_upload(http.base_url.port or 80, "/v1/messages/batches", body)
    if posted.status != 200:
        raise RuntimeError(f"create answered {posted.status}: {posted.body[:500]!r}")
    batch: dict[str, Any] = msgspec.json.decode(posted.body)
    return batch, posted


def wait_until_ended(
    http: httpx.Client, batch_id: str, *, timeout: float, poll_seconds: float = POLL_SECONDS
) -> dict[str, Any]:
    """Poll (every 50 ms by default) until the batch has ended; raise if that takes longer than `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"/v1/messages/batches/{batch_id}")
        response.raise_for_status()
        batch: dict[str, Any] = response.json()
        if batch["processing_status"] == "ended":
            return batch
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} not ended after {timeout:.0f}s: {batch['request_counts']}")
        time.sleep(poll_seconds)


@dataclass(frozen=True)
class Download:
    bytes: int
    lines: int
    seconds: float

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes / 1e6 / self.seconds


def download_results(
    http: httpx.Client, results_url: str, *, on_chunk: Callable[[int], None] | None = None
) -> Download:
    """Stream the JSONL results as the transport delivers them (64 KiB reads), counting lines."""
    size = lines = 0
    start = time.perf_counter()
    with http.stream("GET", results_url) as response:
        if response.status_code != 200:
            raise RuntimeError(f"results answered {response.status_code}: {response.read()[:500]!r}")
        for chunk in response.iter_raw():
            size += len(chunk)
            lines += chunk.count(b"\n")
            if on_chunk is not None:
                on_chunk(size)
    return Download(size, lines, time.perf_counter() - start)


def succeeded(batch: dict[str, Any]) -> int:
    return int(batch["request_counts"]["succeeded"])


@dataclass(frozen=True)
class Drained:
    """A batch taken from create to ended, with the time of each phase."""

    batch: dict[str, Any]
    upload_seconds: float
    """Sending the create body: about the server's time to receive it."""
    create_seconds: float
    """POST until the created batch came back (upload, envelope check, insert, commit)."""
    run_seconds: float
    """From the created batch until a poll saw it ended."""

    @property
    def server_run_seconds(self) -> float:
        """From `created_at` to `ended_at`, by the server's own clock: exact however slowly one polls."""
        started, ended = (datetime.fromisoformat(self.batch[key]) for key in ("created_at", "ended_at"))
        return (ended - started).total_seconds()


def create_and_drain(http: httpx.Client, body: bytes, *, timeout: float, poll_seconds: float = POLL_SECONDS) -> Drained:
    created, posted = create_batch(http, body)
    created_at = time.perf_counter()
    ended = wait_until_ended(http, created["id"], timeout=timeout, poll_seconds=poll_seconds)
    return Drained(ended, posted.upload_seconds, posted.seconds, time.perf_counter() - created_at)


@dataclass(frozen=True)
class TimedPost:
    status: int
    body: bytes
    upload_seconds: float
    """Until the last byte of the request was handed to the kernel: the server has read nearly all of it."""
    seconds: float
    """Until the whole response had arrived."""


def post_timing_upload(port: int, path: str, body: bytes, *, timeout: float = 600.0) -> TimedPost:
    """POST over a plain socket, timing the upload apart from the wait for the answer.

    Loopback socket buffers hold a few MB at most, so `sendall` returns only once the server has read
    all but the last few MB: the upload time is the server's receive time, to within milliseconds.
    """
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\ncontent-length: {len(body)}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in HEADERS.items())
        + "\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        start = time.perf_counter()
        sock.sendall(head)
        sock.sendall(body)
        uploaded = time.perf_counter()
        response = bytearray()
        while chunk := sock.recv(1 << 16):
            response += chunk
        done = time.perf_counter()
    status_line, _, rest = bytes(response).partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return TimedPost(int(status_line.split()[1]), payload, uploaded - start, done - start)
