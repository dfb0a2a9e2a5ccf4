"""Calls become tickets: the call-detail projector's second step, apart from the CDR itself.

Which calls, `tickets.call_rule` says:

| rule | a ticket for |
|---|---|
| `every_answered` | every call an agent answered, and every voicemail |
| `missed_only` | every call that ended unanswered (abandoned, callback, failed, voicemail) |
| `voicemail_only` | voicemails only |

A voicemail always makes a ticket: it is a message waiting for an answer. Calls finished
in the IVR (self-service) or transferred away never do. The call is judged from its row
in `calls` once it has ended, so events in any order give the same result; the call's
interaction is keyed by its CallSid, so projecting a call again changes nothing. A call
whose party is not a phone number (anonymous, a `client:` or `sip:` address) is left
without a ticket.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from kokan.config import TicketsSettings
from kokan.db import Database
from tickets import services, subscriptions
from tickets.models import Call, Channel, Direction, Outcome, Ticket
from tickets.phones import InvalidPhoneNumber, to_e164

log = logging.getLogger(__name__)

NEVER = frozenset({Outcome.COMPLETED_IN_IVR.value, Outcome.TRANSFERRED.value})


def _answered(call: Call) -> bool:
    return call.answered_at is not None or call.outcome == Outcome.ANSWERED


def wants_ticket(rule: str, call: Call) -> bool:
    if call.ended_at is None or call.outcome in NEVER:
        return False
    if call.outcome == Outcome.VOICEMAIL:
        return True
    if rule == "every_answered":
        return _answered(call)
    if rule == "missed_only":
        return not _answered(call)
    return False


def _summary(call: Call) -> str:
    direction = "Inbound" if call.direction == Direction.INBOUND else "Outbound"
    kind = "voicemail" if call.outcome == Outcome.VOICEMAIL else "call"
    parts = [f"{direction} {kind}"]
    if call.outcome:
        parts.append(call.outcome)
    if call.ended_at is not None:
        seconds = max(0, int((call.ended_at - call.arrived_at).total_seconds()))
        parts.append(f"{seconds // 60}m{seconds % 60:02d}s")
    if call.queue:
        parts.append(f"queue {call.queue}")
    return ", ".join(parts)


def ticket_for_call(session: Session, settings: TicketsSettings, call: Call) -> int | None:
    """The interaction id of the call (made now or before), or None when it gets no ticket."""
    if not wants_ticket(settings.call_rule, call):
        return None
    existing = services.find_interaction(session, call.provider, call.provider_call_id)
    if existing is not None:
        return existing.id
    inbound = call.direction == Direction.INBOUND
    party = call.from_number if inbound else call.to_number
    try:
        e164 = to_e164(party, settings.default_region)
    except InvalidPhoneNumber:
        log.info("call %s: %r is not a phone number; no ticket", call.provider_call_id, party)
        return None
    customer, _created = services.find_or_create_by_phone(session, e164)
    channel = Channel.VOICEMAIL if call.outcome == Outcome.VOICEMAIL else Channel.VOICE
    summary = _summary(call)
    ended: dt.datetime = call.ended_at or call.arrived_at
    ticket, _ = services.thread(session, settings, customer.id, channel.value, summary, ended)
    interaction = services.record_interaction(
        session,
        customer_id=customer.id,
        ticket=ticket,
        channel=channel.value,
        direction=call.direction,
        body=summary,
        provider=call.provider,
        provider_message_id=call.provider_call_id,
        from_address=call.from_number,
        to_address=call.to_number,
        at=call.arrived_at,
    )
    if ticket.last_activity_at < ended:
        ticket.last_activity_at = ended
    _attach_recordings(session, call)
    return interaction.id


def _attach_recordings(session: Session, call: Call) -> None:
    """Recordings (and a voicemail's transcript) that arrived before the call's ticket join
    it now, rather than at the next periodic sweep."""
    from recording.links import attach
    from recording.models import Recording

    session.flush()
    waiting = session.scalars(
        select(Recording).where(
            Recording.provider == call.provider,
            Recording.provider_call_id == call.provider_call_id,
            Recording.interaction_id.is_(None),
        )
    )
    for row in waiting:
        attach(session, row)


def tickets_for_calls(
    database: Database, settings: TicketsSettings, calls: Iterable[tuple[str, str]]
) -> int:
    """Make the tickets the rule asks for among these (provider, call id) pairs; how many
    calls now have one. Safe to repeat and to run in several projectors at once."""
    keys = sorted(set(calls))
    if not keys:
        return 0

    def work(session: Session) -> int:
        made = 0
        for provider, call_id in keys:
            call = session.scalar(
                select(Call).where(Call.provider == provider, Call.provider_call_id == call_id)
            )
            if call is not None and ticket_for_call(session, settings, call) is not None:
                made += 1
            if call is not None and call.ended_at is not None:
                subscriptions.emit(
                    session,
                    subscriptions.CALL_ENDED,
                    subscriptions.call_data(call),
                    key=f"{subscriptions.CALL_ENDED}:{provider}:{call_id}",
                )
        return made

    return services.run_with_retry(database, work)


SURVEY_SUFFIX = ":survey"
"""A survey's interaction is keyed by its call id plus this: one per call, updated as the
caller answers (a caller who hangs up halfway keeps the answers given)."""
SURVEY_LABELS = {"csat": "CSAT", "nps": "NPS", "ces": "CES"}


def _survey_body(answers: Mapping[str, str]) -> str:
    return ", ".join(f"{SURVEY_LABELS.get(name, name)} {value}" for name, value in answers.items())


def store_survey_answers(
    session: Session,
    settings: TicketsSettings,
    provider: str,
    call_id: str,
    party: str,
    answers: Mapping[str, str],
) -> bool:
    """Merge a call's survey answers (by voice or by SMS) into its one survey interaction,
    on the call's ticket when it has one; False when the party is not a phone number."""
    try:
        e164 = to_e164(party, settings.default_region)
    except InvalidPhoneNumber:
        return False
    key = call_id + SURVEY_SUFFIX
    interaction = services.find_interaction(session, provider, key)
    if interaction is None:
        customer, _created = services.find_or_create_by_phone(session, e164)
        call = services.find_interaction(session, provider, call_id)
        ticket = (
            session.get(Ticket, call.ticket_id)
            if call is not None and call.ticket_id is not None
            else None
        )
        interaction = services.record_interaction(
            session,
            customer_id=customer.id,
            ticket=ticket,
            channel=Channel.SURVEY.value,
            direction=Direction.INBOUND,
            provider=provider,
            provider_message_id=key,
            from_address=party,
        )
    merged = {**(interaction.answers or {}), **answers}
    interaction.answers = merged
    interaction.body = _survey_body(merged)
    return True


def survey_answers(
    database: Database, settings: TicketsSettings, events: Sequence[Mapping[str, str]]
) -> int:
    """Keep each call's voice survey answers; how many calls' answers were stored."""
    latest: dict[tuple[str, str], dict[str, str]] = {}
    parties: dict[tuple[str, str], str] = {}
    for event in events:
        key = (event["provider"], event["provider_call_id"])
        latest.setdefault(key, {}).update(json.loads(event.get("answers") or "{}"))
        parties[key] = event.get("from", "")
    if not latest:
        return 0

    def work(session: Session) -> int:
        stored = 0
        for (provider, call_id), answers in sorted(latest.items()):
            party = parties[(provider, call_id)]
            stored += store_survey_answers(session, settings, provider, call_id, party, answers)
        return stored

    return services.run_with_retry(database, work)


def follow_ups(
    database: Database, settings: TicketsSettings, calls: Iterable[tuple[str, str]]
) -> int:
    """What an ended call starts after its ticket: the SMS survey when one is due, and the
    `callback.scheduled` proactive message for a caller who asked to be called back. Safe
    to repeat: both are keyed by the call."""
    from tickets import proactive, sms_survey

    keys = sorted(set(calls))
    if not keys:
        return 0

    def work(session: Session) -> int:
        started = 0
        for provider, call_id in keys:
            call = session.scalar(
                select(Call).where(Call.provider == provider, Call.provider_call_id == call_id)
            )
            if call is None:
                continue
            if call.ended_at is not None and sms_survey.plan(session, settings, call) is not None:
                started += 1
            if call.outcome == Outcome.CALLBACK:
                try:
                    e164 = to_e164(call.from_number, settings.default_region)
                except InvalidPhoneNumber:
                    continue
                customer, _created = services.find_or_create_by_phone(session, e164)
                started += bool(
                    proactive.raise_event(
                        session,
                        settings,
                        proactive.CALLBACK_SCHEDULED,
                        customer_id=customer.id,
                        key=f"{proactive.CALLBACK_SCHEDULED}:{provider}:{call_id}",
                        e164=e164,
                        data={"queue": call.queue or "", "number": e164},
                    )
                )
        return started

    return services.run_with_retry(database, work)
