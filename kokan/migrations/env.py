"""Alembic environment: the engine comes from Kokan (kokan.migrate), never from a URL in a file."""

from alembic import context

from kokan.db import Base, import_models

import_models()
config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
