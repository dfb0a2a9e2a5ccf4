"""Voicemails fetched from Twilio by real rq workers into Kokan's storage.

Twilio's cloud is the one stand-in: a local HTTP server plays api.twilio.com (Basic auth
checked exactly, a real WAV at …/Recordings/RE….wav, DELETE answered 204), reached by the
`twilio` library's own HTTP client because `twilio.api_base` points at it. The jobs run in
real rq workers (forked work horses) on the test Redis and read Kokan's configuration
themselves, from the config file this test writes, as they do under `kokan worker`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import math
import os
import re
import signal
import struct
import threading
import time
import wave
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from rq import Worker
from rq.job import Job
from sqlalchemy import select

from ivr.publishing import publish
from ivr.validator import CheckContext
from kokan.app import create_app
from kokan.config import Settings, load
from kokan.db import Database
from kokan.work_queues import ALL_QUEUES, DEFAULT_QUEUE, queue
from recording.errors import InvalidRecordingUrl, StorageFull
from recording.jobs import NOT_READY_GRACE, fetch_recording, requeue_stalled_fetches
from recording.models import Recording
from recording.services import (
    STALLED_AFTER_S,
    enqueue_voicemail,
    fetch_again,
    fetch_job_id,
    fetch_retry,
    recordings_queue,
    voicemail_recorded,
)
from recording.storage import STAGING_DIR, LocalStorage
from recording.twilio_media import CHUNK_BYTES, TwilioMediaClient
from tests.conftest import SCRUBBED_ENV_PREFIXES, run_kokan
from tests.twilio_signing import SIGNATURE_HEADER, new_sid, twilio_signature
from tickets.models import Call

ACCOUNT_SID = "AC" + "5e" * 16
AUTH_TOKEN = "0f9e8d7c6b5a49382716a5b4c3d2e1f0"
API_VERSION = "2010-04-01"
SAMPLE_RATE = 8000
"""Twilio's recordings are 8 kHz, 16-bit PCM."""
VOICEMAIL_SECONDS = 2.5
MEDIA_PATH = re.compile(
    rf"^/{API_VERSION}/Accounts/(?P<account>AC[0-9a-f]{{32}})"
    r"/Recordings/(?P<sid>RE[0-9a-f]{32})\.(?P<ext>wav|json)$"
)
STALL_LIMIT_S = 10.0
PUBLIC_URL = "https://kokan.example.com"
VOICEMAIL_FLOW = """
start: message
language: en
nodes:
  message:
    type: voicemail
    prompt:
      en: Please leave a message after the tone.
    max_length: 60
    next: thanks
  thanks:
    type: hangup
    prompt:
      en: Thank you.
"""


def make_wav(seconds: float = VOICEMAIL_SECONDS, channels: int = 1) -> bytes:
    """A real WAV: a 440 Hz tone, as the stdlib `wave` module writes it."""
    frames = int(seconds * SAMPLE_RATE)
    samples = [int(8000 * math.sin(2 * math.pi * 440 * n / SAMPLE_RATE)) for n in range(frames)]
    pcm = struct.pack(f"<{frames * channels}h", *[s for s in samples for _ in range(channels)])
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(channels)
        audio.setsampwidth(2)
        audio.setframerate(SAMPLE_RATE)
        audio.writeframes(pcm)
    return buffer.getvalue()


VOICEMAIL = make_wav()
WAV_HEADER_BYTES = len(VOICEMAIL) - int(VOICEMAIL_SECONDS * SAMPLE_RATE) * 2


# ---- api.twilio.com, played locally ----


@dataclass
class Seen:
    method: str
    path: str
    authorized: bool


