"""The engine: leases pending requests, runs them on backends, writes results, ends batches."""

from overnight.engine.scheduler import Scheduler

__all__ = ["Scheduler"]
