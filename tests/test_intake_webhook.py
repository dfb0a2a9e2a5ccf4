"""The signed JSON intake for e-mail and chat, end to end through the real app, database and
Redis: signature and replay window, idempotency, matching and threading, bad input."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from pydantic import SecretStr
from sqlalchemy import func, select, update
from werkzeug.test import TestResponse

from kokan.app import create_app
from kokan.config import IntakeSettings, Settings, load, secret_values
from kokan.db import Database
from tests.conftest import run_kokan
from tests.test_messaging_webhook import MIXED_SCRIPTS, REFUSED_DATABASE
from tickets import signing
from tickets.models import Customer, CustomerEmail, CustomerPhone, Interaction, Ticket

SECRET = "intake-secret-0123456789abcdef"
EMAIL = "/webhooks/intake/email"
CHAT = "/webhooks/intake/chat"


def intake_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"intake": IntakeSettings(secret=SecretStr(SECRET))})


@pytest.fixture
def intake_app(settings: Settings, database: Database, redis_client: redis.Redis) -> Flask:
    return create_app({"TESTING": True, "KOKAN_SETTINGS": intake_settings(settings)})


class Sender:
    """Posts JSON signed as the documented scheme says."""

    def __init__(self, client: FlaskClient, secret: str = SECRET) -> None:
        self.client = client
        self.secret = secret

    def post(
        self,
        path: str,
        body: Any,
        *,
        at: float | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> TestResponse:
        data = raw if raw is not None else json.dumps(body, ensure_ascii=False).encode()
        signed = signing.signed_headers(self.secret, data, at)
        signed.update(headers or {})
        return self.client.post(
            path, data=data, headers={**signed, "Content-Type": "application/json"}
        )


@pytest.fixture
def sender(intake_app: Flask) -> Sender:
    return Sender(intake_app.test_client())


def email(message_id: Any = "<m1@mail.example.jp>", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message_id": message_id,
        "from": {"address": "Taro.Yamada@Example.JP", "name": "山田 太郎"},
        "to": "support@kokan.example.com",
        "subject": "注文について",
        "text": "注文した商品がまだ届きません。",
    }
    body.update(extra)
    return body


def chat(message_id: str = "c-1", conversation: str = "conv-1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message_id": message_id,
        "conversation_id": conversation,
        "visitor": {"id": "v-42", "email": "hanako@example.jp", "name": "花子"},
        "text": "こんにちは",
    }
    body.update(extra)
    return body


def stored(response: TestResponse, status: int = 201) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    data: dict[str, Any] = response.get_json()
    return data


def refused(response: TestResponse, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    data = response.get_json()
    assert data["message"]
    return str(data["error_id"])


def count(database: Database, model: type[Any]) -> int:
    with database.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_an_email_becomes_a_ticket_on_the_customer_found_by_address_in_any_case(
    sender: Sender, database: Database
) -> None:
    first = stored(
        sender.post(
            EMAIL,
            email(
                attachments=[
                    {
                        "url": "https://files.example/a.pdf",
                        "content_type": "application/pdf",
                        "filename": "請求書.pdf",
                        "size": 1234,
                    }
                ]
            ),
        )
    )
    assert first["duplicate"] is False
    assert first["ticket_created"] is True
    again = stored(sender.post(EMAIL, email()), 200)
    assert again == {**first, "duplicate": True, "ticket_created": False}
    with database.sessions() as session:
        customer = session.get(Customer, first["customer_id"])
        assert customer is not None
        assert customer.display_name == "山田 太郎"
        assert session.scalars(select(CustomerEmail.email)).all() == ["taro.yamada@example.jp"]
        ticket = session.get(Ticket, first["ticket_id"])
        assert ticket is not None
        assert (ticket.channel, ticket.subject, ticket.status) == ("email", "注文について", "new")
        message = session.get(Interaction, first["interaction_id"])
        assert message is not None
        assert message.body == "注文した商品がまだ届きません。"
        assert message.from_address == "taro.yamada@example.jp"
        assert message.message_ref == "<m1@mail.example.jp>"
        assert message.media == [
            {
                "url": "https://files.example/a.pdf",
                "content_type": "application/pdf",
                "filename": "請求書.pdf",
                "size": 1234,
            }
        ]
    assert count(database, Interaction) == 1

    # the same person writing in another case, about another thing, joins the open ticket
    second = stored(
        sender.post(
            EMAIL,
            email("<m2@mail.example.jp>", **{"from": {"address": "TARO.YAMADA@example.jp"}}),
        )
    )
    assert (second["customer_id"], second["ticket_id"]) == (
        first["customer_id"],
        first["ticket_id"],
    )


def test_a_reply_to_a_solved_ticket_opens_a_new_one_linking_it(
    sender: Sender, database: Database
) -> None:
    first = stored(sender.post(EMAIL, email()))
    with database.unit_of_work() as session:
        session.execute(
            update(Ticket).where(Ticket.id == first["ticket_id"]).values(status="solved")
        )
    reply = stored(
        sender.post(
            EMAIL,
            email(
                "<m2@x>", in_reply_to="<m1@mail.example.jp>", references=["<m1@mail.example.jp>"]
            ),
        )
    )
    assert reply["ticket_id"] != first["ticket_id"]
    with database.sessions() as session:
        ticket = session.get(Ticket, reply["ticket_id"])
        assert ticket is not None
        assert ticket.previous_ticket_id == first["ticket_id"]
    # answering the new one joins it, even from another ticket's quote chain
    third = stored(
        sender.post(EMAIL, email("<m3@x>", references=["<m1@mail.example.jp>", "<m2@x>"]))
    )
    assert third["ticket_id"] == reply["ticket_id"]


def test_chat_messages_join_their_conversation_and_match_by_email_or_phone(
    sender: Sender, database: Database
) -> None:
    first = stored(sender.post(CHAT, chat()))
    second = stored(sender.post(CHAT, chat("c-2", text=MIXED_SCRIPTS)))
    assert second["ticket_id"] == first["ticket_id"]
    assert stored(sender.post(CHAT, chat("c-2")), 200)["duplicate"] is True
    # the same visitor, now with a phone too: one customer, who keeps the phone
    phone_visitor = {"email": "HANAKO@example.jp", "phone": "090-1234-5678"}
    third = stored(sender.post(CHAT, chat("c-3", visitor=phone_visitor)))
    assert third["customer_id"] == first["customer_id"]
    # later, by phone only (in another notation): still the same customer
    fourth = stored(sender.post(CHAT, chat("c-4", "conv-2", visitor={"phone": "+81 90 1234 5678"})))
    assert fourth["customer_id"] == first["customer_id"]
    with database.sessions() as session:
        assert session.scalars(select(CustomerPhone.e164)).all() == ["+819012345678"]
        message = session.get(Interaction, second["interaction_id"])
        assert message is not None
        assert message.body == MIXED_SCRIPTS
        assert message.channel == "chat"
    assert count(database, Customer) == 1


def test_unsigned_forged_old_and_future_requests_are_refused_and_store_nothing(
    sender: Sender, intake_app: Flask, database: Database
) -> None:
    client = intake_app.test_client()
    assert refused(client.post(EMAIL, json=email()), 403) == "signature-invalid"
    forged = Sender(client, secret="another-secret-0123456789")
    assert refused(forged.post(EMAIL, email()), 403) == "signature-invalid"
    now = time.time()
    window = signing.REPLAY_WINDOW_S
    assert refused(sender.post(EMAIL, email(), at=now - window - 5), 403) == (
        "signature-timestamp-outside-window"
    )
    assert refused(sender.post(EMAIL, email(), at=now + window + 5), 403) == (
        "signature-timestamp-outside-window"
    )
    body = json.dumps(email()).encode()
    good = signing.signed_headers(SECRET, body)
    # a valid signature moved onto another body, or onto another timestamp
    tampered = client.post(
        EMAIL, data=body.replace(b"m1", b"m9"), headers=good, content_type="application/json"
    )
    assert refused(tampered, 403) == "signature-invalid"
    moved = {**good, signing.TIMESTAMP_HEADER: str(int(now) + 1)}
    assert refused(client.post(EMAIL, data=body, headers=moved), 403) == "signature-invalid"
    bad_stamp = {**good, signing.TIMESTAMP_HEADER: "yesterday"}
    assert refused(client.post(EMAIL, data=body, headers=bad_stamp), 403) == "signature-invalid"
    assert count(database, Interaction) == 0
    # a rotation: the old and the new signature side by side
    rotating = {
        **good,
        signing.SIGNATURE_HEADER: "sha256=" + "0" * 64 + ", " + good[signing.SIGNATURE_HEADER],
    }
    stored(client.post(EMAIL, data=body, headers=rotating))


def test_no_secret_configured_refuses_everything(
    settings: Settings, database: Database, redis_client: redis.Redis
) -> None:
    app = create_app({"TESTING": True, "KOKAN_SETTINGS": settings})
    response = Sender(app.test_client(), secret="").post(EMAIL, email())
    assert refused(response, 403) == "signature-invalid"
    assert "KOKAN_INTAKE__SECRET" in response.get_json()["message"]


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        (EMAIL, {}, "message_id"),
        (EMAIL, [], "JSON object"),
        (EMAIL, "text", "JSON object"),
        (EMAIL, email(message_id=""), "message_id"),
        (EMAIL, email(message_id=7), "message_id"),
        (EMAIL, email(**{"from": {"address": "not an address"}}), "e-mail"),
        (EMAIL, email(**{"from": "taro@example.jp"}), "from"),
        (EMAIL, email(text="x" * 100_001), "text"),
        (EMAIL, email(text="nul\x00here"), "NUL"),
        (EMAIL, email(attachments=[{"url": "ftp://files/x"}]), "attachments.0.url"),
        (EMAIL, email(attachments=[{"url": "https://f/x"}] * 21), "attachments"),
        (EMAIL, email(references="<x@y>"), "references"),
        (CHAT, chat(visitor={"id": "anonymous"}), "email or a phone"),
        (CHAT, chat(visitor={"phone": "call me maybe"}), "phone"),
        (CHAT, chat(text="   "), "a text or an attachment"),
        (CHAT, chat(conversation=""), "conversation_id"),
    ],
)
def test_bad_payloads_get_a_reason_and_store_nothing(
    sender: Sender, database: Database, path: str, body: Any, reason: str
) -> None:
    response = sender.post(path, body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert reason in response.get_json()["message"]
    assert count(database, Interaction) == 0
    assert count(database, Customer) == 0


def test_a_body_that_is_not_json_is_a_400_and_an_unknown_channel_a_404(sender: Sender) -> None:
    assert refused(sender.post(EMAIL, None, raw=b"\xff\xfe{"), 400) == "invalid-input"
    assert refused(sender.post(EMAIL, None, raw=b"{"), 400) == "invalid-input"
    assert sender.post("/webhooks/intake/fax", email()).status_code == 404


def test_long_and_mixed_script_bodies_are_kept_whole(sender: Sender, database: Database) -> None:
    text = (MIXED_SCRIPTS + "\n") * 400
    result = stored(sender.post(EMAIL, email(text=text, subject="👋🏽 " + "件名" * 400)))
    with database.sessions() as session:
        message = session.get(Interaction, result["interaction_id"])
        ticket = session.get(Ticket, result["ticket_id"])
        assert message is not None
        assert ticket is not None
        assert message.body == text
        assert len(ticket.subject) <= 200


def test_the_same_new_message_delivered_twice_at_once_is_stored_once(
    intake_app: Flask, database: Database
) -> None:
    results: list[int] = []
    barrier = threading.Barrier(4)

    def deliver() -> None:
        client = intake_app.test_client()
        barrier.wait()
        results.append(Sender(client).post(EMAIL, email("<race@x>")).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results)[0] == 200
    assert results.count(201) == 1
    assert count(database, Interaction) == 1
    assert count(database, Customer) == 1
    assert count(database, Ticket) == 1


def test_a_database_that_is_down_answers_503_and_nothing_is_half_written(
    settings: Settings, redis_client: redis.Redis
) -> None:
    down = intake_settings(settings).model_copy(update={"database_url": REFUSED_DATABASE})
    app = create_app({"TESTING": True, "KOKAN_SETTINGS": down})
    response = Sender(app.test_client()).post(EMAIL, email())
    assert refused(response, 503) == "database-unavailable"
    assert response.headers["Retry-After"]


def test_the_intake_and_smtp_secrets_come_from_the_environment_and_stay_masked(
    tmp_path: Path,
) -> None:
    smtp_password = "smtp-password-from-env-42"
    shown = run_kokan(
        "config",
        "show",
        env={"KOKAN_INTAKE__SECRET": SECRET, "KOKAN_EMAIL__SMTP_PASSWORD": smtp_password},
        cwd=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr
    assert "intake.secret: '********'  # environment KOKAN_INTAKE__SECRET" in shown.stdout
    assert "email.smtp_password: '********'" in shown.stdout
    assert SECRET not in shown.stdout
    assert smtp_password not in shown.stdout
    settings = load(
        environ={"KOKAN_INTAKE__SECRET": SECRET, "KOKAN_EMAIL__SMTP_PASSWORD": smtp_password}
    ).settings
    assert {SECRET, smtp_password} <= set(secret_values(settings))
    short = run_kokan("config", "show", env={"KOKAN_INTAKE__SECRET": "short"}, cwd=tmp_path)
    assert short.returncode == 2
    assert "intake.secret: must have at least 16 characters" in short.stderr
    assert "short" not in short.stderr.replace("intake.secret: must", "")


def test_attachments_of_unknown_or_missing_types_are_kept(
    sender: Sender, database: Database
) -> None:
    files = [
        {"url": "https://files.example/blob", "content_type": ""},
        {"url": "https://files.example/x.zzz", "content_type": "x-weird/thing"},
    ]
    result = stored(sender.post(CHAT, chat(text="", attachments=files)))
    with database.sessions() as session:
        message = session.get(Interaction, result["interaction_id"])
        assert message is not None
        assert [item["content_type"] for item in message.media] == [
            "application/octet-stream",
            "x-weird/thing",
        ]
