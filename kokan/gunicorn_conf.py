"""gunicorn settings Kokan relies on: `gunicorn -c python:kokan.gunicorn_conf 'kokan.app:create_app()'`."""

from __future__ import annotations

import gc
import os
from typing import Any

from prometheus_client import multiprocess

from kokan.metrics import MULTIPROC_ENV

accesslog = None  # Kokan logs each request itself, with its request id
graceful_timeout = 10
"""Seconds a worker may finish in-flight webhooks after SIGTERM."""

# gunicorn's control socket defaults to one path per user ($HOME/.gunicorn), shared by every
# instance on the machine; give each Kokan data folder its own, or none.
if os.environ.get("KOKAN_DATA_DIR"):
    control_socket = os.path.join(os.environ["KOKAN_DATA_DIR"], "gunicorn.ctl")
else:
    control_socket_disable = True


def post_worker_init(_worker: Any) -> None:
    """The app, its modules and caches now live as long as the worker: freeze them out of
    the cyclic collector. Otherwise every full collection walks all of them (~180k objects,
    a 100-200 ms pause of the worker) every twenty-odd thousand requests."""
    gc.freeze()


def child_exit(_server: Any, worker: Any) -> None:
    """Drop a dead worker's metric files so /metrics does not count it forever."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
