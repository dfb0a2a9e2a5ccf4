"""Recordings on the customer record: linked to the call's interaction and ticket in any
order, a voicemail's transcript on its interaction, and a ticket's legal hold keeping its
recordings from retention."""

from __future__ import annotations

import datetime as dt

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from admin.services import create_user, issue_token
from kokan.config import RecordingSettings, Settings
from kokan.db import Database, utcnow
from recording.links import TRANSCRIPT_MARK, link_recent
from recording.models import Recording, RecordingStatus
from recording.processing import transcribe_stored
from recording.retention import apply_retention
from recording.storage import LocalStorage
from tests.recording_support import spoken, store_recording, wav_of
from tests.twilio_signing import new_sid
from tickets.call_tickets import tickets_for_calls
from tickets.models import AuditEntry, Call, Customer, Interaction, Ticket
from tickets.services import record_interaction

CALLER = "+819012345678"


def ended_call(database: Database, settings: Settings, outcome: str) -> tuple[str, int]:
    """A call that ended (voicemail or answered) and the interaction its ticket got."""
    sid = new_sid("CA")
    now = utcnow()
    with database.unit_of_work() as session:
        session.add(
            Call(
                provider="twilio",
                provider_call_id=sid,
                from_number=CALLER,
                to_number="+81345678901",
                arrived_at=now - dt.timedelta(minutes=2),
                ended_at=now,
                answered_at=now if outcome == "answered" else None,
                outcome=outcome,
                queue="billing",
            )
        )
    assert tickets_for_calls(database, settings.tickets, [("twilio", sid)]) == 1
    with database.unit_of_work() as session:
        interaction = session.scalars(
            select(Interaction).where(Interaction.provider_message_id == sid)
        ).one()
        return sid, interaction.id


def stored(database: Database, settings: Settings, content: bytes, sid: str, **columns: str) -> int:
    """A stored recording of the call `sid` (store_recording makes up a CallSid of its own)."""
    recording_id = store_recording(database, settings, content, **columns)
    with database.unit_of_work() as session:
        row = session.get(Recording, recording_id)
        assert row is not None
        row.provider_call_id = sid
    return recording_id


def body_of(database: Database, interaction_id: int) -> str:
    with database.unit_of_work() as session:
        found = session.get(Interaction, interaction_id)
        assert found is not None
        return found.body


def transcribe(database: Database, settings: Settings, recording_id: int) -> None:
    outcome = transcribe_stored(
        recording_id,
        settings=settings,
        database=database,
        storage=LocalStorage(settings.recordings_dir),
    )
    assert outcome == "transcribed"


def with_phrases(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"recording": RecordingSettings(vosk_phrases=["상담원", "환불", "예약"])}
    )


def test_a_voicemails_transcript_appears_on_its_interaction(
    settings: Settings, database: Database
) -> None:
    settings = with_phrases(settings)
    sid, interaction_id = ended_call(database, settings, "voicemail")
    summary = body_of(database, interaction_id)
    recording_id = stored(database, settings, wav_of(spoken("환불")), sid, kind="voicemail")
    transcribe(database, settings, recording_id)
    assert body_of(database, interaction_id) == summary + TRANSCRIPT_MARK + "환불"
    transcribe(database, settings, recording_id)  # a retried job
    assert body_of(database, interaction_id).count(TRANSCRIPT_MARK) == 1
    with database.unit_of_work() as session:
        row = session.get(Recording, recording_id)
        assert row is not None
        assert row.interaction_id == interaction_id


def test_an_interaction_made_after_the_transcription_is_linked_when_its_ticket_is_made(
    settings: Settings, database: Database
) -> None:
    settings = with_phrases(settings)
    sid = new_sid("CA")
    recording_id = stored(database, settings, wav_of(spoken("예약")), sid, kind="voicemail")
    transcribe(database, settings, recording_id)  # no interaction yet: nothing to write on
    with database.unit_of_work() as session:
        call = Call(
            provider="twilio",
            provider_call_id=sid,
            from_number=CALLER,
            to_number="+81345678901",
            ended_at=utcnow(),
            outcome="voicemail",
        )
        session.add(call)
    tickets_for_calls(database, settings.tickets, [("twilio", sid)])
    assert link_recent(database) == 0, "linked with the ticket, not left for the sweep"
    with database.unit_of_work() as session:
        interaction = session.scalars(
            select(Interaction).where(Interaction.provider_message_id == sid)
        ).one()
        assert interaction.body.endswith(TRANSCRIPT_MARK + "예약")
        row = session.get(Recording, recording_id)
        assert row is not None
        assert row.interaction_id == interaction.id


