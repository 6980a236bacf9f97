"""The recordings folder: making recorders, listing, reading (decrypting on the fly), deleting and expiring.

:class:`RecordingStore` is what ``maskproxy serve`` holds for the whole run and
what its HTTP API calls (each call does file I/O: run it off the event loop,
``await loop.run_in_executor(None, ...)``):

* ``GET /api/recordings`` -> :meth:`RecordingStore.list`;
* ``GET /api/recordings/{id}`` -> :meth:`RecordingStore.metadata`;
* ``GET /api/recordings/{id}/files/{name}`` -> :meth:`RecordingStore.open`, then
  ``read`` chunks into the response (plaintext; ``size`` for Content-Length);
* ``DELETE /api/recordings/{id}`` -> :meth:`RecordingStore.delete`;
* every hour or so -> :meth:`RecordingStore.expire` (``retention_days``);
* at start -> :meth:`RecordingStore.recover` (recordings a crash left open are
  marked incomplete).

Ids and names are checked against fixed patterns before any path is built;
errors are :class:`~proxy.recording.metadata.RecordingError` with the HTTP
status they deserve (400, 404, 409). One proxy process owns a folder.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from proxy.recording.metadata import (
    COMPLETE,
    FILES,
    INCOMPLETE,
    METADATA,
    RECORDING,
    SEALED_SUFFIX,
    Busy,
    NotFound,
    RecordingError,
    check_id,
    check_name,
    new_id,
    parse_time,
    read_metadata,
    write_metadata,
)
from proxy.recording.recorder import Opener, Recorder, RecorderSettings, open_new
from proxy.recording.sealed import SealedFileError, SealedReader, is_sealed

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted: the proxy stopped while recording"
_DELETING = ".deleting-"


class Locked(RecordingError):
    """An encrypted recording and no key, or another key."""

    status = 409


class OpenedFile:
    """One recording file opened for reading: plaintext ``read``/``seek``, its ``size`` and MIME type.

    ``truncated`` says the file ends early (its recording was cut off by a fault or a crash): everything in it
    up to there is intact.
    """

    def __init__(self, name: str, raw: BinaryIO, size: int, truncated: bool) -> None:
        self.name = name
        self.content_type = FILES[name][1]
        self.size = size
        self.truncated = truncated
        self._file = io.BufferedReader(raw, buffer_size=64 * 1024) if isinstance(raw, io.RawIOBase) else raw

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def chunks(self, size: int = 64 * 1024) -> Iterator[bytes]:
        """The plaintext in pieces of at most ``size`` bytes, from the current position."""
        while data := self._file.read(size):
            yield data

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> OpenedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def on_disk(folder: Path, name: str) -> Path | None:
    """Where a recording's file is (sealed or plain), or None."""
    for candidate in (folder / (name + SEALED_SUFFIX), folder / name):
        if candidate.is_file():
            return candidate
    return None


def open_file(folder: Path, name: str, key: bytes | None, complete: bool) -> OpenedFile:
    """A recording folder's file for reading, decrypted on the fly when sealed.

    ``complete`` (from recording.json) says whether a plain file is whole; a sealed file knows for itself.
    """
    check_name(name)
    path = on_disk(folder, name)
    if path is None:
        raise NotFound(f"this recording has no {name}")
    if name == METADATA or not is_sealed(path):
        raw = open(path, "rb")  # noqa: SIM115 - the OpenedFile closes it
        return OpenedFile(name, raw, path.stat().st_size, truncated=not complete)
    if key is None:
        raise Locked("this recording is encrypted and no recordings key is set")
    raw = open(path, "rb")  # noqa: SIM115 - the reader or the error path closes it
    try:
        reader = SealedReader(raw, key)
    except SealedFileError as exc:
        raw.close()
        raise Locked(str(exc)) from None
    return OpenedFile(name, reader, reader.size, reader.truncated)


