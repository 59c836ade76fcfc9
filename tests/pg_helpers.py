"""PostgreSQL helpers for tests: throwaway databases on the real server at 127.0.0.1:5432."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

PG_ADMIN_URL = os.environ.get("AAT_TEST_PG_ADMIN",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextmanager
def throwaway_pg_database(prefix: str) -> Iterator[str]:
    """Create a PostgreSQL database of our own on 127.0.0.1 and drop it afterwards."""
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def empty_pg_schema(url: str) -> str:
    """Drop our tables in the database at ``url`` so the next store starts from migration 1."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS deliveries, tiles, jobs, alembic_version"))
    engine.dispose()
    return url
