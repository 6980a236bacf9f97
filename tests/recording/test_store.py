"""The recordings folder: strict ids and names, listing, deleting, retention, recovery after a crash."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from proxy.recording.metadata import (
    COMPLETE,
    INCOMPLETE,
    Busy,
    NotFound,
    RecordingError,
    read_metadata,
    write_metadata,
)
from proxy.recording.recorder import RecorderSettings
from proxy.recording.store import INTERRUPTED, RecordingStore
from tests.recording.feed import bar_frame, params_for

KEY = bytes(range(2, 34))


def _record(store: RecordingStore, frames: int = 5, stop: bool = True) -> str:
    recorder = store.recorder("consult-x")
    recorder.start()
    for index in range(frames):
        recorder.add_video(bar_frame(index), params_for(index))
        time.sleep(1 / 30)
    if stop:
        recorder.close()
    return recorder.id


@pytest.fixture
def store(tmp_path: Path) -> RecordingStore:
    return RecordingStore(tmp_path / "recordings", KEY, retention_days=30,
                          settings=RecorderSettings(min_free_bytes=0, flush_interval=0.1))


def test_list_metadata_and_files(store: RecordingStore) -> None:
    first = _record(store)
    time.sleep(1.1)  # ids start with the second
    second = _record(store)
    listed = store.list()
    assert [r["id"] for r in listed] == [second, first]  # newest first
    meta = store.metadata(first)
    assert meta["state"] == COMPLETE and meta["encrypted"] is True
    names = {f["name"]: f for f in meta["files"]}
    assert set(names) == {"video.webm", "params.jsonl", "recording.json"}
    assert names["video.webm"]["encrypted"] and not names["recording.json"]["encrypted"]
    with store.open(first, "recording.json") as opened:
        assert json.loads(opened.read())["id"] == first
    with store.open(first, "video.webm") as opened:
        assert opened.content_type == "video/webm" and not opened.truncated
        assert b"".join(opened.chunks(1000))[:4] == b"\x1a\x45\xdf\xa3"  # an EBML (WebM) header, in clear


@pytest.mark.parametrize("bad", ["", "..", "../recordings", "/etc/passwd", "20260101T000000Z-zzzzzzzzzzzz",
                                 "20260101T000000Z-0123456789ab/..", "20260101T000000Z-0123456789ab\x00"])
def test_ids_are_checked_before_any_path_is_built(store: RecordingStore, bad: str) -> None:
    for call in (store.metadata, store.delete, lambda i: store.open(i, "video.webm")):
        with pytest.raises(RecordingError) as caught:
            call(bad)
        assert caught.value.status == 400


def test_names_are_checked_and_unknown_things_are_404(store: RecordingStore) -> None:
    recording = _record(store)
    for bad in ("../recording.json", "video.webm.sealed", "VIDEO.WEBM", "params.jsonl/", "x"):
        with pytest.raises(RecordingError) as caught:
            store.open(recording, bad)
        assert caught.value.status == 400
    with pytest.raises(NotFound):
        store.open(recording, "audio.webm")  # a file this recording does not have
    with pytest.raises(NotFound) as caught:
        store.metadata("20200101T000000Z-0123456789ab")
    assert caught.value.status == 404


def test_delete_removes_files_and_metadata(store: RecordingStore) -> None:
    kept, doomed = _record(store), _record(store)
    store.delete(doomed)
    assert not (store.root / doomed).exists()
    assert [r["id"] for r in store.list()] == [kept]
    with pytest.raises(NotFound):
        store.metadata(doomed)
    with pytest.raises(NotFound):
        store.delete(doomed)
    assert sorted(p.name for p in store.root.iterdir()) == [kept]


def test_a_running_recording_is_not_deleted(store: RecordingStore) -> None:
    running = _record(store, stop=False)
    with pytest.raises(Busy) as caught:
        store.delete(running)
    assert caught.value.status == 409
    assert store.metadata(running)["state"] == "recording"
    assert store.expire(datetime.now(UTC) + timedelta(days=365)) == []  # nor expired
    store._active[running].close()  # noqa: SLF001 - the test's own recorder
    store.delete(running)


def test_retention_deletes_expired_recordings_only(store: RecordingStore) -> None:
    old, recent = _record(store), _record(store)
    meta = read_metadata(store.root / old)
    meta["started"] = (datetime.now(UTC) - timedelta(days=31)).isoformat()
    write_metadata(store.root / old, meta)
    damaged = store.root / "20200101T000000Z-0123456789ab"  # unreadable metadata: its age is the folder's
    damaged.mkdir()
    (damaged / "recording.json").write_text("{torn")
    os.utime(damaged, (time.time() - 40 * 86400,) * 2)
    assert sorted(store.expire()) == sorted([old, damaged.name])
    assert [r["id"] for r in store.list()] == [recent]
    assert store.expire(datetime.now(UTC) + timedelta(days=29)) == []
    assert store.expire(datetime.now(UTC) + timedelta(days=31)) == [recent]
    assert RecordingStore(store.root).expire(datetime.now(UTC) + timedelta(days=10_000)) == []  # no retention set


def test_recover_marks_what_a_crash_left_open(store: RecordingStore) -> None:
    left_open = _record(store, stop=False)
    recorder = store._active[left_open]  # noqa: SLF001 - simulate the process dying: its thread is forgotten
    later = RecordingStore(store.root, KEY)  # the proxy started again
    assert later.metadata(left_open)["state"] == INCOMPLETE  # shown as such even before recover()
    (store.root / ".deleting-20200101T000000Z-0123456789ab").mkdir()
    assert later.recover() == [left_open]
    meta = read_metadata(store.root / left_open)
    assert meta["state"] == INCOMPLETE and meta["reason"] == INTERRUPTED and meta["complete"] is False
    assert not (store.root / ".deleting-20200101T000000Z-0123456789ab").exists()
    recorder.stop()
    recorder.wait(10)


def test_without_the_key_sealed_files_are_locked(store: RecordingStore) -> None:
    recording = _record(store)
    for other in (RecordingStore(store.root), RecordingStore(store.root, bytes(32))):
        with pytest.raises(RecordingError) as caught:
            other.open(recording, "params.jsonl")
        assert caught.value.status == 409
        assert other.metadata(recording)["state"] == COMPLETE  # metadata needs no key
