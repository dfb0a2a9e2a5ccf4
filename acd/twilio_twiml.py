"""The ACD's TwiML: the hold loop, the bridge between caller and agent, and the few
sentences Kokan itself says to a waiting caller or a ringing agent.

Caller and agent meet in a conference named after the caller's CallSid: each leg is
sent there by its own TwiML, so neither depends on the other's webhook. Recording is
of the caller's leg (recording.live); the room records itself only as the fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from twilio.twiml.voice_response import Dial, Gather, VoiceResponse

from ivr.twiml import Urls, render_voicemail, twilio_locale

CONFERENCE_PREFIX = "kokan-"
"""Conference rooms Kokan made, told apart from any the account has for other uses."""
GATHER_TIMEOUT_S = 1
"""After the music ends, how long a press of the callback key is still taken."""
CALLBACK_DIAL_TIMEOUT_S = 30
"""About six rings for the customer Kokan calls back."""
VOICEMAIL_MAX_S = 120
"""A queue's voicemail after the longest wait: the flow's own length is not known here."""
FALLBACK_LANGUAGE = "en"

PHRASES: dict[str, dict[str, str]] = {
    "ja": {
        "position": "ただいま{position}番目にお待ちいただいております。",
        "wait": "お待ち時間はおよそ{minutes}分です。",
        "offer_callback": "折り返しのお電話をご希望の場合は{key}を押してください。順番はそのまま保たれます。",
        "callback_confirmed": "承知いたしました。順番が来ましたら、こちらからお電話いたします。",
        "caller_gone": "このお電話は、すでに終了したか、ほかの担当者が対応しました。",
        "callback_to": "折り返しのお電話です。お客様におつなぎします。",
        "call_from": "{queue}のお電話です。",
        "goodbye": "お電話ありがとうございました。",
    },
    "en": {
        "position": "You are number {position} in line.",
        "wait": "Your expected wait is about {minutes} minutes.",
        "offer_callback": "To be called back instead, press {key}. You keep your place in line.",
        "callback_confirmed": "Thank you. We will call you back when it is your turn.",
        "caller_gone": "This call has ended or was taken by another agent.",
        "callback_to": "This is a callback. Connecting you to the customer.",
        "call_from": "A call from the {queue} queue.",
        "goodbye": "Thank you for calling.",
    },
}
"""Announcements Kokan makes itself, per language; others fall back to English."""


def phrase(language: str, name: str, **values: object) -> tuple[str, str]:
    """The sentence and the locale to say it in."""
    short = language.split("-")[0]
    chosen = short if short in PHRASES else FALLBACK_LANGUAGE
    return PHRASES[chosen][name].format(**values), twilio_locale(chosen)


def announcement_phrases(
    language: str, position: int, wait_s: int | None, callback_key: str | None = None
) -> list[tuple[str, str]]:
    """A waiting caller's position, the expected wait when there is a figure, and the
    callback key when the queue has one: the sentences (and locales) both transports say."""
    said = [phrase(language, "position", position=position)]
    if wait_s is not None:
        said.append(phrase(language, "wait", minutes=max(1, wait_s // 60)))
    if callback_key:
        said.append(phrase(language, "offer_callback", key=callback_key))
    return said


def conference_name(call_id: str) -> str:
    return CONFERENCE_PREFIX + call_id


@dataclass(frozen=True)
class QueueUrls:
    """Where Twilio comes back to for queued calls and agent legs."""

    base: str

    def wait(self) -> str:
        return f"{self.base}/webhooks/twilio/queue/wait"

    def key(self) -> str:
        return f"{self.base}/webhooks/twilio/queue/key"

    def agent(self, call_id: str, agent_id: str) -> str:
        return f"{self.base}/webhooks/twilio/queue/agent?" + urlencode(
            {"call": call_id, "agent": agent_id}
        )

    def agent_status(self, call_id: str, agent_id: str) -> str:
        return f"{self.base}/webhooks/twilio/queue/agent-status?" + urlencode(
            {"call": call_id, "agent": agent_id}
        )

    @property
    def ivr(self) -> Urls:
        return Urls(self.base)


def _say(target: VoiceResponse | Gather, language: str, name: str, **values: object) -> None:
    text, locale = phrase(language, name, **values)
    target.say(text, language=locale)


def waiting(
    urls: QueueUrls,
    *,
    music: str,
    language: str,
    position: int | None,
    wait_s: int | None,
    callback_key: str | None,
) -> str:
    """One turn of the hold loop: maybe an announcement, the music, then back again.
    `position` None: no announcement this turn."""
    response = VoiceResponse()
    target: VoiceResponse | Gather = response
    if callback_key:
        target = response.gather(
            input="dtmf",
            num_digits=1,
            action=urls.key(),
            method="POST",
            timeout=GATHER_TIMEOUT_S,
            action_on_empty_result=False,
        )
    if position is not None:
        for text, locale in announcement_phrases(language, position, wait_s, callback_key):
            target.say(text, language=locale)
    target.play(urls.ivr.media(music))
    response.redirect(urls.wait(), method="POST")
    return str(response)


RECORDING_EVENTS = "completed absent"
"""The conference recording's status callbacks Kokan needs: the finished file, or none."""


