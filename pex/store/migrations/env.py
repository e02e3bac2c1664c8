"""Alembic environment for a pex workspace; pex.store.migrate runs it with an open connection.

It is not meant for the ``alembic`` command line with an alembic.ini: the code passes the connection
(already inside the transaction that also holds the workspace's migration lock) as
``config.attributes["connection"]``. To write a new revision by hand, copy the newest file in ``versions/``.
"""

from __future__ import annotations

from alembic import context

from pex.store.schema import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("pex's migrations run from pex.store.migrate with an open connection, not from the alembic CLI")

context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
