"""Alembic environment: runs on the connection open_database hands over (no alembic.ini needed)."""

from __future__ import annotations

from alembic import context

from aisf.services.common.db.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