def _conference(dial: Dial, call_id: str, record_callback: str | None = None) -> None:
    """`record_callback`: the conference records itself (mono), reporting there; only when
    the two-channel recording of the caller's leg could not be started."""
    recording: dict[str, str] = {}
    if record_callback:
        recording = {
            "record": "record-from-start",
            "recording_status_callback": record_callback,
            "recording_status_callback_event": RECORDING_EVENTS,
            "recording_status_callback_method": "POST",
        }
    dial.conference(
        conference_name(call_id),
        start_conference_on_enter=True,
        end_conference_on_exit=True,
        beep=False,
        wait_url="",
        **recording,
    )


def caller_bridge(
    call_id: str,
    urls: QueueUrls,
    consent: tuple[str, str] | None = None,
    record_callback: str | None = None,
) -> str:
    """The caller's side of an answered call; when the agent hangs up, the caller goes on
    to the flow's survey (or a goodbye). `consent` (text, language): said first, when the
    call may be recorded."""
    response = VoiceResponse()
    if consent is not None:
        text, language = consent
        response.say(text, language=twilio_locale(language))
    _conference(
        response.dial(action=urls.ivr.after_agent(), method="POST"), call_id, record_callback
    )
    return str(response)


def agent_bridge(
    call_id: str, queue: str, language: str, record_callback: str | None = None
) -> str:
    """The agent's side: a one-line whisper naming the queue, then the caller."""
    response = VoiceResponse()
    _say(response, language, "call_from", queue=queue)
    _conference(response.dial(), call_id, record_callback)
    return str(response)


def agent_callback(number: str, caller_id: str | None, language: str) -> str:
    """The agent took a callback task: Kokan dials the customer on the agent's leg."""
    response = VoiceResponse()
    _say(response, language, "callback_to")
    dial = response.dial(caller_id=caller_id, timeout=CALLBACK_DIAL_TIMEOUT_S)
    dial.number(number)
    return str(response)


def _say_and_hang_up(language: str, name: str) -> str:
    response = VoiceResponse()
    _say(response, language, name)
    response.hangup()
    return str(response)


def agent_nothing_to_take(language: str) -> str:
    """The call went to another agent or the caller left while this phone rang."""
    return _say_and_hang_up(language, "caller_gone")


def callback_confirmed(language: str) -> str:
    return _say_and_hang_up(language, "callback_confirmed")


def voicemail(urls: QueueUrls) -> str:
    """The longest wait has passed and the queue sends callers to voicemail."""
    return render_voicemail((), urls.ivr, VOICEMAIL_MAX_S)


def goodbye(language: str) -> str:
    return _say_and_hang_up(language, "goodbye")
