"""Signed webhooks: a Standard Webhooks event POSTed to a workspace's URL when one of its batches ends.

`config` reads who gets events (TOML `[workspaces.NAME]` tables and the `--webhook-*` flags), `events`
builds and signs them; the store queues them durably, and `overnight.engine.webhooks` sends them.
"""