@dataclass
class FakeTwilio:
    """Recordings by SID; per SID, what successive GETs do ("ok" once the script runs out)."""

    account_sid: str
    auth_token: str
    base_url: str = ""
    recordings: dict[str, bytes] = field(default_factory=dict)
    scripts: dict[str, list[str]] = field(default_factory=dict)
    delete_scripts: dict[str, list[str]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, content: bytes = VOICEMAIL, *script: str) -> str:
        sid = new_sid("RE")
        self.recordings[sid] = content
        self.scripts[sid] = list(script)
        return sid

    def url(self, sid: str, host: str = "https://api.twilio.com") -> str:
        """The RecordingUrl Twilio puts in a webhook: the real host, never this server."""
        return f"{host}/{API_VERSION}/Accounts/{self.account_sid}/Recordings/{sid}"

    def gets(self, sid: str) -> int:
        return sum(1 for s in self.seen if s.method == "GET" and sid in s.path)

    def deletes(self, sid: str) -> int:
        return sum(1 for s in self.seen if s.method == "DELETE" and sid in s.path)

    def next_step(self, table: dict[str, list[str]], sid: str) -> str:
        with self.lock:
            script = table.get(sid) or []
            return script.pop(0) if script else "ok"

    @property
    def expected_auth(self) -> str:
        pair = f"{self.account_sid}:{self.auth_token}".encode()
        return "Basic " + base64.b64encode(pair).decode()


class TwilioHandler(BaseHTTPRequestHandler):
    server: TwilioServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        fake = self.server.fake
        ok = self.headers.get("Authorization") == fake.expected_auth
        fake.seen.append(Seen(self.command, self.path, ok))
        if not ok:
            self._json(401, {"code": 20003, "message": "Authenticate", "status": 401})
        return ok

    def _recording(self, ext: str) -> str | None:
        match = MEDIA_PATH.fullmatch(self.path)
        fake = self.server.fake
        if (
            match is None
            or match["ext"] != ext
            or match["account"] != fake.account_sid
            or match["sid"] not in fake.recordings
        ):
            self._json(404, {"code": 20404, "message": "not found", "status": 404})
            return None
        return match["sid"]

    def do_GET(self) -> None:
        if not self._authorized():
            return
        sid = self._recording("wav")
        if sid is None:
            return
        fake = self.server.fake
        body = fake.recordings[sid]
        step = fake.next_step(fake.scripts, sid)
        if step.isdigit():
            self._json(int(step), {"code": 20500, "message": "error", "status": int(step)})
            return
        self.send_response(200)
        self.send_header("Content-Type", "audio/x-wav")
        if step != "no-length":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if step in ("ok", "no-length"):
            self.wfile.write(body)
            return
        # "cut": the connection drops mid-body; "stall": half a body, then wait to be killed
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        if step == "stall":
            fake.stalled.set()
            fake.release.wait(STALL_LIMIT_S)
        self.close_connection = True

    def do_DELETE(self) -> None:
        if not self._authorized():
            return
        sid = self._recording("json")
        if sid is None:
            return
        fake = self.server.fake
        step = fake.next_step(fake.delete_scripts, sid)
        if step.isdigit():
            self._json(int(step), {"code": 20500, "message": "error", "status": int(step)})
            return
        del fake.recordings[sid]
        self.send_response(204)
        self.end_headers()


class TwilioServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeTwilio) -> None:
        super().__init__(("127.0.0.1", 0), TwilioHandler)
        self.fake = fake


@pytest.fixture
def twilio_api() -> Iterator[FakeTwilio]:
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    server = TwilioServer(fake)
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()


# ---- Kokan's configuration, as `kokan worker` reads it ----

Configure = Callable[..., Settings]


