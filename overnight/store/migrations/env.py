"""Alembic environment: runs on the connection `store.migrate` hands over (or the URL in alembic.ini)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from overnight.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
    with engine.connect() as fresh:
        context.configure(connection=fresh, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
