"""One signature scheme for JSON that crosses Kokan's edge, both ways: the e-mail and chat
intake checks it, outbound webhooks carry it.

    X-Kokan-Timestamp: 1795420800            (Unix seconds when the request was signed)
    X-Kokan-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>

The timestamp is inside the signed text, so an old request cannot be given a fresh one;
the receiver refuses timestamps outside the replay window. Several `sha256=` values may be
sent, separated by commas, while a secret is being rotated: one match is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from kokan.errors import KokanError

SIGNATURE_HEADER = "X-Kokan-Signature"
TIMESTAMP_HEADER = "X-Kokan-Timestamp"
SCHEME = "sha256="
REPLAY_WINDOW_S = 300
"""Five minutes either way: room for clock drift and a retried request, too short to keep a
captured request useful."""
TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
MAX_SIGNATURES = 4
"""A rotation sends two; more is not a signer we know."""


class SignatureInvalid(KokanError):
    error_id = "signature-invalid"
    status = 403


class ReplayRefused(KokanError):
    error_id = "signature-timestamp-outside-window"
    status = 403


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SCHEME + digest.hexdigest()


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(
    secret: str,
    timestamp: str | None,
    signatures: str | None,
    body: bytes,
    now: float | None = None,
    window_s: int = REPLAY_WINDOW_S,
) -> None:
    """Raise SignatureInvalid or ReplayRefused (both 403) unless the request is signed
    with `secret` within the window."""
    if not secret:
        raise SignatureInvalid("Kokan has no intake secret configured (KOKAN_INTAKE__SECRET)")
    if not timestamp or not signatures:
        raise SignatureInvalid(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}")
    if not TIMESTAMP.fullmatch(timestamp):
        raise SignatureInvalid(f"{TIMESTAMP_HEADER} must be Unix seconds")
    offered = [part.strip() for part in signatures.split(",") if part.strip()]
    if not offered or len(offered) > MAX_SIGNATURES:
        raise SignatureInvalid(f"{SIGNATURE_HEADER} must be one or two {SCHEME}<hex> values")
    expected = signature(secret, timestamp, body).encode()
    if not any(hmac.compare_digest(expected, value.encode()) for value in offered):
        raise SignatureInvalid(f"{SIGNATURE_HEADER} does not match this request")
    # checked after the signature: an unsigned request learns nothing about our clock
    skew = abs((time.time() if now is None else now) - int(timestamp))
    if skew > window_s:
        raise ReplayRefused(
            f"{TIMESTAMP_HEADER} is {int(skew)} s away from Kokan's clock; "
            f"at most {window_s} s is accepted"
        )
