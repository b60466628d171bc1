"""All SQL lives here: schema, migrations and one store class with a named method per operation."""

from overnight.store.records import BatchRecord, Completion, LeasedRequest
from overnight.store.store import Store

__all__ = ["BatchRecord", "Completion", "LeasedRequest", "Store"]
