"""Agents' SMS/WhatsApp replies: queued by the API, sent by real rq workers through the
`twilio` library to a local stand-in for api.twilio.com, statuses from signed callbacks.

The stand-in checks Basic auth and answers POST …/Messages.json as Twilio does (201 with
the message's JSON), or with the scripted failures a test asks for.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import redis
from flask import Flask
from rq import Worker
from sqlalchemy import select

from kokan.app import create_app
from kokan.config import Settings
from kokan.db import Database
from kokan.work_queues import ALL_QUEUES
from tests.conftest import configure_jobs
from tests.test_messaging_webhook import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CALLER,
    KOKAN_NUMBER,
    PUBLIC_URL,
    Twilio,
    reply_text,
    sms_params,
    whatsapp_params,
)
from tests.test_tickets_api import Api, error, ok
from tests.twilio_signing import SIGNATURE_HEADER, new_sid, twilio_signature
from tickets import jobs
from tickets.models import Interaction, OptOut, Ticket

MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
STATUS_PATH = "/webhooks/twilio/messaging/status"


@dataclass
class FakeMessaging:
    """api.twilio.com's Messages resource; `script` holds the next answers ("ok" after)."""

    script: list[tuple[int, int | None]] = field(default_factory=list)
    sent: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self) -> tuple[int, int | None]:
        with self.lock:
            return self.script.pop(0) if self.script else (201, None)


class MessagingHandler(BaseHTTPRequestHandler):
    server: MessagingServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        fake = self.server.fake
        expected = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self._json(401, {"code": 20003, "message": "Authenticate", "status": 401})
            return
        if self.path != MESSAGES_PATH:
            self._json(404, {"code": 20404, "message": "not found", "status": 404})
            return
        length = int(self.headers.get("Content-Length", "0"))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        fake.sent.append(form)
        status, code = fake.next()
        if status != 201:
            self._json(status, {"code": code, "message": "scripted failure", "status": status})
            return
        sid = new_sid("SM")
        self._json(
            201,
            {
                "sid": sid,
                "account_sid": ACCOUNT_SID,
                "to": form.get("To"),
                "from": form.get("From"),
                "body": form.get("Body"),
                "status": "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
            },
        )


class MessagingServer(ThreadingHTTPServer):
    fake: FakeMessaging


