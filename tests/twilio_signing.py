"""Requests signed as Twilio signs them, written from Twilio's documentation, not from Kokan.

https://www.twilio.com/docs/usage/security#validating-requests: take the full URL Twilio
requested (with its query string), append each POST parameter's name and value with no
delimiters, sorted by name (case-sensitive, byte order), HMAC-SHA1 the result with the
account's auth token as the key, and base64-encode the digest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping

SIGNATURE_HEADER = "X-Twilio-Signature"


def twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str] | Iterable[tuple[str, str]]
) -> str:
    pairs = params.items() if isinstance(params, Mapping) else params
    payload = url + "".join(name + value for name, value in sorted(pairs))
    digest = hmac.new(auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def new_sid(prefix: str) -> str:
    """A Twilio SID: two letters naming the resource (CA call, AC account, RE recording)."""
    return prefix + secrets.token_hex(16)
