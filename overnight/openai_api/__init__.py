"""OpenAI's Files + Batches API and synchronous chat completions, on the same engine, store and backends."""
