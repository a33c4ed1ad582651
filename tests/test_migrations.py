from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from mirror.db import (
    current_revision,
    head_revision,
    make_engine,
    open_catalog_db,
    sqlite_url,
    upgrade,
)
from mirror.errors import DatabaseError
from mirror.schema import Base


def test_migrations_match_the_models(tmp_path: Path) -> None:
    engine = open_catalog_db(tmp_path / "m.db")
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], f"models and migrations differ; run alembic revision --autogenerate: {diff}"


def test_first_use_creates_schema_and_pragmas(tmp_path: Path) -> None:
    engine = open_catalog_db(tmp_path / "m.db")
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 1000
    assert upgrade(engine) is False  # idempotent


def test_database_from_a_newer_mirror_is_refused(tmp_path: Path) -> None:
    engine = open_catalog_db(tmp_path / "m.db")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_future'"))
    engine.dispose()
    with pytest.raises(DatabaseError, match="ffff_future.*does not know") as info:
        upgrade(make_engine(sqlite_url(tmp_path / "m.db")))
    assert info.value.hint and "newer" in info.value.hint


def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    from sqlalchemy.exc import IntegrityError

    engine = open_catalog_db(tmp_path / "m.db")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("INSERT INTO files (version_id, path, size) VALUES (999, 'x', 1)"))


def test_upgrading_a_populated_database_keeps_every_row(tmp_path: Path) -> None:
    """Batch migrations recreate tables; with foreign keys on that used to cascade-delete."""
    from alembic import command

    from mirror.db import _alembic_config

    url = sqlite_url(tmp_path / "m.db")
    engine = make_engine(url)
    cfg = _alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(
            text(
                "INSERT INTO snapshots (id, created_at, complete, source) "
                "VALUES (1, '2024-01-01', 1, 'x')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO entries (id, kind, path, org, name, display_name, "
                "description, short_description, labels, first_snapshot_id) VALUES "
                "(1, 'model', 'nvidia/a', 'nvidia', 'a', 'A', '', '', '[]', 1)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO versions (id, entry_id, version, status, description, "
                "files_listed, first_snapshot_id) VALUES (1, 1, '1', 'X', '', 1, 1)"
            )
        )
        conn.execute(text("INSERT INTO files (version_id, path, size) VALUES (1, 'f', 3)"))
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM versions")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM files")).scalar() == 1
        assert conn.execute(text("SELECT changed_snapshot_id FROM entries")).scalar() == 1
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
