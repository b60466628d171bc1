"""overnight: a self-hosted server for Anthropic's Message Batches API."""

__version__ = "0.1.0"
