"""The recordings API: who sees what, search by words heard, audio with HTTP Range, the log.

Real Flask app, real database and Redis; recordings are stored files under their keys as
the jobs leave them, transcripts rows as the transcription job writes them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from admin.services import create_user, issue_token
from kokan.app import create_app
from kokan.config import Settings
from kokan.db import Database
from recording.models import RecordingAccess, Transcript
from recording.storage import LocalStorage
from tests.recording_support import store_recording, tone, wav
from tickets.models import Call

AUDIO = wav(tone(1.0))
MakeClient = Callable[..., FlaskClient]


@pytest.fixture
def make_client(
    settings: Settings, database: Database, redis_client: redis.Redis
) -> Iterator[MakeClient]:
    apps: list[Flask] = []

    def make(**recording: Any) -> FlaskClient:
        configured = settings.model_copy(
            update={"recording": settings.recording.model_copy(update=recording)}
        )
        app = create_app({"TESTING": True, "KOKAN_SETTINGS": configured})
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["kokan"].database.dispose()
        app.extensions["kokan"].redis.close()


def token_for(database: Database, username: str, role: str) -> dict[str, str]:
    with database.unit_of_work() as session:
        user = create_user(session, username, role).user
        return {"Authorization": f"Bearer {issue_token(session, user)}"}


def add_call(database: Database, queue: str | None) -> int:
    with database.unit_of_work() as session:
        call = Call(
            provider="twilio",
            provider_call_id="CA" + uuid.uuid4().hex,
            from_number="+819012345678",
            to_number="+81345678901",
            queue=queue,
        )
        session.add(call)
        session.flush()
        return call.id


def add_transcript(database: Database, recording_id: int, text: str) -> None:
    words = [
        {"word": w, "start_ms": 500 * i, "end_ms": 500 * i + 400, "confidence": 1.0, "channel": 0}
        for i, w in enumerate(text.split())
    ]
    with database.unit_of_work() as session:
        session.add(Transcript(recording_id=recording_id, text=text, words=words, model="m"))


def access_log(database: Database) -> list[tuple[int, str, str, str | None]]:
    with database.unit_of_work() as session:
        return [
            (a.recording_id, a.actor, a.action, a.byte_range)
            for a in session.scalars(select(RecordingAccess).order_by(RecordingAccess.id))
        ]


@pytest.fixture
def floor(settings: Settings, database: Database) -> dict[str, int]:
    """Three calls and a voicemail: two agents, two queues, on three days."""
    sales, support = add_call(database, "sales"), add_call(database, "support")
    now = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)
    ids = {
        "aiko-sales": store_recording(
            database,
            settings,
            AUDIO,
            agent_id="aiko",
            call_id=sales,
            created_at=now - dt.timedelta(days=2),
        ),
        "ben-support": store_recording(
            database,
            settings,
            AUDIO,
            agent_id="ben",
            call_id=support,
            created_at=now - dt.timedelta(days=1),
        ),
        "aiko-support": store_recording(
            database, settings, AUDIO, agent_id="aiko", call_id=support, created_at=now
        ),
        "voicemail": store_recording(database, settings, AUDIO, kind="voicemail", created_at=now),
    }
    add_transcript(database, ids["aiko-sales"], "환불 여섯 상담원")
    add_transcript(database, ids["ben-support"], "예약 취소 100%")
    add_transcript(database, ids["aiko-support"], "아니요 상담원")
    return ids


def listed(client: FlaskClient, headers: dict[str, str], query: str = "") -> list[int]:
    answer = client.get(f"/api/recordings{query}", headers=headers)
    assert answer.status_code == 200, answer.get_json()
    return [r["id"] for r in answer.get_json()["recordings"]]


def test_supervisors_list_filter_and_search_by_words_heard(
    make_client: MakeClient, database: Database, floor: dict[str, int]
) -> None:
    client = make_client()
    boss = token_for(database, "sato", "supervisor")
    every = [floor[k] for k in ("voicemail", "aiko-support", "ben-support", "aiko-sales")]
    assert listed(client, boss) == every  # newest first
    assert listed(client, boss, "?agent=aiko") == [floor["aiko-support"], floor["aiko-sales"]]
    assert listed(client, boss, "?queue=support") == [floor["aiko-support"], floor["ben-support"]]
    assert listed(client, boss, "?kind=voicemail") == [floor["voicemail"]]
    assert listed(client, boss, "?since=2026-11-22T00:00Z&until=2026-11-23T00:00Z") == [
        floor["ben-support"]
    ]
    assert listed(client, boss, "?since=2026-11-23T20:00%2B09:00") == [
        floor["voicemail"],
        floor["aiko-support"],
    ]
    assert listed(client, boss, "?q=상담원") == [floor["aiko-support"], floor["aiko-sales"]]
    assert listed(client, boss, "?q=상담원+여섯") == [floor["aiko-sales"]]  # every word
    assert listed(client, boss, "?q=100%25") == [floor["ben-support"]]
    assert listed(client, boss, "?q=%25") == [floor["ben-support"]]  # % is a character
    assert listed(client, boss, "?q=_") == []  # and so is _
    assert listed(client, boss, "?q=상담원&agent=aiko&queue=sales") == [floor["aiko-sales"]]

    first = client.get("/api/recordings?limit=3", headers=boss).get_json()
    assert [r["id"] for r in first["recordings"]] == every[:3]
    assert first["next_before_id"] == every[2]
    rest = client.get(f"/api/recordings?limit=3&before_id={every[2]}", headers=boss).get_json()
    assert ([r["id"] for r in rest["recordings"]], rest["next_before_id"]) == ([every[3]], None)

    item = first["recordings"][1]
    assert item["agent_id"] == "aiko"
    assert item["queue"] == "support"
    assert item["has_transcript"] is True
    assert item["audio_url"] == f"/api/recordings/{floor['aiko-support']}/audio"
    assert access_log(database) == []  # listing is not playing


def test_one_recording_comes_with_its_transcript_and_word_timings(
    make_client: MakeClient, database: Database, floor: dict[str, int]
) -> None:
    client = make_client()
    admin = token_for(database, "root", "admin")
    answer = client.get(f"/api/recordings/{floor['aiko-support']}", headers=admin)
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["transcript"]["text"] == "아니요 상담원"
    assert [w["word"] for w in body["transcript"]["words"]] == ["아니요", "상담원"]
    assert body["transcript"]["words"][1]["start_ms"] == 500
    assert body["sha256"] is None or len(body["sha256"]) == 64
    voicemail = client.get(f"/api/recordings/{floor['voicemail']}", headers=admin).get_json()
    assert (voicemail["kind"], voicemail["transcript"], voicemail["queue"]) == (
        "voicemail",
        None,
        None,
    )


def test_audio_is_served_with_ranges_and_every_play_is_logged(
    make_client: MakeClient, database: Database, floor: dict[str, int]
) -> None:
    client = make_client()
    boss = token_for(database, "sato", "supervisor")
    rid = floor["aiko-support"]
    url = f"/api/recordings/{rid}/audio"

    whole = client.get(url, headers=boss)
    assert whole.status_code == 200
    assert whole.data == AUDIO
    assert whole.headers["Content-Type"] == "audio/x-wav"
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["Content-Length"] == str(len(AUDIO))
    assert whole.headers["Content-Disposition"] == f'inline; filename="recording-{rid}.wav"'
    assert "private" in whole.headers["Cache-Control"]

    part = client.get(url, headers={**boss, "Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.data == AUDIO[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(AUDIO)}"

    tail = client.get(url, headers={**boss, "Range": "bytes=-50"})
    assert (tail.status_code, tail.data) == (206, AUDIO[-50:])

    beyond = client.get(url, headers={**boss, "Range": f"bytes={len(AUDIO) + 10}-"})
    assert beyond.status_code == 416

    saved = client.get(f"{url}?download=1", headers=boss)
    assert saved.status_code == 200
    assert saved.headers["Content-Disposition"] == f'attachment; filename="recording-{rid}.wav"'

    assert access_log(database) == [
        (rid, "sato", "play", None),
        (rid, "sato", "play", "bytes=100-199"),
        (rid, "sato", "play", "bytes=-50"),
        (rid, "sato", "play", f"bytes={len(AUDIO) + 10}-"),
        (rid, "sato", "download", None),
    ]


def test_agents_hear_only_their_own_calls_and_only_when_allowed(
    make_client: MakeClient, database: Database, floor: dict[str, int]
) -> None:
    aiko = token_for(database, "aiko", "agent")
    closed = make_client(agents_hear_own=False)
    for path in (
        "/api/recordings",
        f"/api/recordings/{floor['aiko-sales']}",
        f"/api/recordings/{floor['aiko-sales']}/audio",
    ):
        answer = closed.get(path, headers=aiko)
        assert answer.status_code == 403, path
        assert answer.get_json()["error_id"] == "recording-forbidden"

    client = make_client(agents_hear_own=True)
    own = [floor["aiko-support"], floor["aiko-sales"]]
    assert listed(client, aiko) == own
    assert listed(client, aiko, "?agent=aiko&q=상담원") == own
    assert client.get("/api/recordings?agent=ben", headers=aiko).status_code == 403
    assert client.get(f"/api/recordings/{floor['aiko-sales']}/audio", headers=aiko).data == AUDIO
    for colleague in (floor["ben-support"], floor["voicemail"]):
        for path in (f"/api/recordings/{colleague}", f"/api/recordings/{colleague}/audio"):
            answer = client.get(path, headers=aiko)
            assert answer.status_code == 403, path
    assert access_log(database) == [(floor["aiko-sales"], "aiko", "play", None)]

    assert client.get("/api/recordings").status_code == 401
    bad = {"Authorization": "Bearer kok_not-a-token"}
    assert (
        client.get(f"/api/recordings/{floor['aiko-sales']}/audio", headers=bad).status_code == 401
    )
    assert access_log(database) == [(floor["aiko-sales"], "aiko", "play", None)]


@pytest.mark.parametrize(
    "path",
    [
        "/api/recordings/../../etc/passwd",
        "/api/recordings/..%2F..%2Fetc%2Fpasswd/audio",
        "/api/recordings/1.wav/audio",
        "/api/recordings/-1/audio",
        "/api/recordings/abc",
        "/api/recordings/%00/audio",
        "/api/recordings/99999999999999999999999/audio",
        "/api/recordings/2147483648",
        "/api/recordings/424242/audio",
    ],
)
def test_only_integer_ids_reach_the_storage(
    make_client: MakeClient, database: Database, floor: dict[str, int], path: str
) -> None:
    client = make_client()
    admin = token_for(database, "root", "admin")
    answer = client.get(path, headers=admin)
    assert answer.status_code == 404
    assert answer.is_json
    assert access_log(database) == []


def test_recordings_without_audio_say_why(
    make_client: MakeClient, settings: Settings, database: Database, floor: dict[str, int]
) -> None:
    client = make_client()
    admin = token_for(database, "root", "admin")
    pending = store_recording(database, settings, AUDIO, status="pending")
    LocalStorage(settings.recordings_dir).delete(f"{floor['voicemail']}.wav")
    answer = client.get(f"/api/recordings/{pending}/audio", headers=admin)
    assert (answer.status_code, answer.get_json()["error_id"]) == (409, "recording-not-playable")
    answer = client.get(f"/api/recordings/{floor['voicemail']}/audio", headers=admin)
    assert (answer.status_code, answer.get_json()["error_id"]) == (410, "recording-file-missing")
    assert access_log(database) == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?since=2026-11-23T09:00", "since: give a time zone"),
        ("?since=yesterday", "since: Input should be a valid datetime"),
        ("?agnet=aiko", "agnet: unknown filter"),
        ("?limit=0", "limit: Input should be greater than or equal to 1"),
        ("?limit=100000", "limit: Input should be less than or equal to 200"),
        ("?agent=../../x", "agent: String should match pattern"),
        ("?kind=fax", "kind: String should match pattern"),
        ("?q=" + "+".join("abcdefghij"), "q: search for at most 8 words"),
        ("?q=" + "x" * 201, "q: String should have at most 200 characters"),
        ("?before_id=1e3", "before_id: Input should be a valid integer"),
    ],
)
def test_a_bad_query_is_a_400_with_the_reason(
    make_client: MakeClient, database: Database, query: str, message: str
) -> None:
    client = make_client()
    boss = token_for(database, "sato", "supervisor")
    answer = client.get(f"/api/recordings{query}", headers=boss)
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["error_id"] == "recording-query-invalid"
    assert body["message"].startswith(message), body["message"]