class RecordingStore:
    """All recordings under ``root``; ``key`` (32 bytes) encrypts new ones and reads sealed ones."""

    def __init__(self, root: Path, key: bytes | None = None, retention_days: float | None = None,
                 settings: RecorderSettings | None = None, opener: Opener = open_new) -> None:
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if retention_days is not None and retention_days <= 0:
            raise ValueError("retention_days must be positive (or unset to keep recordings)")
        self.key = key
        self.retention_days = retention_days
        self.settings = settings or RecorderSettings()
        self._opener = opener
        self._lock = threading.Lock()
        self._active: dict[str, Recorder] = {}

    # ---- recording ------------------------------------------------------------------------------

    def recorder(self, consult: str, consult_settings: dict[str, Any] | None = None, audio: bool = False,
                 on_stopped: Callable[[dict[str, Any]], None] | None = None) -> Recorder:
        """A new recorder for ``consult`` (not started: call :meth:`Recorder.start`)."""
        recording_id = new_id()
        settings = replace(self.settings, audio=audio)

        def stopped(metadata: dict[str, Any]) -> None:
            with self._lock:
                self._active.pop(recording_id, None)
            if on_stopped is not None:
                on_stopped(metadata)

        recorder = Recorder(self.root / recording_id, recording_id, consult, self.key, settings,
                            consult_settings, stopped, self._opener)
        with self._lock:
            self._active[recording_id] = recorder
        return recorder

    def active(self) -> list[str]:
        with self._lock:
            return sorted(self._active)

    def discard(self, recorder: Recorder) -> None:
        """Forget a recorder whose :meth:`Recorder.start` failed (it made no folder and will never stop)."""
        with self._lock:
            if self._active.get(recorder.id) is recorder:
                del self._active[recorder.id]

    # ---- reading --------------------------------------------------------------------------------

    def _folder(self, recording_id: str) -> Path:
        folder = self.root / check_id(recording_id)
        if not folder.is_dir():
            raise NotFound("no such recording")
        return folder

    def metadata(self, recording_id: str) -> dict[str, Any]:
        """``recording.json``, with the files present and their sizes; a recording a crash left open is
        shown incomplete."""
        folder = self._folder(recording_id)
        data = read_metadata(folder)
        with self._lock:
            active = recording_id in self._active
        if data.get("state") == RECORDING and not active:
            data.update(state=INCOMPLETE, complete=False, reason=INTERRUPTED)
        files = []
        for name in FILES:
            path = on_disk(folder, name)
            if path is not None:
                files.append({"name": name, "bytes_on_disk": path.stat().st_size,
                              "encrypted": path.name.endswith(SEALED_SUFFIX)})
        data["files"] = files
        data["id"] = recording_id
        return data

    def list(self) -> list[dict[str, Any]]:
        """Every recording's metadata, newest first (unreadable folders are skipped and logged)."""
        out = []
        for folder in sorted(self.root.iterdir(), reverse=True):
            try:
                out.append(self.metadata(folder.name))
            except RecordingError:
                if not folder.name.startswith("."):
                    log.warning("recordings: skipping unreadable folder %s", folder.name[:40])
        return out

    def open(self, recording_id: str, name: str) -> OpenedFile:
        """One file of a recording, decrypted as it is read; close it when done."""
        check_name(name)
        folder = self._folder(recording_id)
        complete = name == METADATA or self.metadata(recording_id).get("state") == COMPLETE
        return open_file(folder, name, self.key, complete)

    # ---- deleting -------------------------------------------------------------------------------

    def delete(self, recording_id: str) -> None:
        """Delete a recording's files and metadata; :class:`Busy` while it is being recorded."""
        folder = self._folder(recording_id)
        with self._lock:
            if recording_id in self._active:
                raise Busy("this recording is running: stop it first")
        # Out of sight first (one rename), then removed: a crash in between leaves only a folder recover() removes.
        doomed = self.root / f"{_DELETING}{recording_id}"
        os.replace(folder, doomed)
        shutil.rmtree(doomed)
        log.info("recording %s deleted", recording_id)

    def expire(self, now: datetime | None = None) -> list[str]:
        """Delete recordings that started more than ``retention_days`` ago; the ids deleted."""
        if self.retention_days is None:
            return []
        limit = (now or datetime.now(UTC)) - timedelta(days=self.retention_days)
        deleted = []
        for folder in sorted(self.root.iterdir()):
            try:
                check_id(folder.name)
            except RecordingError:
                continue
            try:
                started = parse_time(read_metadata(folder)["started"])
            except (RecordingError, KeyError, TypeError, ValueError):
                started = datetime.fromtimestamp(folder.stat().st_mtime, UTC)
            if started >= limit:
                continue
            try:
                self.delete(folder.name)
            except (Busy, NotFound):
                continue
            deleted.append(folder.name)
        if deleted:
            log.info("retention: deleted %d recordings older than %g days", len(deleted), self.retention_days)
        return deleted

    def recover(self) -> list[str]:
        """At start: mark recordings a crash left open as incomplete, and finish interrupted deletions."""
        recovered = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(_DELETING):
                shutil.rmtree(folder, ignore_errors=True)
                continue
            with contextlib.suppress(RecordingError, OSError):
                check_id(folder.name)
                with self._lock:
                    if folder.name in self._active:
                        continue
                data = read_metadata(folder)
                if data.get("state") == RECORDING:
                    data.update(state=INCOMPLETE, complete=False, reason=INTERRUPTED)
                    write_metadata(folder, data)
                    recovered.append(folder.name)
        if recovered:
            log.warning("recordings: %d left open by a crash, marked incomplete", len(recovered))
        return recovered
