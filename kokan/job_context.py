"""What every rq job opens first: Kokan's settings and a database for the one job.

Jobs run in `kokan worker` (or any process with the same config file and environment):
they read the configuration themselves, so an enqueued job carries only ids, and the
database engine lives exactly as long as the job.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kokan import config
from kokan.config import Settings
from kokan.db import Database


@contextmanager
def job_context() -> Iterator[tuple[Settings, Database]]:
    settings = config.load().settings
    database = Database(settings.effective_database_url)
    try:
        yield settings, database
    finally:
        database.dispose()
