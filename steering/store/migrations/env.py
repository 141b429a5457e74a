"""Alembic environment: radsteer always hands in an open connection (steering.store.versioning)."""

from alembic import context

from steering.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
