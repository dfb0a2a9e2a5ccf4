"""Agents' e-mail replies: an e-mail from the intake makes the ticket, the reply is queued by
the API and sent by a real rq worker through smtplib to a real SMTP server (aiosmtpd) on
127.0.0.1, which checks the login and records what arrived."""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from flask import Flask
from sqlalchemy import select

from bench.local_sip import free_listen_port
from kokan.app import create_app
from kokan.config import Settings
from kokan.db import Database
from tests.conftest import configure_jobs
from tests.test_intake_webhook import EMAIL, SECRET, Sender, stored
from tests.test_intake_webhook import email as email_payload
from tests.test_messaging_replies import work
from tests.test_tickets_api import Api, error, ok
from tickets import email_out
from tickets.models import Interaction

SMTP_USER = "kokan"
SMTP_PASSWORD = "smtp-password-1234"
FROM_ADDRESS = "support@kokan.example.com"


@dataclass
class Mailbox:
    """What the SMTP server took, and the answers it is told to give first."""

    received: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    data_script: list[str] = field(default_factory=list)
    refuse_recipients: bool = False
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Handler:
    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.mailbox.refuse_recipients:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.mailbox.lock:
            if self.mailbox.data_script:
                return self.mailbox.data_script.pop(0)
            content = envelope.original_content or b""
            parsed = email.message_from_bytes(content, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            self.mailbox.received.append(parsed)
            self.mailbox.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 2.0.0 queued"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        box.logins.append((data.login, data.password))
        good = data.login == SMTP_USER.encode() and data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=good, handled=False)  # handled=False: aiosmtpd answers 535

    port = free_listen_port()
    controller = Controller(
        Handler(box),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture
def configured(
    tmp_path: Path,
    settings: Settings,
    mailbox: tuple[Mailbox, int],
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """config.yaml as under `kokan worker`; the SMTP password and intake secret from the env."""
    sections = {
        "email": {
            "smtp_host": "127.0.0.1",
            "smtp_port": mailbox[1],
            "starttls": False,
            "smtp_user": SMTP_USER,
            "from_address": FROM_ADDRESS,
            "from_name": "交換サポート",
            "timeout_s": 5,
            "send_retry_intervals_s": [0, 0],
        },
    }
    return configure_jobs(
        tmp_path,
        monkeypatch,
        settings,
        sections,
        env={"KOKAN_EMAIL__SMTP_PASSWORD": SMTP_PASSWORD, "KOKAN_INTAKE__SECRET": SECRET},
    )


@pytest.fixture
def mail_app(configured: Settings, database: Database, redis_client: redis.Redis) -> Flask:
    return create_app({"TESTING": True, "KOKAN_SETTINGS": configured})


@pytest.fixture
def api(mail_app: Flask, database: Database) -> Api:
    return Api(mail_app.test_client(), database)


@pytest.fixture
def sender(mail_app: Flask) -> Sender:
    return Sender(mail_app.test_client())


def row(database: Database, interaction_id: int) -> Interaction:
    with database.sessions() as session:
        found = session.get(Interaction, interaction_id)
        assert found is not None
        session.expunge(found)
        return found


def test_a_reply_arrives_threaded_in_utf8_and_the_answer_joins_the_ticket(
    api: Api,
    sender: Sender,
    database: Database,
    redis_client: redis.Redis,
    mailbox: tuple[Mailbox, int],
) -> None:
    first = stored(sender.post(EMAIL, email_payload("<m1@mail.example.jp>")))
    second = stored(sender.post(EMAIL, email_payload("<m2@mail.example.jp>")))
    ticket_id = first["ticket_id"]
    assert second["ticket_id"] == ticket_id
    text = "山田様\n\n明日お届けします 📦\nよろしくお願いいたします。"
    reply = ok(api.post(f"/api/tickets/{ticket_id}/replies", {"body": text}), 202)
    assert (reply["delivery_status"], reply["channel"]) == ("queued", "email")
    assert reply["to"] == "taro.yamada@example.jp"
    assert ok(api.get(f"/api/tickets/{ticket_id}"))["first_responded_at"] is not None
    work(redis_client)

    box, _ = mailbox
    (message,) = box.received
    assert box.logins == [(SMTP_USER.encode(), SMTP_PASSWORD.encode())]
    assert box.envelopes == [(FROM_ADDRESS, ["taro.yamada@example.jp"])]
    assert message["Subject"] == "Re: 注文について"
    assert message["To"] == "taro.yamada@example.jp"
    assert message["From"].addresses[0].display_name == "交換サポート"
    assert message["From"].addresses[0].addr_spec == FROM_ADDRESS
    assert message["In-Reply-To"] == "<m2@mail.example.jp>"
    assert message["References"] == "<m1@mail.example.jp> <m2@mail.example.jp>"
    assert message["X-Kokan-Ticket"] == str(ticket_id)
    body = message.get_body(("plain",))
    assert body is not None
    assert body.get_content_charset() == "utf-8"
    assert body.get_content().replace("\r\n", "\n").rstrip("\n") == text  # CRLF on the wire
    sent = row(database, reply["id"])
    assert sent.delivery_status == "sent"
    assert str(message["Message-ID"]).strip() == sent.message_ref
    assert (sent.message_ref or "").startswith(f"<kokan.{reply['id']}.")
    assert (sent.message_ref or "").endswith("@kokan.example.com>")

    # running the job again sends nothing twice
    assert email_out.send_email(reply["id"]) == "sent"
    assert len(box.received) == 1

    # the customer answers our reply: it joins the ticket through In-Reply-To
    answer = stored(
        sender.post(
            EMAIL,
            email_payload(
                "<m3@mail.example.jp>",
                subject="Re: 注文について",
                in_reply_to=sent.message_ref,
                **{"from": {"address": "taro@another.example"}},
            ),
        )
    )
    assert answer["ticket_id"] != ticket_id  # another sender is another customer's thread
    own = stored(
        sender.post(
            EMAIL,
            email_payload("<m4@mail.example.jp>", subject="別件", in_reply_to=sent.message_ref),
        )
    )
    assert own["ticket_id"] == ticket_id


def test_a_busy_server_is_retried_and_a_refusal_fails_at_once(
    api: Api,
    sender: Sender,
    database: Database,
    redis_client: redis.Redis,
    mailbox: tuple[Mailbox, int],
) -> None:
    box, _ = mailbox
    ticket_id = stored(sender.post(EMAIL, email_payload()))["ticket_id"]
    box.data_script = ["451 4.3.0 try again later"]
    first = ok(api.post(f"/api/tickets/{ticket_id}/replies", {"body": "one"}), 202)
    work(redis_client)
    assert row(database, first["id"]).delivery_status == "sent"
    assert len(box.received) == 1

    box.data_script = ["452 4.3.1 busy"] * 3
    second = ok(api.post(f"/api/tickets/{ticket_id}/replies", {"body": "two"}), 202)
    work(redis_client)
    failed = row(database, second["id"])
    assert failed.delivery_status == "failed"
    assert "gave up after the last retry" in (failed.delivery_error or "")
    assert box.data_script == []  # one attempt and the two configured retries

    box.refuse_recipients = True
    third = ok(api.post(f"/api/tickets/{ticket_id}/replies", {"body": "three"}), 202)
    work(redis_client)
    refused = row(database, third["id"])
    assert refused.delivery_status == "failed"
    assert "550" in (refused.delivery_error or "")
    assert "gave up" not in (refused.delivery_error or "")


def test_a_wrong_password_or_no_server_marks_the_reply_failed(
    configured: Settings,
    api: Api,
    sender: Sender,
    database: Database,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ticket_id = stored(sender.post(EMAIL, email_payload()))["ticket_id"]
    monkeypatch.setenv("KOKAN_EMAIL__SMTP_PASSWORD", "wrong-password")
    wrong = ok(api.post(f"/api/tickets/{ticket_id}/replies", {"body": "x"}), 202)
    work(redis_client)
    assert "535" in (row(database, wrong["id"]).delivery_error or "")
    assert row(database, wrong["id"]).delivery_status == "failed"

    monkeypatch.setenv("KOKAN_EMAIL__SMTP_PORT", str(free_listen_port()))
    down = ok(api.post(f"/api/tickets/{ticket_id}/replies", {"body": "y"}), 202)
    work(redis_client)
    stored_row = row(database, down["id"])
    assert stored_row.delivery_status == "failed"
    assert "ConnectionRefusedError" in (stored_row.delivery_error or "")


def test_replies_that_cannot_be_emailed(
    api: Api, sender: Sender, database: Database, redis_client: redis.Redis
) -> None:
    ticket_id = stored(sender.post(EMAIL, email_payload()))["ticket_id"]
    path = f"/api/tickets/{ticket_id}/replies"
    assert error(api.post(path, {"body": ""}), 400) == "invalid-input"
    assert error(api.post(path, {"body": "x" * 100_001}), 400) == "invalid-input"
    assert error(api.post(path, {"body": 5}), 400) == "invalid-input"
    ok(api.patch(f"/api/tickets/{ticket_id}", {"status": "closed"}))
    assert error(api.post(path, {"body": "x"}), 409) == "ticket-closed"
    assert redis_client.llen("rq:queue:messages") == 0
    with database.sessions() as session:
        outbound = session.scalars(
            select(Interaction.id).where(Interaction.direction == "outbound")
        ).all()
    assert outbound == []
