"""The one way Kokan gets a `twilio` REST client: credentials from settings, the API's
address from `twilio.api_base`.

The library builds every URL on https://api.twilio.com; the HTTP client below moves
that prefix to the configured base, so a regional edge, a proxy or a local stand-in in
tests receives exactly the requests the library makes, with the same auth and body.
"""

from __future__ import annotations

from typing import Any

from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from kokan.config import TWILIO_API_BASE, Settings
from kokan.errors import KokanError

REST_TIMEOUT_S = 10
"""Twilio's API answers within a second or two; past ten the caller is better served by
the fallback than by a process stuck waiting."""


class TwilioNotConfigured(KokanError):
    error_id = "twilio-not-configured"
    status = 503


class RebasedHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no type hints
    def __init__(self, api_base: str) -> None:
        super().__init__(timeout=REST_TIMEOUT_S)
        self.api_base = api_base.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if url.startswith(TWILIO_API_BASE) and self.api_base != TWILIO_API_BASE:
            url = self.api_base + url[len(TWILIO_API_BASE) :]
        return super().request(method, url, *args, **kwargs)


def rest_client(settings: Settings) -> Client:
    account_sid = settings.twilio.account_sid
    token = settings.twilio.auth_token
    if not account_sid or token is None:
        raise TwilioNotConfigured(
            "calling out through Twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
        )
    return Client(
        account_sid,
        token.get_secret_value(),
        http_client=RebasedHttpClient(settings.twilio.api_base),
    )
