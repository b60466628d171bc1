"""Migrating an empty database must give exactly the schema the table definitions describe."""

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import text

from overnight.store import Store, open_store
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
    _upgrade(store, "0002")
    with store.engine.begin() as conn:
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


def test_0008_counts_the_result_bytes_batches_already_hold(database_url: str) -> None:
    store = open_store(database_url)
    _upgrade(store, "0007")
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO batches (seq, id, workspace, status, total, processing, created_at, expires_at) "
                "VALUES (:seq, :id, 'w', :status, 2, 0, 1, 2)"
            ),
            [
                {"seq": 1, "id": "msgbatch_a", "status": "ended"},
                {"seq": 2, "id": "msgbatch_b", "status": "in_progress"},
            ],
        )
        conn.execute(
            text(
                "INSERT INTO requests (id, batch_seq, custom_id, params, state, attempt, result) "
                "VALUES (:id, :seq, :custom_id, :params, :state, 1, :result)"
            ),
            [
                {"id": 1, "seq": 1, "custom_id": "ok1", "params": b"{}", "state": "succeeded", "result": b"abc"},
                {"id": 2, "seq": 1, "custom_id": "ok2", "params": b"{}", "state": "succeeded", "result": b"de"},
                {"id": 3, "seq": 1, "custom_id": "bad", "params": b"{}", "state": "errored", "result": b"fghi"},
                {"id": 4, "seq": 1, "custom_id": "gone", "params": b"{}", "state": "canceled", "result": None},
                {"id": 5, "seq": 2, "custom_id": "p1", "params": b"{}", "state": "pending", "result": None},
                {"id": 6, "seq": 2, "custom_id": "p2", "params": b"{}", "state": "succeeded", "result": b"j"},
            ],
        )
    store.migrate()
    with store.engine.connect() as conn:
        counted = conn.execute(text("SELECT id, succeeded_bytes, errored_bytes FROM batches ORDER BY seq")).all()
    store.close()
    assert [tuple(row) for row in counted] == [("msgbatch_a", 5, 4), ("msgbatch_b", 1, 0)]


def _upgrade(store: Store, revision: str) -> None:
    """Migrate `store`'s database only up to `revision` (to fill it as that schema was)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