def test_the_periodic_sweep_links_a_recording_whose_interaction_came_another_way(
    settings: Settings, database: Database
) -> None:
    sid = new_sid("CA")
    recording_id = stored(database, settings, wav_of(spoken("예약")), sid, kind="call")
    with database.unit_of_work() as session:
        customer = Customer()
        session.add(customer)
        session.flush()
        made = record_interaction(
            session,
            customer_id=customer.id,
            ticket=None,
            channel="voice",
            direction="inbound",
            provider="twilio",
            provider_message_id=sid,
        )
        interaction_id = made.id
    assert link_recent(database) == 1
    assert link_recent(database) == 0, "linked once"
    with database.unit_of_work() as session:
        row = session.get(Recording, recording_id)
        assert row is not None
        assert row.interaction_id == interaction_id


def token(database: Database, username: str, role: str) -> dict[str, str]:
    with database.unit_of_work() as session:
        user = create_user(session, username, role).user
        return {"Authorization": f"Bearer {issue_token(session, user)}"}


def test_a_call_recording_shows_its_ticket_and_is_found_by_it(
    app: Flask, client: FlaskClient, settings: Settings, database: Database
) -> None:
    sid, interaction_id = ended_call(database, settings, "answered")
    recording_id = stored(database, settings, b"RIFF", sid, agent_id="aiko", queue="billing")
    link_recent(database)
    with database.unit_of_work() as session:
        interaction = session.get(Interaction, interaction_id)
        assert interaction is not None
        ticket_id = interaction.ticket_id
        assert ticket_id is not None
    boss = token(database, "sato", "supervisor")
    shown = client.get(f"/api/recordings/{recording_id}", headers=boss).get_json()
    assert (shown["interaction_id"], shown["ticket_id"]) == (interaction_id, ticket_id)
    found = client.get(f"/api/recordings?ticket={ticket_id}", headers=boss).get_json()
    assert [r["id"] for r in found["recordings"]] == [recording_id]
    other = client.get(f"/api/recordings?ticket={ticket_id + 1}", headers=boss).get_json()
    assert other["recordings"] == []
    bad = client.get("/api/recordings?ticket=abc", headers=boss)
    assert bad.status_code == 400
    with database.unit_of_work() as session:
        interaction = session.get(Interaction, interaction_id)
        assert interaction is not None
        customer_id = interaction.customer_id
    by_customer = client.get(f"/api/recordings?customer={customer_id}", headers=boss).get_json()
    assert [r["id"] for r in by_customer["recordings"]] == [recording_id]
    stranger = client.get(f"/api/recordings?customer={customer_id + 1}", headers=boss).get_json()
    assert stranger["recordings"] == []


def test_a_ticket_on_legal_hold_keeps_its_recordings_from_retention(
    app: Flask, client: FlaskClient, settings: Settings, database: Database
) -> None:
    sid, interaction_id = ended_call(database, settings, "answered")
    held = stored(database, settings, b"RIFF....", sid)
    loose = store_recording(database, settings, b"RIFF....")
    with database.unit_of_work() as session:
        ticket_id = session.get(Interaction, interaction_id).ticket_id  # type: ignore[union-attr]
        assert ticket_id is not None
        session.get(Ticket, ticket_id).status = "closed"  # type: ignore[union-attr]

    agent = token(database, "aiko", "agent")
    refused = client.patch(f"/api/tickets/{ticket_id}", json={"legal_hold": True}, headers=agent)
    assert (refused.status_code, refused.get_json()["error_id"]) == (403, "recording-forbidden")
    boss = token(database, "sato", "supervisor")
    bad: object
    for bad in ("yes", 1, None, []):
        wrong = client.patch(f"/api/tickets/{ticket_id}", json={"legal_hold": bad}, headers=boss)
        assert wrong.status_code == 400, bad
    hold = client.patch(f"/api/tickets/{ticket_id}", json={"legal_hold": True}, headers=boss)
    assert hold.status_code == 200, hold.get_json()
    assert hold.get_json()["legal_hold"] is True, "a closed ticket can be put on hold"
    assert client.get(f"/api/tickets/{ticket_id}", headers=boss).get_json()["legal_hold"] is True

    configured = settings.model_copy(update={"recording": RecordingSettings(retention_days=1)})
    storage = LocalStorage(settings.recordings_dir)
    later = utcnow() + dt.timedelta(days=10)
    assert apply_retention(database, storage, configured, now=later) == [loose]
    with database.unit_of_work() as session:
        row = session.get(Recording, held)
        assert row is not None
        assert row.status == RecordingStatus.STORED
        assert row.interaction_id == interaction_id, "retention linked it to see the hold"

    lift = client.patch(f"/api/tickets/{ticket_id}", json={"legal_hold": False}, headers=boss)
    assert lift.get_json()["legal_hold"] is False
    assert apply_retention(database, storage, configured, now=later) == [held]
    with database.unit_of_work() as session:
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.subject_id == ticket_id)
        ).all()
        assert list(actions) == ["legal_hold.set", "legal_hold.lifted"]
