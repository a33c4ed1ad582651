"""The catalog database: engine, connection pragmas, migrations.

SQLite is opened with WAL (readers never block the one writer), foreign keys on and a busy
timeout, set in a connect listener so every pooled connection has them. The schema is created
and upgraded only by alembic (`migrations/`); a database whose revision this code does not know
(written by a newer `mirror`) is refused rather than guessed at.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from mirror.errors import DatabaseError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _on_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str) -> Engine:
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _on_connect)
    return engine


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config("sqlite://"))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> bool:
    """Bring the schema to head; return True if anything was applied."""
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(str(engine.url))
    current = current_revision(engine)
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    if current == head:
        return False
    if current is not None:
        try:
            script.get_revision(current)
        except Exception:
            raise DatabaseError(
                f"the catalog database is at schema revision {current}, "
                "which this version of mirror does not know",
                hint="upgrade mirror (the database was written by a newer version)",
            ) from None
    with engine.connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            # SQLite batch migrations copy a table, drop the old one and rename the copy; with
            # foreign keys on, dropping `entries` would cascade-delete every version and file.
            # The pragma only works outside a transaction, so set it before beginning one.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()  # end SQLAlchemy's autobegin; pysqlite ran the pragma outside one
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise DatabaseError(
                            f"migration left {len(broken)} dangling references; rolled back",
                            hint="report this with the database attached",
                        )
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()
    log.info("catalog schema upgraded from %s to %s", current, head)
    return True


def open_catalog_db(path: Path) -> Engine:
    """Open (creating or upgrading as needed) the SQLite catalog at `path`."""
    engine = make_engine(sqlite_url(path))
    try:
        upgrade(engine)
    except sa_exc.OperationalError as exc:
        raise translate(exc) from exc
    return engine


def translate(exc: sa_exc.DBAPIError) -> DatabaseError:
    text = str(exc.orig) if exc.orig is not None else str(exc)
    if "locked" in text:
        return DatabaseError(
            "the catalog database stayed locked for 30 s",
            hint="another process holds a long write transaction; retry",
        )
    if "readonly" in text or "read-only" in text:
        return DatabaseError("the catalog database is read-only", hint="check file permissions")
    if "disk" in text and "full" in text:
        return DatabaseError("disk full while writing the catalog database", hint="free space")
    return DatabaseError(f"catalog database error: {text}")


class Database:
    """An engine plus a session factory with explicit transactions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on error, translate DB errors."""
        sess = self._sessions()
        try:
            with sess.begin():
                yield sess
        except sa_exc.DBAPIError as exc:
            raise translate(exc) from exc
        finally:
            sess.close()

    def table_names(self) -> list[str]:
        return sorted(inspect(self.engine).get_table_names())
