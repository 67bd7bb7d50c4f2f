"""Metadata database: SQLAlchemy tables, Alembic migrations, and the stores built on them."""
