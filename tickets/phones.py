"""Phone numbers in E.164, whatever way they were written: one number, one customer.

`090-1234-5678` (read in the configured default region), `+81 90 1234 5678`,
`whatsapp:+819012345678` and `tel:+81-90-1234-5678` all become `+819012345678`.
"""

from __future__ import annotations

import phonenumbers

from kokan.errors import InvalidInput

MAX_RAW_LENGTH = 64
"""Longer input is not a phone number; refuse it before the parser spends time on it."""
PREFIXES = ("whatsapp:", "tel:", "sms:")
"""Channel prefixes a provider puts before the number (Twilio: `whatsapp:+8190…`)."""


class InvalidPhoneNumber(InvalidInput):
    error_id = "invalid-phone-number"


def split_channel_prefix(raw: str) -> tuple[str | None, str]:
    """('whatsapp', '+8190…') for 'whatsapp:+8190…'; (None, raw) when there is no prefix."""
    lowered = raw.strip().lower()
    for prefix in PREFIXES:
        if lowered.startswith(prefix):
            return prefix[:-1], raw.strip()[len(prefix) :].strip()
    return None, raw.strip()


def to_e164(raw: str, default_region: str) -> str:
    """The number in E.164, or InvalidPhoneNumber naming what is wrong."""
    if len(raw) > MAX_RAW_LENGTH:
        raise InvalidPhoneNumber(f"a phone number has at most {MAX_RAW_LENGTH} characters")
    _channel, number = split_channel_prefix(raw)
    if not number:
        raise InvalidPhoneNumber("the phone number is empty")
    try:
        parsed = phonenumbers.parse(number, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"{number[:32]!r} is not a phone number ({exc})") from None
    # possible, not valid: a newly allocated range must not be refused by an old library
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidPhoneNumber(f"{number[:32]!r} is not a possible phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
