"""Twilio's own HTTP client, taught to stream a recording to a file.

TwilioHttpClient.request() returns the body as text, which mangles audio; `download`
sends the request through the same session, proxy settings, hooks and request logging,
but reads the body in chunks, counting and hashing as it writes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, BinaryIO

from requests import Request, Session
from twilio.http.http_client import TwilioHttpClient

from recording.errors import RecordingTooLarge

CONNECT_TIMEOUT_S = 10
"""Twilio's API answers a connect in well under a second; ten means it is unreachable."""
READ_TIMEOUT_S = 60
"""Longest silence tolerated between two chunks of the body before the attempt is abandoned."""
CHUNK_BYTES = 64 * 1024
"""Large enough to keep system calls few, small enough to stop soon after the size limit."""


@dataclass(frozen=True)
class Download:
    status_code: int
    content_type: str | None
    size: int
    sha256: str


class TwilioMediaClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no type hints
    def download(
        self, url: str, auth: tuple[str, str], destination: BinaryIO, max_bytes: int
    ) -> Download:
        """GET `url` into `destination`; a non-200 answer is returned with its body unread.

        Redirects are followed (Twilio hands media out from its storage hosts); requests
        drops the Authorization header when a redirect leaves the original host.
        """
        kwargs: dict[str, Any] = {
            "method": "GET",
            "url": url,
            "params": None,
            "headers": {"Accept": "audio/*"},
            "auth": auth,
            "hooks": self.request_hooks,
        }
        self.log_request(kwargs)
        session = self.session or Session()
        prepared = session.prepare_request(Request(**kwargs))
        settings = session.merge_environment_settings(prepared.url, self.proxy, True, None, None)
        with session.send(
            prepared,
            allow_redirects=True,
            timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            **settings,
        ) as response:
            self.log_response(response.status_code, response)
            content_type = response.headers.get("Content-Type")
            if response.status_code != 200:
                return Download(response.status_code, content_type, 0, "")
            announced = response.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) > max_bytes:
                raise RecordingTooLarge(
                    f"the recording is {int(announced)} bytes, over the limit of {max_bytes} "
                    "(recording.max_bytes)"
                )
            digest = hashlib.sha256()
            size = 0
            for chunk in response.iter_content(CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise RecordingTooLarge(
                        f"the recording is over the limit of {max_bytes} bytes (recording.max_bytes)"
                    )
                digest.update(chunk)
                destination.write(chunk)
            destination.flush()
            return Download(200, content_type, size, digest.hexdigest())
