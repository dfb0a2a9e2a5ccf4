"""The Twilio driver's output: engine actions rendered as TwiML with the `twilio` library."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import quote

from twilio.twiml.voice_response import Gather, VoiceResponse

from ivr.engine import (
    Action,
    Audio,
    Enqueue,
    Hangup,
    Listen,
    Play,
    Record,
    Say,
    Transfer,
)

TWILIO_LANGUAGES = {"ja": "ja-JP", "en": "en-US", "ko": "ko-KR", "zh": "cmn-CN"}
"""Twilio wants a locale; flows name languages by their short code."""

APOLOGY = (
    Say("申し訳ございません。ただいまシステムに問題が発生しております。", "ja"),
    Say("We are sorry, something went wrong on our side.", "en"),
)
VOICEMAIL_INVITATION = (
    Say("発信音のあとにメッセージをお話しください。", "ja"),
    Say("Please leave a message after the tone.", "en"),
)
FALLBACK_RECORD_SECONDS = 120
"""Voicemail length when Kokan itself cannot run the flow (the flow's own setting is unknown)."""


@dataclass(frozen=True)
class Urls:
    """Where Twilio should come back to; all absolute under the public URL."""

    base: str

    def step(self, step: int) -> str:
        return f"{self.base}/webhooks/twilio/voice/step?step={step}"

    def no_input(self, step: int) -> str:
        return f"{self.step(step)}&timeout=1"

    def voicemail_saved(self) -> str:
        return f"{self.base}/webhooks/twilio/voice/voicemail-saved"

    def after_agent(self) -> str:
        """Where the caller goes when the agent leg ends: the survey, or goodbye."""
        return f"{self.base}/webhooks/twilio/voice/after-agent"

    def queue_wait(self) -> str:
        """Where a queued caller waits: the ACD's hold loop (acd.twilio_calls)."""
        return f"{self.base}/webhooks/twilio/queue/wait"

    def media(self, source: str) -> str:
        if source.startswith(("http://", "https://")):
            return source
        return f"{self.base}/media/flows/{quote(source)}"


def twilio_locale(code: str) -> str:
    """Twilio wants a locale (ja-JP); flows name languages by their short code."""
    return TWILIO_LANGUAGES.get(code, code)


def _audio(target: VoiceResponse | Gather, audio: Audio, urls: Urls) -> None:
    if isinstance(audio, Say):
        target.say(audio.text, voice=audio.voice, language=twilio_locale(audio.language))
    else:
        target.play(urls.media(audio.source))


RENDER_CACHE_SIZE = 4096
"""Most turns repeat exactly (every new call's first turn, each menu prompt at a given step):
keep their TwiML instead of building the same XML again on the webhook's hot path."""


def render(actions: tuple[Action, ...], step: int, urls: Urls) -> str:
    """TwiML for one turn; `step` goes into every callback URL so replays can be recognised."""
    try:
        return _render_cached(actions, step, urls)
    except TypeError:  # an action holding a dict (Enqueue's skills) cannot be a cache key
        return _render(actions, step, urls)


@functools.lru_cache(maxsize=RENDER_CACHE_SIZE)
def _render_cached(actions: tuple[Action, ...], step: int, urls: Urls) -> str:
    return _render(actions, step, urls)


def _render(actions: tuple[Action, ...], step: int, urls: Urls) -> str:
    response = VoiceResponse()
    for action in actions:
        if isinstance(action, Say | Play):
            _audio(response, action, urls)
        elif isinstance(action, Listen):
            inputs = [
                kind for kind, on in (("dtmf", action.digits), ("speech", action.speech)) if on
            ]
            gather = response.gather(
                input=" ".join(inputs),
                action=urls.step(step),
                method="POST",
                timeout=action.timeout,
                num_digits=action.max_digits if not action.finish_on_key else None,
                finish_on_key=action.finish_on_key if action.digits else None,
                hints=", ".join(action.hints or action.phrases) or None,
                language=twilio_locale(action.language) if action.speech else None,
                speech_timeout="auto" if action.speech else None,
                action_on_empty_result=False,
            )
            for prompt in action.prompts:
                _audio(gather, prompt, urls)
            response.redirect(urls.no_input(step), method="POST")
        elif isinstance(action, Record):
            for prompt in action.prompts:
                _audio(response, prompt, urls)
            response.record(
                action=urls.step(step),
                method="POST",
                max_length=action.max_length,
                finish_on_key=action.finish_on_key or None,
                play_beep=True,
            )
            response.redirect(urls.no_input(step), method="POST")
        elif isinstance(action, Enqueue):
            # the call joined the ACD when this turn was saved; it waits in Kokan's own loop
            response.redirect(urls.queue_wait(), method="POST")
        elif isinstance(action, Transfer):
            dial = response.dial()
            if action.target.startswith("sip:"):
                dial.sip(action.target)
            else:
                dial.number(action.target)
        elif isinstance(action, Hangup):
            response.hangup()
    return str(response)


def render_voicemail(prompts: tuple[Say, ...], urls: Urls, max_length: int) -> str:
    """Prompts, then a voicemail kept by the voicemail-saved webhook, outside any flow."""
    response = VoiceResponse()
    for say in prompts + VOICEMAIL_INVITATION:
        _audio(response, say, urls)
    response.record(
        action=urls.voicemail_saved(),
        method="POST",
        max_length=max_length,
        finish_on_key="#",
        play_beep=True,
    )
    response.hangup()
    return str(response)


def render_fallback(urls: Urls) -> str:
    """Kokan cannot run the flow at all: apologise and take a voicemail, never dead air."""
    return render_voicemail(APOLOGY, urls, FALLBACK_RECORD_SECONDS)


def render_goodbye() -> str:
    response = VoiceResponse()
    response.say("お電話ありがとうございました。", language=twilio_locale("ja"))
    response.say("Thank you for calling.", language=twilio_locale("en"))
    response.hangup()
    return str(response)
