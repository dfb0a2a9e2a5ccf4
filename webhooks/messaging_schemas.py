"""What Twilio's Messaging webhook must carry (SMS and WhatsApp); the rest is ignored.

https://www.twilio.com/docs/messaging/guides/webhook-request: From, To, Body, MessageSid,
NumMedia and MediaUrlN / MediaContentTypeN; WhatsApp numbers come as `whatsapp:+8190…`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from werkzeug.datastructures import MultiDict

from tickets.models import Channel
from tickets.phones import InvalidPhoneNumber, split_channel_prefix, to_e164
from tickets.services import PROVIDER_TWILIO, STATUS_RANK, InboundMessage
from webhooks.schemas import MalformedWebhook

MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
"""SM for a text, MM for a message with media; WhatsApp messages carry the same SIDs."""
MAX_BODY = {Channel.SMS: 1600, Channel.WHATSAPP: 4096}
"""Twilio's limits: an SMS is at most 1 600 characters (10 segments), a WhatsApp message
4 096. A signed request over them did not come from Twilio's normal path: refused."""
MAX_MEDIA = 10
"""Twilio hands over at most 10 media items per message."""
MAX_MEDIA_URL = 1024
MAX_CONTENT_TYPE = 128
MAX_ADDRESS = 64
MEDIA_COUNT = re.compile(r"^[0-9]{1,2}$")


def _text(form: MultiDict[str, str], name: str) -> str:
    value = form.get(name, "")
    if "\x00" in value:
        raise MalformedWebhook(f"{name} contains a NUL character")
    return value


def _media(form: MultiDict[str, str]) -> tuple[dict[str, str], ...]:
    raw = form.get("NumMedia", "0") or "0"
    if not MEDIA_COUNT.fullmatch(raw) or int(raw) > MAX_MEDIA:
        raise MalformedWebhook(f"NumMedia must be a whole number from 0 to {MAX_MEDIA}")
    items = []
    for index in range(int(raw)):
        url = _text(form, f"MediaUrl{index}")
        parts = urlsplit(url)
        if len(url) > MAX_MEDIA_URL or parts.scheme not in ("http", "https") or not parts.netloc:
            raise MalformedWebhook(f"MediaUrl{index} is missing or is not an http(s) URL")
        content_type = _text(form, f"MediaContentType{index}").strip()[:MAX_CONTENT_TYPE]
        # a type Kokan has never heard of is kept as announced, never refused
        items.append({"url": url, "content_type": content_type or "application/octet-stream"})
    return tuple(items)


def inbound_message(form: MultiDict[str, str], default_region: str) -> InboundMessage:
    sid = form.get("MessageSid", "") or form.get("SmsMessageSid", "")
    if not MESSAGE_SID.fullmatch(sid):
        raise MalformedWebhook("MessageSid is missing or is not a Twilio message SID")
    sender = _text(form, "From")
    receiver = _text(form, "To")
    if not sender:
        raise MalformedWebhook("From is missing")
    if len(sender) > MAX_ADDRESS or len(receiver) > MAX_ADDRESS:
        raise MalformedWebhook(f"From and To have at most {MAX_ADDRESS} characters")
    prefix, _number = split_channel_prefix(sender)
    if prefix not in (None, "whatsapp"):
        raise MalformedWebhook(f"From: the {prefix}: prefix is not a messaging channel")
    channel = Channel.WHATSAPP if prefix == "whatsapp" else Channel.SMS
    try:
        e164 = to_e164(sender, default_region)
    except InvalidPhoneNumber as exc:
        raise MalformedWebhook(f"From: {exc.message}") from None
    body = _text(form, "Body")
    if len(body) > MAX_BODY[channel]:
        raise MalformedWebhook(
            f"Body has {len(body)} characters; Twilio sends at most {MAX_BODY[channel]} "
            f"in one {channel.value} message"
        )
    media = _media(form)
    return InboundMessage(
        channel=channel.value,
        from_e164=e164,
        from_address=sender.strip(),
        to_address=receiver.strip(),
        body=body,
        provider=PROVIDER_TWILIO,
        provider_message_id=sid,
        media=media,
    )


WHOLE_NUMBER = re.compile(r"^[0-9]{1,12}$")
ERROR_CODE = re.compile(r"^[0-9]{1,6}$")


@dataclass(frozen=True)
class StatusUpdate:
    interaction_id: int
    message_sid: str
    status: str
    error: str | None


def status_update(args: MultiDict[str, str], form: MultiDict[str, str]) -> StatusUpdate:
    """A status callback: ?interaction=N (Kokan put it in the callback URL) and the form."""
    raw_id = args.get("interaction", "")
    if not WHOLE_NUMBER.fullmatch(raw_id):
        raise MalformedWebhook("the interaction parameter must be a whole number")
    sid = form.get("MessageSid", "")
    if not MESSAGE_SID.fullmatch(sid):
        raise MalformedWebhook("MessageSid is missing or is not a Twilio message SID")
    status = form.get("MessageStatus", "")
    if status == "queued":
        status = "queued-at-provider"
    if status not in STATUS_RANK or status in ("retrying", "refused"):
        raise MalformedWebhook("MessageStatus is missing or not one Twilio sends")
    code = form.get("ErrorCode", "")
    error = None
    if code:
        if not ERROR_CODE.fullmatch(code):
            raise MalformedWebhook("ErrorCode must be a number")
        error = f"Twilio error {code}"
    return StatusUpdate(int(raw_id), sid, status, error)
