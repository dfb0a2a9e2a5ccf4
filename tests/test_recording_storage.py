"""LocalStorage: keys are ids, files appear whole or not at all, litter from killed workers goes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from recording.errors import InvalidStorageKey
from recording.storage import STAGING_DIR, STALE_TEMP_AGE_S, LocalStorage, key_for


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "recordings")


def test_a_staged_file_appears_under_its_key_only_when_put(storage: LocalStorage) -> None:
    key = key_for(42, "wav")
    assert key == "42.wav"
    with storage.staging() as temp:
        temp.write_bytes(b"RIFF half")
        assert not storage.exists(key)
        assert temp.parent == storage.root / STAGING_DIR
        storage.put(key, temp)
        assert not temp.exists()
    assert storage.exists(key)
    assert storage.size(key) == len(b"RIFF half")
    with storage.open(key) as handle:
        assert handle.read() == b"RIFF half"
    assert sorted(p.name for p in storage.root.iterdir()) == [STAGING_DIR, "42.wav"]


def test_a_staged_file_not_put_is_removed(storage: LocalStorage) -> None:
    def download_that_breaks_off() -> None:
        with storage.staging() as temp:
            temp.write_bytes(b"partial")
            raise RuntimeError("download broke off")

    with pytest.raises(RuntimeError):
        download_that_breaks_off()
    assert list((storage.root / STAGING_DIR).iterdir()) == []
    assert not storage.exists(key_for(1, "wav"))


def test_put_replaces_atomically_and_delete_is_idempotent(storage: LocalStorage) -> None:
    key = key_for(7, "wav")
    for content in (b"first", b"second"):
        with storage.staging() as temp:
            temp.write_bytes(content)
            storage.put(key, temp)
    assert storage.open(key).read() == b"second"
    storage.delete(key)
    storage.delete(key)
    assert not storage.exists(key)


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "/etc/passwd",
        "1/../../x.wav",
        "..",
        ".incoming",
        "",
        "1.wav/..",
        "RE0123.wav",
        "1.wav\x00",
        "\uff11\uff12.wav",  # fullwidth digits: str.isdigit() would accept them
        "12.WAV",
        "12",
    ],
)
def test_keys_that_are_not_ids_are_refused_everywhere(storage: LocalStorage, key: str) -> None:
    with pytest.raises(InvalidStorageKey):
        storage.exists(key)
    with pytest.raises(InvalidStorageKey):
        storage.open(key)
    with pytest.raises(InvalidStorageKey):
        storage.delete(key)
    with storage.staging() as temp, pytest.raises(InvalidStorageKey):
        storage.put(key, temp)
    assert sorted(p.name for p in storage.root.iterdir()) == [STAGING_DIR]


def test_put_takes_only_its_own_staged_files(storage: LocalStorage, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.wav"
    elsewhere.write_bytes(b"x")
    with pytest.raises(InvalidStorageKey):
        storage.put(key_for(3, "wav"), elsewhere)
    assert elsewhere.exists()
    assert not storage.exists(key_for(3, "wav"))


def test_litter_from_a_killed_worker_is_swept_once_stale(storage: LocalStorage) -> None:
    with storage.staging():
        pass
    staging = storage.root / STAGING_DIR
    old = staging / "0123abcd.part"
    fresh = staging / "4567ef01.part"
    old.write_bytes(b"half a file")
    fresh.write_bytes(b"a download in progress")
    long_ago = time.time() - STALE_TEMP_AGE_S - 60
    os.utime(old, (long_ago, long_ago))
    with storage.staging():
        assert not old.exists()
        assert fresh.exists()  # another worker may be writing it right now
