"""Storage: engine and session factory, shared column types, Alembic migrations.

Tables live in their domains (``ledger/models.py``, ``catalog/models.py`` …);
``db/models.py`` imports them all so Alembic sees one metadata.
"""