@pytest.fixture
def configure(
    tmp_path: Path,
    settings: Settings,
    twilio_api: FakeTwilio,
    database: Database,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> Configure:
    """Write config.yaml for the jobs (the auth token in the environment, as in production)."""
    for name in list(os.environ):
        if name.startswith(SCRUBBED_ENV_PREFIXES):
            monkeypatch.delenv(name)

    def write(*, auth_token: str = AUTH_TOKEN, **recording: Any) -> Settings:
        recording.setdefault("fetch_retry_intervals_s", [0, 0, 0])
        recording.setdefault("post_process", False)  # conversion: test_recording_processing
        document = {
            "data_dir": str(settings.data_dir),
            "database_url": settings.database_url,
            "redis_url": settings.redis_url,
            "public_url": PUBLIC_URL,
            "twilio": {"account_sid": ACCOUNT_SID, "api_base": twilio_api.base_url},
            "recording": recording,
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        monkeypatch.setenv("KOKAN_CONFIG", str(path))
        monkeypatch.setenv("TWILIO_AUTH_TOKEN", auth_token)
        return load().settings

    return write


def work(connection: redis.Redis, *, with_scheduler: bool = False) -> Worker:
    """A real rq worker in burst mode over Kokan's queues; each job runs in a forked horse."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    worker = Worker(list(ALL_QUEUES), connection=connection)
    try:
        worker.work(burst=True, with_scheduler=with_scheduler, logging_level="WARNING")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return worker


def rows(database: Database) -> list[Recording]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(Recording).order_by(Recording.id)))


def one_row(database: Database) -> Recording:
    [row] = rows(database)
    return row


def stored_bytes(settings: Settings, row: Recording) -> bytes:
    assert row.storage_key is not None
    with LocalStorage(settings.recordings_dir).open(row.storage_key) as handle:
        return handle.read()


def visible_files(settings: Settings) -> list[str]:
    """What a reader of the recordings folder can see (the staging folder is never served)."""
    folder = settings.recordings_dir
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != STAGING_DIR)


def add_call(database: Database, call_sid: str) -> int:
    with database.unit_of_work() as session:
        call = Call(provider="twilio", provider_call_id=call_sid, from_number="+1", to_number="+2")
        session.add(call)
        session.flush()
        return call.id


# ---- the tests ----


def test_a_voicemail_is_fetched_checked_and_stored(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    settings = configure()
    call_sid = new_sid("CA")
    call_row = add_call(database, call_sid)
    sid = twilio_api.add()

    enqueue_voicemail(
        redis_client, provider_call_id=call_sid, recording_url=twilio_api.url(sid), duration_s=3
    )
    assert rows(database) == []  # the webhook's side wrote no SQL
    work(redis_client)

    row = one_row(database)
    assert row.status == "stored", row.failure_reason
    assert row.failure_reason is None
    assert (row.provider, row.provider_recording_id, row.kind) == ("twilio", sid, "voicemail")
    assert (row.provider_call_id, row.call_id, row.provider_account_id) == (
        call_sid,
        call_row,
        ACCOUNT_SID,
    )
    assert row.storage_key == f"{row.id}.wav"
    assert stored_bytes(settings, row) == VOICEMAIL
    assert row.sha256 == hashlib.sha256(VOICEMAIL).hexdigest()
    assert row.size_bytes == len(VOICEMAIL)
    assert row.duration_ms == int(VOICEMAIL_SECONDS * 1000)  # measured, not Twilio's 3 s
    assert row.content_type == "audio/x-wav"
    assert row.stored_at is not None
    assert row.stored_at >= row.created_at
    assert row.provider_deleted_at is None
    assert visible_files(settings) == [f"{row.id}.wav"]
    assert (settings.recordings_dir / f"{row.id}.wav").parent == settings.data_dir.resolve() / (
        "recordings"
    )
    assert [(s.method, s.authorized) for s in twilio_api.seen] == [("GET", True)]
    assert sid in twilio_api.recordings  # not deleted: recording.delete_from_twilio is off


def test_a_duplicate_callback_makes_one_row_and_one_download(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    configure()
    call_sid = new_sid("CA")
    sid = twilio_api.add()
    for recording_sid in (None, sid):  # Twilio sends RecordingSid with the status callback
        enqueue_voicemail(
            redis_client,
            provider_call_id=call_sid,
            recording_url=twilio_api.url(sid),
            recording_sid=recording_sid,
        )
    work(redis_client)
    row = one_row(database)
    assert row.status == "stored"
    assert row.call_id is None  # no call-detail row yet: linked when it appears
    assert twilio_api.gets(sid) == 1

    # delivered again after the file is stored: still one row, nothing fetched
    call_row = add_call(database, call_sid)
    received = voicemail_recorded(
        database,
        recordings_queue(redis_client),
        provider_call_id=call_sid,
        recording_url=twilio_api.url(sid),
    )
    assert (received.recording_id, received.created, received.enqueued) == (row.id, False, False)
    work(redis_client)
    assert [r.id for r in rows(database)] == [row.id]
    assert twilio_api.gets(sid) == 1

    # the fetch job run again (a retry after its result was lost) is a no-op that links the call
    recordings_queue(redis_client).enqueue("recording.jobs.fetch_twilio_recording", row.id)
    work(redis_client)
    assert twilio_api.gets(sid) == 1
    assert one_row(database).call_id == call_row


def test_a_pending_recording_whose_job_was_lost_is_enqueued_by_the_next_delivery(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    configure()
    sid = twilio_api.add()
    first = voicemail_recorded(
        database,
        recordings_queue(redis_client),
        provider_call_id=new_sid("CA"),
        recording_url=twilio_api.url(sid),
    )
    assert (first.created, first.enqueued) == (True, True)
    Job.fetch(fetch_job_id(first.recording_id), connection=redis_client).delete()  # lost

    again = voicemail_recorded(
        database,
        recordings_queue(redis_client),
        provider_call_id=new_sid("CA"),
        recording_url=twilio_api.url(sid),
    )
    assert (again.created, again.enqueued) == (False, True)
    work(redis_client)
    assert one_row(database).status == "stored"
    assert twilio_api.gets(sid) == 1


def test_a_recording_twilio_is_still_processing_is_fetched_on_the_retry(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    """Twilio's recordings "may not be ready right away" after the call: a 404 just after the
    callback means "not yet"."""
    settings = configure()
    sid = twilio_api.add(VOICEMAIL, "404")
    enqueue_voicemail(
        redis_client, provider_call_id=new_sid("CA"), recording_url=twilio_api.url(sid)
    )
    work(redis_client)
    row = one_row(database)
    assert row.status == "stored"
    assert stored_bytes(settings, row) == VOICEMAIL
    assert twilio_api.gets(sid) == 2


def test_a_recording_twilio_no_longer_has_is_failed_with_the_reason_and_not_retried(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    configure()
    sid = new_sid("RE")  # deleted at Twilio (or never made) well before the fetch
    received = voicemail_recorded(
        database,
        recordings_queue(redis_client),
        provider_call_id=new_sid("CA"),
        recording_url=twilio_api.url(sid),
        retry=fetch_retry([0, 0, 0]),
    )
    with database.unit_of_work() as session:
        row = session.get_one(Recording, received.recording_id)
        row.created_at -= NOT_READY_GRACE + dt.timedelta(minutes=1)
    work(redis_client)
    row = one_row(database)
    assert row.status == "failed"
    assert row.failure_reason == (
        "Twilio has no such recording (HTTP 404): it was deleted or never finished"
    )
    assert row.storage_key is None
    assert twilio_api.gets(sid) == 1  # three retries were allowed; none was used
    job = Job.fetch(fetch_job_id(row.id), connection=redis_client)
    assert job.get_status() == "finished"
    assert job.return_value() == "failed"


def test_a_recording_that_never_appears_is_failed_after_the_last_retry(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    configure(fetch_retry_intervals_s=[0, 0])
    sid = new_sid("RE")
    enqueue_voicemail(
        redis_client, provider_call_id=new_sid("CA"), recording_url=twilio_api.url(sid)
    )
    work(redis_client)
    row = one_row(database)
    assert (row.status, row.failure_reason) == (
        "failed",
        "gave up after the last retry: "
        "Twilio has not finished processing the recording yet (HTTP 404)",
    )
    assert twilio_api.gets(sid) == 3


def test_refused_credentials_fail_with_a_clear_reason(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    refused = configure(auth_token="f" * 32)
    sid = twilio_api.add()
    enqueue_voicemail(
        redis_client, provider_call_id=new_sid("CA"), recording_url=twilio_api.url(sid)
    )
    work(redis_client)
    row = one_row(database)
    assert row.status == "failed"
    assert row.failure_reason == (
        "Twilio refused the credentials (HTTP 401): check twilio.account_sid and "
        "twilio.auth_token, and that the recording belongs to that account"
    )
    assert [(s.method, s.authorized) for s in twilio_api.seen] == [("GET", False)]
    assert "f" * 32 not in row.failure_reason
    assert visible_files(refused) == []

    # fixed credentials, then "try again": the same row is stored
    settings = configure()
    assert fetch_again(database, recordings_queue(redis_client), row.id, fetch_retry([0]))
    work(redis_client)
    row = one_row(database)
    assert row.status == "stored"
    assert stored_bytes(settings, row) == VOICEMAIL


def test_a_server_error_is_retried_until_the_download_succeeds(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    settings = configure()
    sid = twilio_api.add(VOICEMAIL, "500", "503")
    enqueue_voicemail(
        redis_client, provider_call_id=new_sid("CA"), recording_url=twilio_api.url(sid)
    )
    work(redis_client)
    row = one_row(database)
    assert row.status == "stored"
    assert stored_bytes(settings, row) == VOICEMAIL
    assert twilio_api.gets(sid) == 3


def test_retries_wait_their_interval_in_the_rq_scheduler(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    configure(fetch_retry_intervals_s=[1, 1])
    sid = twilio_api.add(VOICEMAIL, "503")
    enqueue_voicemail(
        redis_client, provider_call_id=new_sid("CA"), recording_url=twilio_api.url(sid)
    )
    work(redis_client, with_scheduler=True)
    row = one_row(database)
    assert row.status == "pending"
    assert Job.fetch(fetch_job_id(row.id), connection=redis_client).get_status() == "scheduled"

    deadline = time.monotonic() + 10
    while one_row(database).status == "pending" and time.monotonic() < deadline:
        time.sleep(0.3)
        work(redis_client, with_scheduler=True)
    assert one_row(database).status == "stored"
    assert twilio_api.gets(sid) == 2


def test_the_last_retry_marks_the_recording_failed(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    configure(fetch_retry_intervals_s=[0])
    sid = twilio_api.add(VOICEMAIL, "503", "503")
    enqueue_voicemail(
        redis_client, provider_call_id=new_sid("CA"), recording_url=twilio_api.url(sid)
    )
    work(redis_client)
    row = one_row(database)
    assert row.status == "failed"
    assert row.failure_reason == ("gave up after the last retry: Twilio answered HTTP 503")
    assert twilio_api.gets(sid) == 2
    assert Job.fetch(fetch_job_id(row.id), connection=redis_client).get_status() == "failed"
    assert sid in twilio_api.recordings  # Twilio keeps the original for a later fetch_again


def test_a_connection_cut_mid_body_leaves_no_file_and_the_retry_finishes(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    settings = configure(fetch_retry_intervals_s=[1])
    sid = twilio_api.add(VOICEMAIL, "cut")
    enqueue_voicemail(
        redis_client, provider_call_id=new_sid("CA"), recording_url=twilio_api.url(sid)
    )
    work(redis_client, with_scheduler=True)
    row = one_row(database)
    assert row.status == "pending"
    assert visible_files(settings) == []
    assert list((settings.recordings_dir / STAGING_DIR).iterdir()) == []  # temp file removed

    deadline = time.monotonic() + 10  # the retry is scheduled 1 s out
    while one_row(database).status == "pending" and time.monotonic() < deadline:
        time.sleep(0.1)
        work(redis_client, with_scheduler=True)
    row = one_row(database)
    assert row.status == "stored"
    assert stored_bytes(settings, row) == VOICEMAIL
    assert twilio_api.gets(sid) == 2


def test_a_worker_killed_mid_download_shows_no_half_file_and_the_retry_finishes(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    settings = configure()
    long_message = make_wav(10)  # half of it is more than one chunk of the download
    sid = twilio_api.add(long_message, "stall")
    received = voicemail_recorded(
        database,
        recordings_queue(redis_client),
        provider_call_id=new_sid("CA"),
        recording_url=twilio_api.url(sid),
        retry=fetch_retry([0, 0]),
    )
    key = f"{received.recording_id}.wav"
    worker = Worker(list(ALL_QUEUES), connection=redis_client)
    seen_during: dict[str, Any] = {}

    def kill_the_horse_mid_download() -> None:
        assert twilio_api.stalled.wait(STALL_LIMIT_S)
        deadline = time.monotonic() + STALL_LIMIT_S
        while time.monotonic() < deadline:  # until the horse has written what it received
            staged = list((settings.recordings_dir / STAGING_DIR).glob("*.part"))
            if staged and staged[0].stat().st_size >= CHUNK_BYTES:
                break
            time.sleep(0.01)
        seen_during["visible"] = visible_files(settings)
        seen_during["staged_sizes"] = [p.stat().st_size for p in staged]
        os.kill(worker.horse_pid, signal.SIGKILL)
        twilio_api.release.set()

    killer = threading.Thread(target=kill_the_horse_mid_download)
    killer.start()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.work(burst=True, logging_level="WARNING")
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    killer.join()

    assert seen_during["visible"] == []  # half a file existed, but not under any key
    [staged_size] = seen_during["staged_sizes"]
    assert CHUNK_BYTES <= staged_size <= len(long_message) // 2
    row = one_row(database)
    assert row.status == "stored"
    assert stored_bytes(settings, row) == long_message
    assert row.sha256 == hashlib.sha256(long_message).hexdigest()
    assert row.duration_ms == 10_000
    assert twilio_api.gets(sid) == 2
    assert visible_files(settings) == [key]
    # the killed horse's temporary file stays in staging until it is a day old
    assert len(list((settings.recordings_dir / STAGING_DIR).glob("*.part"))) == 1


def test_twilios_copy_is_deleted_only_when_configured(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    configure(delete_from_twilio=False)
    kept = twilio_api.add()
    enqueue_voicemail(
        redis_client, provider_call_id=new_sid("CA"), recording_url=twilio_api.url(kept)
    )
    work(redis_client)
    assert twilio_api.deletes(kept) == 0
    assert kept in twilio_api.recordings

    settings = configure(delete_from_twilio=True)
    deleted = twilio_api.add()
    twilio_api.delete_scripts[deleted] = ["500"]  # the first DELETE fails: retried, file kept
    enqueue_voicemail(
        redis_client, provider_call_id=new_sid("CA"), recording_url=twilio_api.url(deleted)
    )
    work(redis_client)
    by_sid = {row.provider_recording_id: row for row in rows(database)}
    assert by_sid[deleted].status == "stored"
    assert by_sid[deleted].provider_deleted_at is not None
    assert stored_bytes(settings, by_sid[deleted]) == VOICEMAIL
    assert deleted not in twilio_api.recordings
    assert [(s.method, s.authorized) for s in twilio_api.seen if deleted in s.path] == [
        ("GET", True),
        ("DELETE", True),
        ("DELETE", True),
    ]
    assert twilio_api.gets(deleted) == 1  # the retry only deleted; it did not fetch again
    assert by_sid[kept].provider_deleted_at is None


@pytest.mark.parametrize(
    ("content", "script", "reason"),
    [
        pytest.param(b"", (), "the recording file is empty (0 bytes)", id="empty"),
        pytest.param(
            b"<html>maintenance</html>",
            (),
            "the recording is not a readable WAV file (file does not start with RIFF id)",
            id="not-wav",
        ),
        pytest.param(
            VOICEMAIL[: len(VOICEMAIL) // 2],
            (),
            f"the WAV file is cut short: {(len(VOICEMAIL) // 2 - WAV_HEADER_BYTES) // 2} of "
            f"{int(VOICEMAIL_SECONDS * SAMPLE_RATE)} frames are present",
            id="truncated",
        ),
        pytest.param(make_wav(0), (), "the recording holds no audio (0 frames)", id="no-audio"),
        pytest.param(
            VOICEMAIL,
            (),
            f"the recording is {len(VOICEMAIL)} bytes, over the limit of 1000 (recording.max_bytes)",
            id="too-large",
        ),
        pytest.param(
            VOICEMAIL,
            ("no-length",),
            "the recording is over the limit of 1000 bytes (recording.max_bytes)",
            id="too-large-without-length",
        ),
    ],
)
def test_unusable_files_are_failed_with_the_reason_and_never_stored(
    configure: Configure,
    twilio_api: FakeTwilio,
    database: Database,
    redis_client: redis.Redis,
    content: bytes,
    script: tuple[str, ...],
    reason: str,
) -> None:
    settings = configure(max_bytes=1000) if "limit" in reason else configure()
    sid = twilio_api.add(content, *script)
    enqueue_voicemail(
        redis_client, provider_call_id=new_sid("CA"), recording_url=twilio_api.url(sid)
    )
    work(redis_client)
    row = one_row(database)
    assert (row.status, row.failure_reason) == ("failed", reason)
    assert twilio_api.gets(sid) == 1
    assert visible_files(settings) == []
    assert list((settings.recordings_dir / STAGING_DIR).iterdir()) == []


def test_where_files_go_and_what_is_fetched_never_comes_from_input(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    settings = configure()
    sid = twilio_api.add()
    for bad in (
        f"https://api.twilio.com/{API_VERSION}/Accounts/{ACCOUNT_SID}/Recordings/{sid}/../../x",
        f"https://api.twilio.com/{API_VERSION}/Accounts/{ACCOUNT_SID}/Recordings/../../../etc",
        f"file:///{API_VERSION}/Accounts/{ACCOUNT_SID}/Recordings/{sid}",
        "https://api.twilio.com/etc/passwd",
        f"https://api.twilio.com/{API_VERSION}/Accounts/{ACCOUNT_SID}/Recordings/{sid}%2F..",
    ):
        with pytest.raises(InvalidRecordingUrl):
            enqueue_voicemail(redis_client, provider_call_id=new_sid("CA"), recording_url=bad)
    with pytest.raises(InvalidRecordingUrl, match="RecordingSid does not match"):
        enqueue_voicemail(
            redis_client,
            provider_call_id=new_sid("CA"),
            recording_url=twilio_api.url(sid),
            recording_sid=new_sid("RE"),
        )
    assert recordings_queue(redis_client).count == 0

    # a URL naming another host: only the ids are kept, the configured API is asked
    enqueue_voicemail(
        redis_client,
        provider_call_id="../../etc/passwd",
        recording_url=twilio_api.url(sid, host="https://collector.attacker.example"),
    )
    work(redis_client)
    row = one_row(database)
    assert row.status == "stored"
    assert row.storage_key == f"{row.id}.wav"
    assert visible_files(settings) == [f"{row.id}.wav"]
    assert [(s.method, s.authorized) for s in twilio_api.seen] == [("GET", True)]


def test_a_full_disk_is_a_clear_retryable_error_and_twilio_keeps_the_original(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    """/dev/full answers every write with ENOSPC, as a full file system does."""
    settings = configure(delete_from_twilio=True)
    sid = twilio_api.add()
    received = voicemail_recorded(
        database,
        recordings_queue(redis_client),
        provider_call_id=new_sid("CA"),
        recording_url=twilio_api.url(sid),
    )

    class FullDisk(LocalStorage):
        def staging(self) -> Any:
            from contextlib import nullcontext

            return nullcontext(Path("/dev/full"))

    def attempt(last: bool) -> None:
        fetch_recording(
            received.recording_id,
            settings=settings,
            database=database,
            storage=FullDisk(settings.recordings_dir),
            http=TwilioMediaClient(),
            last_attempt=last,
        )

    with pytest.raises(StorageFull, match=r"the recordings folder is full \(Twilio keeps"):
        attempt(last=False)
    assert one_row(database).status == "pending"
    with pytest.raises(StorageFull):
        attempt(last=True)
    row = one_row(database)
    assert row.status == "failed"
    assert row.failure_reason == (
        "gave up after the last retry: the recordings folder is full (Twilio keeps the original)"
    )
    assert twilio_api.deletes(sid) == 0
    assert sid in twilio_api.recordings


def test_a_voicemail_left_in_a_flow_reaches_storage_through_the_webhook_and_worker(
    configure: Configure,
    twilio_api: FakeTwilio,
    database: Database,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    settings = configure()
    with database.unit_of_work() as session:
        publish(session, "main", VOICEMAIL_FLOW, "flows/main.yaml", CheckContext(tmp_path), "test")
    app = create_app({"TESTING": True, "KOKAN_SETTINGS": settings})
    client = app.test_client()

    def post(path: str, params: dict[str, str]) -> ET.Element:
        signature = twilio_signature(AUTH_TOKEN, PUBLIC_URL + path, params)
        answer = client.post(path, data=params, headers={SIGNATURE_HEADER: signature})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        return ET.fromstring(answer.get_data())  # noqa: S314 - our own app's TwiML

    call_sid, sid = new_sid("CA"), twilio_api.add()
    call = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": call_sid,
        "From": "+819012345678",
        "To": "+81345678901",
    }
    try:
        record = post("/webhooks/twilio/voice", {**call, "CallStatus": "ringing"}).find("Record")
        assert record is not None
        action = record.get("action", "").removeprefix(PUBLIC_URL)
        recorded = {
            **call,
            "CallStatus": "in-progress",
            "RecordingSid": sid,
            "RecordingDuration": "3",
            "RecordingUrl": twilio_api.url(sid),
        }
        thanks = post(action, recorded)
        assert [verb.tag for verb in thanks] == ["Say", "Hangup"]
        assert post(action, recorded).tag == "Response"  # Twilio retried the webhook
    finally:
        app.extensions["kokan"].database.dispose()
        app.extensions["kokan"].redis.close()

    assert rows(database) == []  # the webhook only enqueued
    work(redis_client)
    row = one_row(database)
    assert (row.status, row.provider_recording_id, row.provider_call_id) == (
        "stored",
        sid,
        call_sid,
    )
    assert stored_bytes(settings, row) == VOICEMAIL
    assert twilio_api.gets(sid) == 1


def test_the_kokan_worker_command_fetches_with_its_own_configuration(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    settings = configure()
    sid = twilio_api.add()
    enqueue_voicemail(
        redis_client, provider_call_id=new_sid("CA"), recording_url=twilio_api.url(sid)
    )
    done = run_kokan(
        "worker",
        "--burst",
        env={"KOKAN_CONFIG": os.environ["KOKAN_CONFIG"], "TWILIO_AUTH_TOKEN": AUTH_TOKEN},
    )
    assert done.returncode == 0, done.stderr
    assert AUTH_TOKEN not in done.stdout + done.stderr
    row = one_row(database)
    assert row.status == "stored"
    assert stored_bytes(settings, row) == VOICEMAIL


def test_a_pending_recording_that_lost_its_job_is_found_by_the_periodic_sweep(
    configure: Configure, twilio_api: FakeTwilio, database: Database, redis_client: redis.Redis
) -> None:
    """Redis lost the fetch job (or was down when it was enqueued): the row is all that is left."""
    settings = configure()
    sid, fresh_sid = twilio_api.add(), twilio_api.add()
    ids = []
    for recording_sid in (sid, fresh_sid):
        received = voicemail_recorded(
            database,
            recordings_queue(redis_client),
            provider_call_id=new_sid("CA"),
            recording_url=twilio_api.url(recording_sid),
        )
        ids.append(received.recording_id)
    redis_client.flushdb()
    with database.unit_of_work() as session:
        row = session.get_one(Recording, ids[0])
        row.created_at -= dt.timedelta(seconds=STALLED_AFTER_S + 60)

    queue(redis_client, DEFAULT_QUEUE).enqueue(requeue_stalled_fetches)
    work(redis_client)
    by_id = {row.id: row for row in rows(database)}
    assert by_id[ids[0]].status == "stored"
    assert stored_bytes(settings, by_id[ids[0]]) == VOICEMAIL
    assert by_id[ids[1]].status == "pending"  # too young to call lost: its job may be on its way
    assert twilio_api.gets(fresh_sid) == 0
