"""Recordings in an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, Ceph, …), with boto3.

The same small interface as LocalStorage: files are staged in a local folder, then
uploaded under their key; an S3 PUT makes an object appear whole or not at all, so the
"never half a file" rule holds without a rename. Reading is seekable: each seek opens one
ranged GET from there to the end, so the playback API's Range requests fetch only what
is played. boto3 is an optional dependency (`pip install 'kokan[s3]'`).
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from recording.storage import TEMP_SUFFIX, check_key

NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
"""What S3-compatible servers answer for a key with no object (HEAD has no body, so 404)."""
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60
"""A chunk of a recording arrives in well under a minute; longer means the server is stuck."""
MAX_ATTEMPTS = 3
"""boto3's own retries for throttling and 5xx, before the job's retries take over."""


def _client(
    endpoint_url: str | None,
    region: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
) -> Any:
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            # path-style (endpoint/bucket/key) works on every S3-compatible server
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        ),
    )


def _not_found(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code in NOT_FOUND_CODES


class S3Object(io.RawIOBase):
    """A read-only, seekable view of one object: a ranged GET per seek, read as a stream."""

    def __init__(self, client: Any, bucket: str, name: str, size: int) -> None:
        self._client = client
        self._bucket = bucket
        self._name = name
        self._size = size
        self._position = 0
        self._body: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        position = max(0, base + offset)
        if position != self._position:
            self._drop_body()
            self._position = position
        return position

    def readinto(self, buffer: Any) -> int:
        if self._position >= self._size:
            return 0
        if self._body is None:
            answer = self._client.get_object(
                Bucket=self._bucket, Key=self._name, Range=f"bytes={self._position}-"
            )
            self._body = answer["Body"]
        chunk = self._body.read(len(buffer))
        buffer[: len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)

    def _drop_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop_body()
        super().close()


class S3Storage:
    def __init__(
        self,
        bucket: str,
        staging_root: Path,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        """Credentials left None come from boto3's usual places (AWS_ACCESS_KEY_ID and
        AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role)."""
        self.bucket = bucket
        self.prefix = prefix
        self.staging_root = staging_root
        self.client = _client(endpoint_url, region, access_key_id, secret_access_key)

    def _name(self, key: str) -> str:
        check_key(key)
        return self.prefix + key

    @contextmanager
    def staging(self) -> Iterator[Path]:
        self.staging_root.mkdir(parents=True, exist_ok=True)
        temp = self.staging_root / f"{secrets.token_hex(8)}{TEMP_SUFFIX}"
        temp.touch(mode=0o600, exist_ok=False)
        try:
            yield temp
        finally:
            temp.unlink(missing_ok=True)

    def put(self, key: str, source: Path) -> None:
        name = self._name(key)
        with open(source, "rb") as handle:
            self.client.put_object(Bucket=self.bucket, Key=name, Body=handle)

    def open(self, key: str) -> BinaryIO:
        size = self.size(key)
        return io.BufferedReader(S3Object(self.client, self.bucket, self._name(key), size))

    def size(self, key: str) -> int:
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except Exception as exc:
            if _not_found(exc):
                raise FileNotFoundError(key) from None
            raise
        return int(answer["ContentLength"])

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True
