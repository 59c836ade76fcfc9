"""Alembic environment: always run online against the connection handed in by ``db.migrate``.

Alembic executes this file itself; imported any other way it does nothing."""

from __future__ import annotations

from alembic import context

from service.storage.tables import metadata


def run_migrations() -> None:
    connection = context.config.attributes["connection"]
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if hasattr(context, "config"):  # only while Alembic runs migrations
    run_migrations()
