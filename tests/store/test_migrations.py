"""Migrating an empty database must give exactly the schema the table definitions describe."""

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from overnight.store import open_store
from overnight.store.base import MIGRATIONS
from overnight.store.tables import metadata
from tests.conftest import newest_migration


def test_migrated_schema_matches_tables(database_url: str) -> None:
    store = open_store(database_url)
    store.migrate()
    with store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    store.close()
    assert differences == []


def test_migrate_is_idempotent(database_url: str) -> None:
    store = open_store(database_url)
    store.migrate()
    store.migrate()
    with store.engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one()
    store.close()
    assert version == newest_migration()
    assert sorted(f.name for f in (MIGRATIONS / "versions").glob("0*.py"))[-1].startswith(version)


def test_0003_gives_stored_batches_their_request_id_range(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    store = open_store(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
        conn.exec_driver_sql(
            "INSERT INTO batches (seq, id, workspace, status, total, processing, created_at, expires_at) "
            "VALUES (1, 'msgbatch_a', 'w', 'ended', 2, 0, 1, 2), (2, 'msgbatch_b', 'w', 'ended', 1, 0, 1, 2), "
            "(3, 'msgbatch_archived', 'w', 'ended', 1, 0, 1, 2)"
        )
        conn.exec_driver_sql(
            "INSERT INTO requests (id, batch_seq, custom_id, params, state, attempt) VALUES "
            "(7, 1, 'x', x'7b7d', 'canceled', 0), (8, 2, 'y', x'7b7d', 'canceled', 0), "
            "(9, 1, 'z', x'7b7d', 'canceled', 0)"
        )
    store.migrate()
    with store.engine.connect() as conn:
        ranges = conn.exec_driver_sql("SELECT id, first_request_id, last_request_id FROM batches ORDER BY seq").all()
    store.close()
    expected = [("msgbatch_a", 7, 9), ("msgbatch_b", 8, 8), ("msgbatch_archived", None, None)]
    assert [tuple(row) for row in ranges] == expected
