"""Database engines and schema migrations for the job store.

SQLite (WAL, a busy timeout, one file in the data directory) by default; PostgreSQL when
``AAT_DATABASE_URL`` names one, for several hosts sharing jobs. Migrations are Alembic revisions
shipped in ``service/storage/migrations`` and applied by :func:`migrate` at start; concurrent
starters are serialised (a file lock for SQLite, an advisory lock for PostgreSQL).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from service.core.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
HEAD_REVISION = "0006"
_PG_LOCK_ID = 0x4AA7_0005
_migrate_lock = threading.Lock()


def normalise_url(url: str) -> str:
    """Use the psycopg 3 driver for plain ``postgresql://`` URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child (Celery prefork) must not reuse the parent's pooled connections."""
    for engine in list(_engines):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a 30 s busy timeout and its directory created."""
    engine = _make_engine(url)
    _engines.add(engine)
    return engine


def _make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    try:
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    except (SQLAlchemyError, ImportError) as exc:
        raise ConfigError(f"cannot use database URL ({exc}); check AAT_DATABASE_URL") from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    db_path = engine.url.database
    if not db_path or db_path == ":memory:":
        yield
        return
    lock_path = Path(db_path).with_suffix(".migrate.lock")
    with open(lock_path, "a+b") as fh:
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except ImportError:  # Windows: the in-process lock below still serialises threads
            pass
        yield


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe with several starters)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with _migrate_lock:
            if engine.dialect.name == "sqlite":
                with _sqlite_file_lock(engine), engine.begin() as conn:
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
            else:
                with engine.begin() as conn:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_ID})
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
    except OperationalError as exc:  # cannot connect / open: a setup problem, said in one line
        raise ConfigError(
            f"cannot open the job store {shown_url(engine)}: {_one_line(exc.orig or exc)}; "
            "fix AAT_DATABASE_URL or start the database", code="store_unavailable") from exc
    log.debug("job store schema at revision %s", HEAD_REVISION)


def preflight(url: str) -> None:
    """Open the store at ``url`` and bring its schema up to date once, then let go: commands
    call this before they start serving, so a bad ``AAT_DATABASE_URL`` is one clear
    ``store_unavailable`` error instead of a server that starts and then dies."""
    engine = make_engine(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()


def shown_url(engine: Engine) -> str:
    """The engine's URL without its password, for messages."""
    return engine.url.render_as_string(hide_password=True)


def _one_line(exc: BaseException) -> str:
    """The driver's message on one line (drivers spread it over several)."""
    text_ = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text_[:300] or exc.__class__.__name__


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        except SQLAlchemyError:
            return None
    return row[0] if row else None
