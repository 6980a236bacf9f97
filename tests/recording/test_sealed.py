"""Sealed files: what was sealed reads back whole, a crash loses at most the unsealed tail, tampering is caught."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from proxy.recording.sealed import (
    CHUNK_SIZE,
    HEADER_SIZE,
    SealedFileError,
    SealedReader,
    SealedWriter,
    generate_key,
    parse_key,
)

KEY = bytes(range(32))
_alive: list[SealedWriter] = []


def _seal(path: Path, pieces: list[bytes], flush_every: int = 0, close: bool = True) -> bytes:
    writer = SealedWriter(open(path, "wb", buffering=0), KEY)
    for n, piece in enumerate(pieces, start=1):
        writer.write(piece)
        if flush_every and n % flush_every == 0:
            writer.flush()
    if close:
        writer.close()
    else:
        writer.flush()
        _alive.append(writer)  # as after a SIGKILL: never closed (a collected writer would close itself)
    return b"".join(pieces)


def _read(path: Path, key: bytes = KEY) -> tuple[bytes, bool]:
    with SealedReader(open(path, "rb"), key) as reader:
        return reader.read(), reader.truncated


def test_round_trip_across_chunk_sizes_and_flushes(tmp_path: Path) -> None:
    rng = os.urandom
    pieces = [rng(n) for n in (1, 100, CHUNK_SIZE - 1, CHUNK_SIZE, 3 * CHUNK_SIZE + 7, 0, 5000)]
    for flush_every in (0, 1, 3):
        path = tmp_path / f"f{flush_every}"
        plain = _seal(path, pieces, flush_every)
        assert _read(path) == (plain, False)
        raw = path.read_bytes()
        assert plain[:4096] not in raw and plain[-4096:] not in raw  # nothing in clear


def test_empty_file_is_complete(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    _seal(path, [])
    assert _read(path) == (b"", False)


def test_seek_and_read_anywhere(tmp_path: Path) -> None:
    path = tmp_path / "f"
    plain = _seal(path, [os.urandom(3 * CHUNK_SIZE + 123)], flush_every=1)
    with SealedReader(open(path, "rb"), KEY) as reader:
        buffered = io.BufferedReader(reader)
        for offset in (0, 5, CHUNK_SIZE - 3, 2 * CHUNK_SIZE, len(plain) - 10):
            buffered.seek(offset)
            assert buffered.read(1000) == plain[offset:offset + 1000]
        assert reader.size == len(plain)


def test_a_cut_file_reads_every_whole_chunk_before_the_cut(tmp_path: Path) -> None:
    """A crash (or a full disk) mid-write: everything sealed before the torn end reads back, flagged truncated."""
    path = tmp_path / "f"
    pieces = [os.urandom(20_000) for _ in range(10)]
    plain = _seal(path, pieces, flush_every=1)  # one chunk per piece
    raw = path.read_bytes()
    chunk = 4 + 20_000 + 16
    for cut in (HEADER_SIZE, HEADER_SIZE + 2, HEADER_SIZE + chunk, HEADER_SIZE + 3 * chunk + 100, len(raw) - 1):
        path.write_bytes(raw[:cut])
        data, truncated = _read(path)
        whole = (cut - HEADER_SIZE) // chunk
        assert truncated and data == plain[:whole * 20_000], cut


def test_a_writer_killed_before_close_leaves_a_readable_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    plain = _seal(path, [b"a" * 70_000, b"b" * 10], close=False)
    assert _read(path) == (plain, True)


def test_tampering_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "f"
    _seal(path, [os.urandom(20_000) for _ in range(4)], flush_every=1)
    raw = bytearray(path.read_bytes())
    chunk = 4 + 20_000 + 16
    flipped = bytearray(raw)
    flipped[HEADER_SIZE + chunk + 50] ^= 1  # inside the second chunk
    path.write_bytes(flipped)
    with pytest.raises(SealedFileError, match="damaged chunk 1"):
        _read(path)
    # swapping two chunks: each is sealed to its place
    swapped = raw[:HEADER_SIZE] + raw[HEADER_SIZE + chunk:HEADER_SIZE + 2 * chunk] + \
        raw[HEADER_SIZE:HEADER_SIZE + chunk] + raw[HEADER_SIZE + 2 * chunk:]
    path.write_bytes(swapped)
    with pytest.raises(SealedFileError):
        _read(path)
    # dropping the final chunk's flag by cutting it off reads as truncated, never as complete
    path.write_bytes(raw[:HEADER_SIZE + 3 * chunk])
    assert _read(path)[1] is True


def test_another_key_is_told_apart_from_damage(tmp_path: Path) -> None:
    path = tmp_path / "f"
    _seal(path, [b"x" * 100])
    with pytest.raises(SealedFileError, match="another recordings key"):
        _read(path, bytes(32))
    path.write_bytes(b"not sealed at all")
    with pytest.raises(SealedFileError, match="not a sealed"):
        _read(path)


def test_a_full_disk_breaks_the_writer_and_keeps_what_was_sealed(tmp_path: Path) -> None:
    class Full:
        """A file on a disk with ``room`` bytes left."""

        def __init__(self, inner: io.RawIOBase, room: int) -> None:
            self.inner, self.room = inner, room

        @property
        def closed(self) -> bool:
            return self.inner.closed

        def write(self, data: bytes) -> int:
            if len(data) > self.room:
                self.inner.write(bytes(data)[: self.room])
                self.room = 0
                raise OSError(28, "No space left on device")
            self.room -= len(data)
            return self.inner.write(data)

        def fileno(self) -> int:
            return self.inner.fileno()

        def flush(self) -> None:
            self.inner.flush()

        def close(self) -> None:
            self.inner.close()

    path = tmp_path / "f"
    writer = SealedWriter(Full(open(path, "wb", buffering=0), 50_000), KEY)
    writer.write(b"a" * 20_000)
    writer.flush()
    with pytest.raises(OSError) as caught:
        writer.write(b"b" * 100_000)
    assert caught.value.errno == 28
    with pytest.raises(OSError):
        writer.write(b"c")  # broken for good
    writer.abandon()
    assert _read(path) == (b"a" * 20_000, True)


def test_keys() -> None:
    key = generate_key()
    assert parse_key(key) == bytes.fromhex(key)
    import base64

    raw = os.urandom(32)
    assert parse_key(base64.b64encode(raw).decode()) == raw
    assert parse_key(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw
    assert parse_key("  " + raw.hex() + "\n") == raw
    for bad in ("", "00" * 16, "zz" * 32, "secret-passphrase-that-is-long-enough"):
        with pytest.raises(ValueError) as caught:
            parse_key(bad)
        assert bad not in str(caught.value) or not bad  # the key is never echoed
