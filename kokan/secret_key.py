"""The key that signs sessions and CSRF tokens: configured, or made once and kept in the data folder."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from kokan.config import Settings

SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name
SECRET_KEY_BYTES = 32


def ensure_secret_key(settings: Settings) -> str:
    """Every web worker of one installation must sign with the same key, so it lives on disk."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    path = settings.resolved_data_dir / SECRET_KEY_FILE
    if not path.exists():
        _write_new_key(path)
    return path.read_text(encoding="ascii").strip()


def _write_new_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another worker won the race; its key is the one
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_hex(SECRET_KEY_BYTES))
