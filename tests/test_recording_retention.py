"""Retention: old recordings deleted per queue, legal holds kept, each deletion logged."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.job import Job
from sqlalchemy import select

from kokan.config import Settings
from kokan.db import Database, utcnow
from kokan.work_queues import DEFAULT_QUEUE, queue
from recording.models import RecordingAccess, Transcript
from recording.retention import RETENTION_ACTOR, apply_retention
from recording.storage import LocalStorage
from tests.recording_support import (
    row,
    store_recording,
    tone,
    visible_files,
    wav,
    work,
    write_config,
)
from tickets.models import Call

AUDIO = wav(tone(0.5))
NOW = dt.datetime(2026, 11, 23, 3, 0, tzinfo=dt.UTC)
RULES = {"retention_days": 30, "retention_days_by_queue": {"sales": 7, "legal": 365}}


def add_call(database: Database, queue_name: str) -> int:
    with database.unit_of_work() as session:
        call = Call(
            provider="twilio",
            provider_call_id="CA" + uuid.uuid4().hex,
            from_number="+1",
            to_number="+2",
            queue=queue_name,
        )
        session.add(call)
        session.flush()
        return call.id


def old(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


@pytest.fixture
def recordings(settings: Settings, database: Database) -> dict[str, int]:
    calls = {name: add_call(database, name) for name in ("sales", "legal", "support")}

    def make(age_days: float, queue_name: str | None = None, **columns: Any) -> int:
        return store_recording(
            database,
            settings,
            AUDIO,
            created_at=old(age_days),
            call_id=calls[queue_name] if queue_name else None,
            **columns,
        )

    made = {
        "voicemail-40d": make(40, kind="voicemail"),
        "voicemail-20d": make(20, kind="voicemail"),
        "sales-10d": make(10, "sales"),
        "sales-5d": make(5, "sales"),
        "legal-100d": make(100, "legal"),
        "support-31d": make(31, "support"),
        "held-400d": make(400, "support", legal_hold=True),
    }
    with database.unit_of_work() as session:
        session.add(
            Transcript(recording_id=made["support-31d"], text="상담원", words=[], model="m")
        )
    return made


def log_rows(database: Database) -> list[RecordingAccess]:
    with database.unit_of_work() as session:
        return list(session.scalars(select(RecordingAccess).order_by(RecordingAccess.id)))


def test_old_recordings_are_deleted_per_queue_holds_are_kept_and_each_is_logged(
    settings: Settings, database: Database, recordings: dict[str, int]
) -> None:
    configured = settings.model_copy(
        update={"recording": settings.recording.model_copy(update=RULES)}
    )
    storage = LocalStorage(settings.recordings_dir)

    deleted = apply_retention(database, storage, configured, now=NOW)

    gone = {"voicemail-40d", "sales-10d", "support-31d"}
    assert sorted(deleted) == sorted(recordings[name] for name in gone)
    for name, recording_id in recordings.items():
        found = row(database, recording_id)
        if name in gone:
            assert (found.status, found.storage_key, found.deleted_at) == ("deleted", None, NOW)
        else:
            assert found.status == "stored", name
    assert visible_files(settings) == sorted(
        f"{rid}.wav" for name, rid in recordings.items() if name not in gone
    )
    with database.unit_of_work() as session:
        assert session.scalars(select(Transcript)).all() == []
    entries = log_rows(database)
    assert [(e.recording_id, e.actor, e.action, e.at) for e in entries] == [
        (recordings[name], RETENTION_ACTOR, "delete", NOW)
        for name in ("voicemail-40d", "sales-10d", "support-31d")
    ]
    assert entries[1].detail == (
        f"recorded {old(10).isoformat(timespec='seconds')}, kept 7 days (queue sales)"
    )
    assert entries[0].detail is not None
    assert entries[0].detail.endswith("kept 30 days")

    # a second run finds nothing more, and logs nothing more
    assert apply_retention(database, storage, configured, now=NOW) == []
    assert len(log_rows(database)) == 3


def test_no_retention_configured_keeps_everything(
    settings: Settings, database: Database, recordings: dict[str, int]
) -> None:
    storage = LocalStorage(settings.recordings_dir)
    assert apply_retention(database, storage, settings, now=NOW + dt.timedelta(days=9999)) == []
    assert len(visible_files(settings)) == len(recordings)
    assert log_rows(database) == []


def test_a_run_cut_short_before_the_file_went_is_finished_by_the_next(
    settings: Settings, database: Database, recordings: dict[str, int]
) -> None:
    configured = settings.model_copy(
        update={"recording": settings.recording.model_copy(update={"retention_days": 30})}
    )

    class BrokenDisk(LocalStorage):
        def delete(self, key: str) -> None:
            raise PermissionError(13, "Permission denied", key)

    with pytest.raises(PermissionError):
        apply_retention(database, BrokenDisk(settings.recordings_dir), configured, now=NOW)
    marked = row(database, recordings["voicemail-40d"])
    assert marked.status == "deleted"
    assert marked.storage_key is not None  # the file is still to go
    assert (settings.recordings_dir / marked.storage_key).exists()

    storage = LocalStorage(settings.recordings_dir)
    apply_retention(database, storage, configured, now=NOW)
    done = row(database, recordings["voicemail-40d"])
    assert done.storage_key is None
    assert f"{done.id}.wav" not in visible_files(settings)
    held = row(database, recordings["held-400d"])
    assert (held.status, held.legal_hold) == ("stored", True)
    assert [e.recording_id for e in log_rows(database)].count(done.id) == 1


def test_the_retention_job_runs_in_a_worker_with_the_configuration(
    tmp_path: Path,
    settings: Settings,
    database: Database,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_config(tmp_path, settings, monkeypatch, retention_days=1)
    fresh = store_recording(database, settings, AUDIO)
    stale = store_recording(database, settings, AUDIO, created_at=utcnow() - dt.timedelta(days=2))
    job = queue(redis_client, DEFAULT_QUEUE).enqueue("recording.retention.apply_retention_job")
    work(redis_client)
    assert Job.fetch(job.id, connection=redis_client).return_value() == [stale]
    assert row(database, fresh).status == "stored"
    assert row(database, stale).status == "deleted"
