"""What a recording folder holds: its id, its file names and ``recording.json``.

A recording is one folder under ``recordings_dir`` named by its id (the UTC
start time and 48 random bits, ``20260509T101500Z-3fa9c1d2e4b5``). Its files
have fixed names (:data:`FILES`); encrypted ones carry ``.sealed`` on disk
and are served under their plain name. ``recording.json`` stays plaintext, so
the store can list and expire recordings without the key; it holds no names,
no tokens and nothing about the face: the id, the consult's random id, start
and end, whether the recording is complete (and why not), the settings it was
made with, the software version and per-file counts. It is written at the
start with padding and rewritten at the end, in place if the disk is too full
for a new file, so a fault can still be recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

METADATA = "recording.json"
SEALED_SUFFIX = ".sealed"
#: The files a recording may hold: name -> (what, MIME type).
FILES: dict[str, tuple[str, str]] = {
    "video.webm": ("the masked video, the frames sent to the doctor (VP8)", "video/webm"),
    "eyes.webm": ("the eye close-up track, when the doctor had it on (VP8)", "video/webm"),
    "audio.webm": ("the consult's audio (Opus), only where a setting allowed it and the patient consented",
                   "audio/webm"),
    "params.jsonl": ("the mask parameters of every recorded frame, with the frame's time in video.webm",
                     "application/jsonl"),
    "events.jsonl": ("the doctor's marks, eye-test results and consent changes, timed like the video",
                     "application/jsonl"),
    METADATA: ("this recording's metadata", "application/json"),
}
#: States in ``recording.json``: being written, finished, or ended by a fault or a crash.
RECORDING, COMPLETE, INCOMPLETE = "recording", "complete", "incomplete"
#: Padding at the end of recording.json, so the final rewrite fits in place on a full disk.
PADDING = 4096
_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}$")
#: Setting names that must never reach recording.json (secrets of any kind).
_SECRET = re.compile(r"token|key|secret|password|credential|auth", re.IGNORECASE)


class RecordingError(ValueError):
    """A request about recordings that cannot be served; ``status`` is the HTTP answer it deserves."""

    status = 400


class NotFound(RecordingError):
    status = 404


class Busy(RecordingError):
    status = 409


def new_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(6)}"


def check_id(recording_id: str) -> str:
    """The id, if it is well formed; otherwise :class:`RecordingError` (so no path can be smuggled in)."""
    if not isinstance(recording_id, str) or not _ID.match(recording_id):
        raise RecordingError("not a recording id")
    return recording_id


def check_name(name: str) -> str:
    """The file name, if it is one a recording may hold; otherwise :class:`RecordingError`."""
    if not isinstance(name, str) or name not in FILES:
        raise RecordingError(f"not a recording file; recordings hold {', '.join(sorted(FILES))}")
    return name


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def clean_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """The settings worth keeping with a recording: JSON scalars (and lists of them), never a secret."""
    out: dict[str, Any] = {}
    for name, value in (settings or {}).items():
        if not isinstance(name, str) or _SECRET.search(name):
            continue
        if isinstance(value, bool | int | float | str) or value is None:
            out[name] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, bool | int | float | str) for v in value):
            out[name] = list(value)
    return out


def write_metadata(folder: Path, metadata: dict[str, Any]) -> None:
    """Write ``recording.json``: a new file renamed into place, or, when the disk is full, over the old one."""
    text = json.dumps(metadata, indent=1, sort_keys=True)
    data = (text + "\n" + " " * PADDING + "\n").encode()
    path = folder / METADATA
    temporary = folder / f".{METADATA}.tmp"
    try:
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        return
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if not path.exists() or len(text) + 2 > path.stat().st_size:
            raise
    # In place: the old file's blocks are already allocated, so this needs no free space.
    with open(path, "r+b") as file:
        size = file.seek(0, os.SEEK_END)
        file.seek(0)
        file.write((text + "\n").encode().ljust(size - 1) + b"\n")
        file.flush()
        os.fsync(file.fileno())


def read_metadata(folder: Path) -> dict[str, Any]:
    """``recording.json`` of a folder; :class:`NotFound` if there is none, :class:`RecordingError` if unreadable."""
    try:
        text = (folder / METADATA).read_text()
    except FileNotFoundError:
        raise NotFound("no such recording") from None
    except OSError as exc:
        raise RecordingError(f"recording metadata unreadable ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise RecordingError("recording metadata damaged") from None
    if not isinstance(data, dict):
        raise RecordingError("recording metadata damaged")
    return data