@pytest.fixture
def twilio_api() -> Iterator[tuple[FakeMessaging, str]]:
    server = MessagingServer(("127.0.0.1", 0), MessagingHandler)
    server.daemon_threads = True
    server.fake = FakeMessaging()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def configured(
    tmp_path: Path,
    settings: Settings,
    twilio_api: tuple[FakeMessaging, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """config.yaml for the jobs, read by them as under `kokan worker`; the token from the env."""
    sections = {
        "public_url": PUBLIC_URL,
        "twilio": {"account_sid": ACCOUNT_SID, "api_base": twilio_api[1]},
        "tickets": {"send_retry_intervals_s": [0, 0]},
    }
    return configure_jobs(
        tmp_path, monkeypatch, settings, sections, env={"TWILIO_AUTH_TOKEN": AUTH_TOKEN}
    )


@pytest.fixture
def reply_app(configured: Settings, database: Database, redis_client: redis.Redis) -> Flask:
    return create_app({"TESTING": True, "KOKAN_SETTINGS": configured})


@pytest.fixture
def api(reply_app: Flask, database: Database) -> Api:
    return Api(reply_app.test_client(), database)


@pytest.fixture
def twilio(reply_app: Flask) -> Twilio:
    return Twilio(reply_app.test_client())


def work(connection: redis.Redis) -> None:
    """A real rq worker in burst mode over Kokan's queues; each job in a forked horse."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        Worker(list(ALL_QUEUES), connection=connection).work(burst=True, logging_level="WARNING")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def ticket_from(twilio: Twilio, database: Database, params: dict[str, str]) -> int:
    reply_text(twilio.post(params))
    with database.sessions() as session:
        ticket_id = session.scalar(select(Ticket.id).order_by(Ticket.id.desc()))
        assert ticket_id is not None
        return ticket_id


def interaction(database: Database, interaction_id: int) -> Interaction:
    with database.sessions() as session:
        row = session.get(Interaction, interaction_id)
        assert row is not None
        session.expunge(row)
        return row


def notes(database: Database, ticket_id: int) -> list[str]:
    with database.sessions() as session:
        return list(
            session.scalars(
                select(Interaction.body).where(
                    Interaction.ticket_id == ticket_id, Interaction.channel == "note"
                )
            )
        )


def test_a_whatsapp_reply_goes_out_through_twilio_from_a_worker(
    api: Api,
    twilio: Twilio,
    database: Database,
    redis_client: redis.Redis,
    twilio_api: tuple[FakeMessaging, str],
) -> None:
    ticket_id = ticket_from(twilio, database, whatsapp_params(body="注文はいつ届きますか"))
    reply = ok(api.post(f"/api/tickets/{ticket_id}/replies", {"body": "明日届きます 📦"}), 202)
    assert reply["delivery_status"] == "queued"
    assert (reply["to"], reply["from"]) == (f"whatsapp:{CALLER}", f"whatsapp:{KOKAN_NUMBER}")
    ticket = ok(api.get(f"/api/tickets/{ticket_id}"))
    assert ticket["status"] == "open"
    assert ticket["first_responded_at"] is not None
    work(redis_client)
    fake, _ = twilio_api
    (sent,) = fake.sent
    assert sent["To"] == f"whatsapp:{CALLER}"
    assert sent["From"] == f"whatsapp:{KOKAN_NUMBER}"
    assert sent["Body"] == "明日届きます 📦"
    assert sent["StatusCallback"] == f"{PUBLIC_URL}{STATUS_PATH}?interaction={reply['id']}"
    stored = interaction(database, reply["id"])
    assert stored.provider == "twilio"
    assert stored.provider_message_id is not None
    assert stored.provider_message_id.startswith("SM")
    assert stored.delivery_status == "queued-at-provider"
    # running the job again sends nothing twice
    assert jobs.send_message(reply["id"]) == "queued-at-provider"
    assert len(fake.sent) == 1


def test_a_busy_twilio_is_retried_and_a_dead_one_marks_the_message_failed(
    api: Api,
    twilio: Twilio,
    database: Database,
    redis_client: redis.Redis,
    twilio_api: tuple[FakeMessaging, str],
) -> None:
    fake, _ = twilio_api
    ticket_id = ticket_from(twilio, database, sms_params())
    fake.script = [(503, 20500)]
    first = ok(api.post(f"/api/tickets/{ticket_id}/replies", {"body": "one"}), 202)
    work(redis_client)
    assert len(fake.sent) == 2
    assert interaction(database, first["id"]).delivery_status == "queued-at-provider"

    fake.script = [(429, 20429)] * 3
    second = ok(api.post(f"/api/tickets/{ticket_id}/replies", {"body": "two"}), 202)
    work(redis_client)
    assert len(fake.sent) == 5  # one attempt and the two configured retries
    failed = interaction(database, second["id"])
    assert failed.delivery_status == "failed"
    assert failed.delivery_error is not None
    assert "gave up after the last retry" in failed.delivery_error


def test_a_refused_number_fails_at_once(
    api: Api,
    twilio: Twilio,
    database: Database,
    redis_client: redis.Redis,
    twilio_api: tuple[FakeMessaging, str],
) -> None:
    fake, _ = twilio_api
    ticket_id = ticket_from(twilio, database, sms_params())
    fake.script = [(400, 21211)]
    reply = ok(api.post(f"/api/tickets/{ticket_id}/replies", {"body": "x"}), 202)
    work(redis_client)
    assert len(fake.sent) == 1
    failed = interaction(database, reply["id"])
    assert failed.delivery_status == "failed"
    assert "21211" in (failed.delivery_error or "")


def test_kokan_never_sends_to_an_opted_out_number_and_says_so_on_the_ticket(
    api: Api,
    twilio: Twilio,
    database: Database,
    redis_client: redis.Redis,
    twilio_api: tuple[FakeMessaging, str],
) -> None:
    fake, _ = twilio_api
    ticket_id = ticket_from(twilio, database, sms_params(body="question"))
    reply_text(twilio.post(sms_params(body="STOP")))
    refused = api.post(f"/api/tickets/{ticket_id}/replies", {"body": "answer"})
    assert error(refused, 409) == "recipient-opted-out"
    (note,) = notes(database, ticket_id)
    assert "opted out" in note
    assert "answer" in note
    work(redis_client)
    assert fake.sent == []

    # opted out after the reply was queued: the job refuses it
    reply_text(twilio.post(sms_params(body="START")))
    queued = ok(api.post(f"/api/tickets/{ticket_id}/replies", {"body": "later"}), 202)
    reply_text(twilio.post(sms_params(body="stop")))
    work(redis_client)
    assert fake.sent == []
    assert interaction(database, queued["id"]).delivery_status == "refused"
    assert len(notes(database, ticket_id)) == 2


def test_twilio_saying_unsubscribed_records_the_opt_out(
    api: Api,
    twilio: Twilio,
    database: Database,
    redis_client: redis.Redis,
    twilio_api: tuple[FakeMessaging, str],
) -> None:
    fake, _ = twilio_api
    ticket_id = ticket_from(twilio, database, sms_params())
    fake.script = [(400, 21610)]
    reply = ok(api.post(f"/api/tickets/{ticket_id}/replies", {"body": "x"}), 202)
    work(redis_client)
    assert interaction(database, reply["id"]).delivery_status == "refused"
    with database.sessions() as session:
        assert session.scalars(select(OptOut.e164)).all() == [CALLER]
    assert len(notes(database, ticket_id)) == 1


def test_status_callbacks_move_forward_only_in_any_order(
    api: Api,
    twilio: Twilio,
    database: Database,
    redis_client: redis.Redis,
) -> None:
    ticket_id = ticket_from(twilio, database, sms_params())
    reply = ok(api.post(f"/api/tickets/{ticket_id}/replies", {"body": "x"}), 202)
    work(redis_client)
    sid = interaction(database, reply["id"]).provider_message_id
    assert sid is not None
    path = f"{STATUS_PATH}?interaction={reply['id']}"

    def callback(status: str, message_sid: str = sid, **extra: str) -> int:
        params = {
            "AccountSid": ACCOUNT_SID,
            "MessageSid": message_sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "To": CALLER,
            "From": KOKAN_NUMBER,
            **extra,
        }
        signature = twilio_signature(AUTH_TOKEN, PUBLIC_URL + path, params)
        response = twilio.client.post(path, data=params, headers={SIGNATURE_HEADER: signature})
        return response.status_code

    assert callback("delivered") == 200
    assert callback("sent") == 200  # late, after delivered
    assert callback("sending") == 200
    assert callback("delivered") == 200  # again
    assert interaction(database, reply["id"]).delivery_status == "delivered"
    assert callback("read") == 200
    assert interaction(database, reply["id"]).delivery_status == "read"
    # another message's SID does not touch this one
    assert callback("failed", message_sid=new_sid("SM")) == 200
    assert interaction(database, reply["id"]).delivery_status == "read"
    assert callback("exploded") == 400
    assert callback("failed", ErrorCode="abc") == 400
    unsigned = twilio.client.post(path, data={"MessageSid": sid, "MessageStatus": "failed"})
    assert unsigned.status_code == 403


def test_replies_that_cannot_go_out(
    api: Api, twilio: Twilio, database: Database, redis_client: redis.Redis
) -> None:
    ticket_id = ticket_from(twilio, database, sms_params())
    path = f"/api/tickets/{ticket_id}/replies"
    assert error(api.post(path, {"body": "x" * 1601}), 400) == "invalid-input"
    assert error(api.post(path, {"body": ""}), 400) == "invalid-input"
    assert error(api.post(path, {"text": "x"}), 400) == "invalid-input"
    assert error(api.post(path, {"body": "x"}, user=None), 401) == "authentication-required"
    assert error(api.post("/api/tickets/999999/replies", {"body": "x"}), 404) == "ticket-not-found"
    with database.unit_of_work() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        ticket.channel = "voice"
    assert error(api.post(path, {"body": "x"}), 409) == "reply-channel-unsupported"
    ok(api.patch(f"/api/tickets/{ticket_id}", {"status": "closed"}))
    assert error(api.post(path, {"body": "x"}), 409) == "ticket-closed"
    assert redis_client.llen("rq:queue:messages") == 0


def test_a_callback_before_the_job_recorded_the_sid_is_kept_and_nothing_is_resent(
    api: Api,
    twilio: Twilio,
    database: Database,
    redis_client: redis.Redis,
    twilio_api: tuple[FakeMessaging, str],
) -> None:
    ticket_id = ticket_from(twilio, database, sms_params())
    reply = ok(api.post(f"/api/tickets/{ticket_id}/replies", {"body": "x"}), 202)
    sid = new_sid("SM")
    path = f"{STATUS_PATH}?interaction={reply['id']}"
    params = {"AccountSid": ACCOUNT_SID, "MessageSid": sid, "MessageStatus": "sent"}
    signature = twilio_signature(AUTH_TOKEN, PUBLIC_URL + path, params)
    response = twilio.client.post(path, data=params, headers={SIGNATURE_HEADER: signature})
    assert response.status_code == 200
    stored = interaction(database, reply["id"])
    assert (stored.provider_message_id, stored.delivery_status) == (sid, "sent")
    work(redis_client)
    assert twilio_api[0].sent == []
