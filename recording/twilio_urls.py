"""Where a Twilio recording lives, rebuilt from its ids: a URL from a webhook is never fetched.

Twilio's RecordingUrl names the account and the recording. Kokan keeps only those two
ids and asks the configured `twilio.api_base` for them, so the account's credentials go
to Twilio's API and nowhere else, whatever a request claimed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from recording.errors import InvalidRecordingUrl

API_VERSION = "2010-04-01"
ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
RECORDING_SID = re.compile(r"RE[0-9a-fA-F]{32}")
RECORDING_PATH = re.compile(
    rf"/{API_VERSION}/Accounts/(?P<account>AC[0-9a-fA-F]{{32}})"
    r"/Recordings/(?P<recording>RE[0-9a-fA-F]{32})(?:\.(?:wav|mp3|json))?"
)
MEDIA_EXTENSION = "wav"
"""Twilio serves the original WAV at the recording's URL + .wav (MP3 is a lossy re-encoding)."""


@dataclass(frozen=True)
class TwilioRecordingRef:
    account_sid: str
    recording_sid: str

    def media_url(self, api_base: str) -> str:
        return f"{self._resource(api_base)}.{MEDIA_EXTENSION}"

    def resource_url(self, api_base: str) -> str:
        """The recording's REST resource: DELETE here removes Twilio's copy."""
        return f"{self._resource(api_base)}.json"

    def _resource(self, api_base: str) -> str:
        return (
            f"{api_base.rstrip('/')}/{API_VERSION}/Accounts/{self.account_sid}"
            f"/Recordings/{self.recording_sid}"
        )


def parse_recording_url(url: str, recording_sid: str | None = None) -> TwilioRecordingRef:
    """The ids inside a RecordingUrl; the RecordingSid, when Twilio sent one, must agree."""
    parts = urlsplit(url.strip())
    match = RECORDING_PATH.fullmatch(parts.path)
    if parts.scheme not in ("https", "http") or match is None:
        raise InvalidRecordingUrl(
            "RecordingUrl is not a Twilio recording URL "
            f"(…/{API_VERSION}/Accounts/AC…/Recordings/RE…)"
        )
    ref = TwilioRecordingRef(match["account"], match["recording"])
    if recording_sid is not None and recording_sid != ref.recording_sid:
        raise InvalidRecordingUrl("RecordingSid does not match the recording in RecordingUrl")
    return ref
