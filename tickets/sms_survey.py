"""The post-call survey by SMS: when the caller left before the voice survey (or always,
when so configured), the same questions go out as text messages, one at a time.

The call-detail projector plans it once a call ends (`plan`): the first question becomes a
`ScheduledMessage` of the proactive machinery, so it waits for the configured delay and
for the end of quiet hours, and is never sent to an opted-out number. Sending it opens the
survey (`opened`); each reply that is a number in the question's range answers it
(`answer`, called by the Messaging webhook) and is answered with the next question, or
thanks, in the webhook's own TwiML. A reply that is not an answer is an ordinary message
and threads as one. Answers land on the call's survey interaction, where the voice
survey's go, so the KPIs read one place.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import unicodedata
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from kokan.config import SMS_SURVEY_RULE, SurveyQuestion, TicketsSettings
from kokan.db import utcnow
from tickets import proactive, services
from tickets.models import Call, Channel, ScheduledMessage, SmsSurvey
from tickets.phones import InvalidPhoneNumber, to_e164

RULE = SMS_SURVEY_RULE
EVENT = "survey.sms"
SCHEDULED = "scheduled"
ASKING = "asking"
DONE = "done"
SCORE = re.compile(r"[0-9]{1,2}")
"""An answer is the number alone (after NFKC, so a Japanese keyboard's full-width digits count)."""

log = logging.getLogger(__name__)


def has_voice_answers(session: Session, call: Call) -> bool:
    from tickets.call_tickets import SURVEY_SUFFIX

    found = services.find_interaction(session, call.provider, call.provider_call_id + SURVEY_SUFFIX)
    return found is not None and bool(found.answers)


def wanted(session: Session, settings: TicketsSettings, call: Call) -> bool:
    """An answered call whose flow promised a survey, and the caller gave no voice answers
    (they hung up first, or before answering), or surveys go by SMS always."""
    mode = settings.sms_survey.mode
    if mode == "off" or not call.survey_flow or call.ended_at is None:
        return False
    if call.answered_at is None or call.direction != "inbound":
        return False
    return mode == "always" or not has_voice_answers(session, call)


def _question_text(settings: TicketsSettings, question: SurveyQuestion, language: str) -> str:
    return proactive.pick_text(question.text, language, settings.proactive.language)


def plan(
    session: Session, settings: TicketsSettings, call: Call, now: dt.datetime | None = None
) -> SmsSurvey | None:
    """The call's SMS survey, planned now or before; None when it gets none."""
    existing = session.scalar(
        select(SmsSurvey).where(
            SmsSurvey.provider == call.provider,
            SmsSurvey.provider_call_id == call.provider_call_id,
        )
    )
    if existing is not None or not wanted(session, settings, call):
        return existing
    try:
        e164 = to_e164(call.from_number, settings.default_region)
    except InvalidPhoneNumber:
        return None
    now = now or utcnow()
    customer, _created = services.find_or_create_by_phone(session, e164)
    call_interaction = services.find_interaction(session, call.provider, call.provider_call_id)
    ticket_id = call_interaction.ticket_id if call_interaction is not None else None
    config = settings.sms_survey
    language = settings.proactive.language
    ended = call.ended_at or now
    send_at = max(now, ended + dt.timedelta(minutes=config.delay_minutes))
    send_at = proactive.after_quiet_hours(
        send_at, settings.proactive.quiet_hours, ZoneInfo(settings.proactive.timezone)
    )
    survey = SmsSurvey(
        provider=call.provider,
        provider_call_id=call.provider_call_id,
        customer_id=customer.id,
        ticket_id=ticket_id,
        e164=e164,
        language=language,
        question=0,
        answers={},
        status=SCHEDULED,
        expires_at=send_at + dt.timedelta(hours=config.expire_hours),
        created_at=now,
        updated_at=now,
    )
    session.add(survey)
    first = ScheduledMessage(
        rule=RULE,
        event=EVENT,
        event_key=f"{call.provider}:{call.provider_call_id}",
        customer_id=customer.id,
        ticket_id=ticket_id,
        channel=Channel.SMS.value,
        to_address=e164,
        from_address="",
        body=_question_text(settings, config.questions[0], language),
        send_at=send_at,
        status=proactive.SCHEDULED,
        created_at=now,
        updated_at=now,
    )
    session.add(first)
    session.flush()
    proactive.schedule_after_commit(session, first)
    log.info("call %s: SMS survey planned for %s", call.provider_call_id, send_at.isoformat())
    return survey


def _survey_of(session: Session, message: ScheduledMessage) -> SmsSurvey | None:
    provider, _, call_id = message.event_key.partition(":")
    return session.scalar(
        select(SmsSurvey).where(
            SmsSurvey.provider == provider, SmsSurvey.provider_call_id == call_id
        )
    )


def opened(session: Session, message: ScheduledMessage, now: dt.datetime) -> None:
    """The first question went out: replies count as answers from now until it expires."""
    survey = _survey_of(session, message)
    if survey is None:
        return
    survey.status = ASKING
    survey.ticket_id = survey.ticket_id or message.ticket_id
    survey.updated_at = now


def parse_score(body: str, question: SurveyQuestion) -> int | None:
    text = (
        unicodedata.normalize("NFKC", body).strip().rstrip(".。!")
    )  # after NFKC, full-width ! is !
    if not SCORE.fullmatch(text):
        return None
    value = int(text)
    return value if question.low <= value <= question.high else None


@dataclass(frozen=True)
class SurveyReply:
    survey_id: int
    ticket_id: int | None
    reply: str
    finished: bool


def answer(
    session: Session,
    settings: TicketsSettings,
    e164: str,
    body: str,
    now: dt.datetime | None = None,
) -> SurveyReply | None:
    """Take an SMS as the answer to the open survey's current question; None when the
    number has no open survey or the message is not an answer to it."""
    now = now or utcnow()
    survey = session.scalar(
        select(SmsSurvey)
        .where(SmsSurvey.e164 == e164, SmsSurvey.status == ASKING, SmsSurvey.expires_at > now)
        .order_by(SmsSurvey.created_at.desc(), SmsSurvey.id.desc())
        .limit(1)
        .with_for_update()
    )
    questions = settings.sms_survey.questions
    if survey is None or survey.question >= len(questions):
        return None
    question = questions[survey.question]
    value = parse_score(body, question)
    if value is None:
        return None
    from tickets.call_tickets import store_survey_answers

    survey.answers = {**survey.answers, question.key: str(value)}
    store_survey_answers(
        session, settings, survey.provider, survey.provider_call_id, survey.e164, survey.answers
    )
    survey.question += 1
    survey.updated_at = now
    if survey.question < len(questions):
        text = _question_text(settings, questions[survey.question], survey.language)
        finished = False
    else:
        survey.status = DONE
        text = proactive.pick_text(
            settings.sms_survey.thanks, survey.language, settings.proactive.language
        )
        finished = True
    return SurveyReply(survey.id, survey.ticket_id, text, finished)
