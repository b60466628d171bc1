"""The schema. Change it only together with a new numbered migration in `migrations/versions/`."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    text,
)

# On SQLite an INTEGER PRIMARY KEY is the rowid itself: no extra index, ids in insertion order.
_Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

# Written as literals so that SQLite's planner can match queries to the partial indexes below
# (a bound parameter cannot prove `status != 'ended'`).
UNFINISHED = text("status != 'ended'")
TO_ARCHIVE = text("status = 'ended' AND archived_at IS NULL")
DELIVERY_DUE = text("status = 'pending'")
USAGE_COLUMNS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")

batches = Table(
    "batches",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("workspace", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("total", Integer, nullable=False),
    Column("processing", Integer, nullable=False),
    Column("succeeded", Integer, nullable=False, server_default="0"),
    Column("errored", Integer, nullable=False, server_default="0"),
    Column("canceled", Integer, nullable=False, server_default="0"),
    Column("expired", Integer, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger, nullable=True),
    Column("cancel_initiated_at", BigInteger, nullable=True),
    Column("archived_at", BigInteger, nullable=True),
    # Every request of the batch has an id in this range (set at insert; NULL once archived), so
    # reading its results is a scan of the table in id order.
    Column("first_request_id", BigInteger, nullable=True),
    Column("last_request_id", BigInteger, nullable=True),
    # The `anthropic-beta` features the batch was created with (comma-separated), for its requests.
    Column("betas", String(1024), nullable=True),
    # Token usage of the batch's results, summed in the same transaction that stores them.
    Column("input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("output_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cache_creation_input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cache_read_input_tokens", BigInteger, nullable=False, server_default="0"),
    # The wire format its requests and result lines are in (`anthropic`, `openai`): picks the codec.
    Column("format", String(16), nullable=False, server_default="anthropic"),
    # Bytes of the succeeded and errored result lines stored, summed in the same transaction that
    # stores them: an OpenAI batch's output and error files are sized from these, not by a scan, and a
    # download's chunks span fewer requests where the lines are long.
    Column("succeeded_bytes", BigInteger, nullable=False, server_default="0"),
    Column("errored_bytes", BigInteger, nullable=False, server_default="0"),
    Index("ix_batches_workspace_seq", "workspace", "seq"),
    # Partial indexes: the engine and sweepers look at unfinished batches, or at ended ones not yet
    # archived, every second; these keep that proportional to those batches, not to all ever stored.
    Index("ix_batches_unfinished", "seq", sqlite_where=UNFINISHED, postgresql_where=UNFINISHED),
    Index("ix_batches_unfinished_workspace", "workspace", sqlite_where=UNFINISHED, postgresql_where=UNFINISHED),
    Index("ix_batches_to_archive", "created_at", sqlite_where=TO_ARCHIVE, postgresql_where=TO_ARCHIVE),
)

requests = Table(
    "requests",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("batch_seq", _Id, ForeignKey("batches.seq", ondelete="CASCADE"), nullable=False),
    Column("custom_id", String(64), nullable=False),
    # The request's params exactly as the client sent them; NULL once the batch is archived.
    Column("params", LargeBinary, nullable=True),
    Column("state", String(10), nullable=False),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", BigInteger, nullable=True),
    # The finished JSONL line (succeeded/errored); canceled/expired lines are derived from the state.
    Column("result", LargeBinary, nullable=True),
    UniqueConstraint("batch_seq", "custom_id", name="uq_requests_batch_custom_id"),
    Index("ix_requests_batch_state", "batch_seq", "state", "id"),
)

# Workers that are alive (each refreshes `seen_at` while it runs), so that a backend cap meant for the
# whole cluster can be split between them.
nodes = Table(
    "nodes",
    metadata,
    Column("owner", String(128), primary_key=True),
    Column("seen_at", BigInteger, nullable=False),
)

# Webhook events waiting to be sent (or sent, or given up on), queued in the transaction that ends their
# batch. No foreign key: an event outlives its batch being deleted. A lease is `next_attempt_at` moved
# past the attempt's timeout with `lease_owner` set, so a sender that dies frees the row by itself.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("event_id", String(40), nullable=False, unique=True),
    Column("workspace", String(128), nullable=False),
    Column("batch_id", String(40), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("status", String(10), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("lease_owner", String(128), nullable=True),
    Column("last_error", String(500), nullable=True),
    Column("finished_at", BigInteger, nullable=True),
    Index("ix_webhook_deliveries_due", "next_attempt_at", sqlite_where=DELIVERY_DUE, postgresql_where=DELIVERY_DUE),
)

# Files of the OpenAI Files API (batch input, output and error files), bytes and all: nodes on PostgreSQL
# share nothing but the database.
files = Table(
    "files",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("workspace", String(128), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("filename", String(512), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    # An uploaded file's bytes are in `file_chunks`; a batch's output or error file has none: its lines
    # are read from the batch's requests (`batch_seq`; `kind` output: the succeeded ones, error: the
    # rest), not copied.
    Column("batch_seq", _Id, ForeignKey("batches.seq", ondelete="CASCADE"), nullable=True),
    Column("kind", String(8), nullable=True),
    Index("ix_files_workspace_seq", "workspace", "seq"),
)

# An uploaded file's bytes, in pieces (of `FILE_CHUNK_BYTES` when written; readers take any size), so
# that neither an upload nor a download nor a validation ever holds a whole file in memory.
file_chunks = Table(
    "file_chunks",
    metadata,
    Column("file_seq", _Id, ForeignKey("files.seq", ondelete="CASCADE"), primary_key=True),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
)
FILE_CHUNK_BYTES = 256 * 1024  # small enough that a few in flight (and the drivers' buffers) stay small

# OpenAI batches still `validating` (no engine batch, not failed, not cancelled): what validators poll.
VALIDATING = text("batch_seq IS NULL AND failed_at IS NULL AND cancelled_at IS NULL")

# What the OpenAI Batches API knows of a batch beyond the engine's `batches` row (`batch_seq`; NULL while
# it is validating, and for one that failed validation or was cancelled then, and never ran). Times in
# microseconds, like `batches`.
openai_batches = Table(
    "openai_batches",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("workspace", String(128), nullable=False),
    Column("batch_seq", _Id, ForeignKey("batches.seq", ondelete="SET NULL"), nullable=True),
    Column("endpoint", String(64), nullable=False),
    Column("input_file_id", String(40), nullable=False),
    Column("completion_window", String(16), nullable=False),
    Column("model", String(256), nullable=True),
    Column("metadata", LargeBinary, nullable=True),  # JSON object
    Column("errors", LargeBinary, nullable=True),  # JSON list of BatchError, for a failed batch
    Column("created_at", BigInteger, nullable=False),
    Column("failed_at", BigInteger, nullable=True),
    Column("finalized_at", BigInteger, nullable=True),  # output and error files written
    Column("output_file_id", String(40), nullable=True),
    Column("error_file_id", String(40), nullable=True),
    Column("expires_at", BigInteger, nullable=True),  # NULL: older rows (the engine's row has it)
    Column("cancelled_at", BigInteger, nullable=True),  # cancelled while validating
    # A validator's claim on a validating batch: whoever holds an unlapsed one validates and enqueues it.
    Column("validation_owner", String(128), nullable=True),
    Column("validation_expires_at", BigInteger, nullable=True),
    Index("ix_openai_batches_workspace_seq", "workspace", "seq"),
    Index("ix_openai_batches_validating", "seq", sqlite_where=VALIDATING, postgresql_where=VALIDATING),
)
