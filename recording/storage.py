"""Where recording files live, behind one small interface: a local folder by default, an
S3-compatible bucket as an option (recording.s3_storage; `recording.storage: s3`).

Keys are made by Kokan from row ids (`key_for`), never taken from a URL or a form, and
every backend refuses a key that does not look like one. A file appears under its key
whole or not at all: it is written to a temporary file first and renamed into place.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, Protocol

from kokan.config import Settings
from recording.errors import InvalidStorageKey

KEY_PATTERN = re.compile(r"^[0-9]{1,19}\.[a-z0-9]{1,8}$")
"""An id and an extension, nothing else: no separators, no dots to climb out with."""

STAGING_DIR = ".incoming"
"""Temporary files sit beside the stored ones (same file system, so the rename is atomic),
in a folder no key can name."""

TEMP_SUFFIX = ".part"
STALE_TEMP_AGE_S = 24 * 3600
"""A temporary file untouched for a day belongs to no running job (a fetch takes minutes):
it is what a killed worker left behind, swept when the next file is staged."""


def key_for(recording_id: int, extension: str) -> str:
    key = f"{recording_id}.{extension}"
    check_key(key)
    return key


def check_key(key: str) -> None:
    if not KEY_PATTERN.fullmatch(key):
        raise InvalidStorageKey(f"not a storage key: {key[:40]!r}")


class Storage(Protocol):
    """What the jobs and the playback API need from a place that keeps recordings."""

    def staging(self) -> AbstractContextManager[Path]:
        """A new empty temporary file to write into; removed on exit unless put() took it."""
        ...

    def put(self, key: str, source: Path) -> None:
        """Move a staged file under `key` at once, replacing an earlier file with that key."""
        ...

    def open(self, key: str) -> BinaryIO: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None:
        """Remove the file; a key with no file is not an error (deleting twice is harmless)."""
        ...

    def exists(self, key: str) -> bool: ...


class LocalStorage:
    """Files in one folder, named by key; temporary files in a hidden folder inside it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging_root = root / STAGING_DIR

    def path(self, key: str) -> Path:
        check_key(key)
        return self.root / key

    @contextmanager
    def staging(self) -> Iterator[Path]:
        self.staging_root.mkdir(parents=True, exist_ok=True)
        self.remove_stale_temporaries(STALE_TEMP_AGE_S)
        temp = self.staging_root / f"{secrets.token_hex(8)}{TEMP_SUFFIX}"
        temp.touch(mode=0o600, exist_ok=False)
        try:
            yield temp
        finally:
            temp.unlink(missing_ok=True)

    def put(self, key: str, source: Path) -> None:
        target = self.path(key)
        if source.parent.resolve() != self.staging_root.resolve():
            # a file from elsewhere may be on another file system, where rename is a copy
            raise InvalidStorageKey("put() takes only a file from this storage's staging()")
        with open(source, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(source, target)
        _fsync_dir(self.root)

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def remove_stale_temporaries(self, older_than_s: float) -> int:
        """Temporary files a killed worker left behind; never visible under a key, only litter."""
        if not self.staging_root.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for temp in self.staging_root.glob(f"*{TEMP_SUFFIX}"):
            try:
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def _fsync_dir(path: Path) -> None:
    """The rename itself survives a power cut only once the folder is flushed."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def storage_for(settings: Settings) -> Storage:
    """The storage `recording.storage` names, for jobs and web processes alike."""
    config = settings.recording
    if config.storage == "s3":
        from recording.s3_storage import S3Storage  # boto3 is needed only here

        secret = config.s3_secret_access_key
        return S3Storage(
            config.s3_bucket or "",
            settings.recordings_dir / STAGING_DIR,
            prefix=config.s3_prefix,
            endpoint_url=config.s3_endpoint_url,
            region=config.s3_region,
            access_key_id=config.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
        )
    return LocalStorage(settings.recordings_dir)
