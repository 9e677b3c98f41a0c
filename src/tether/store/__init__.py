"""Persistence: SQLAlchemy Core tables, Alembic migrations and one query module per resource."""
