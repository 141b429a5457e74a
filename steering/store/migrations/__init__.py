"""Alembic migrations of the study store (see steering/store/versioning.py for how they run)."""
