"""Sealed files: recordings encrypted at rest, written and read as streams of authenticated chunks.

A sealed file is a 24-byte header, then chunks. The header is the magic
``MPXSEAL1``, 8 bytes that identify the key (a hash of it, so a wrong key is
told apart from damage) and an 8-byte random nonce prefix chosen per file.
Each chunk is a 4-byte big-endian length, then at most :data:`CHUNK_SIZE` bytes
of plaintext sealed with AES-256-GCM; its nonce is the prefix and the chunk's
counter, and its associated data the header, the counter and a final-chunk
flag. So chunks cannot be reordered, moved between files or dropped from the
middle, and a file cut short is told apart from a finished one (its last chunk
is not flagged final). A writer seals a chunk whenever
:data:`CHUNK_SIZE` bytes are waiting and on every :meth:`SealedWriter.flush`,
so a crash loses only what was not yet sealed (and at most a torn last chunk
on disk), never what came before: :class:`SealedReader` reads every intact
chunk and reports the file as truncated.

The key is 32 random bytes, given as 64 hex digits or as base64
(:func:`parse_key`; make one with :func:`generate_key`). It is never logged or
written anywhere by the proxy.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import io
import os
import secrets
import struct
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"MPXSEAL1"
HEADER_SIZE = 24
#: Plaintext bytes per chunk at most (the last one, and those sealed by a flush, are shorter).
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
KEY_SIZE = 32
_LENGTH = struct.Struct(">I")
_MAX_SEALED = CHUNK_SIZE + TAG_SIZE


class SealedFileError(ValueError):
    """A sealed file that cannot be read: another key, not a sealed file, or damaged before its end."""


def parse_key(text: str) -> bytes:
    """The 32-byte recordings key from 64 hex digits or base64 (standard or URL-safe); never echoes it."""
    text = "".join(text.split())
    if len(text) == 2 * KEY_SIZE:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        key = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_SIZE:
        raise ValueError(f"the recordings key must be {KEY_SIZE} random bytes as {2 * KEY_SIZE} hex digits or base64")
    return key


def generate_key() -> str:
    """A new random recordings key, as hex."""
    return secrets.token_hex(KEY_SIZE)


def key_id(key: bytes) -> bytes:
    """8 bytes naming a key (a hash of it) without revealing it."""
    return hashlib.sha256(b"maskproxy recordings key id\0" + key).digest()[:8]


def is_sealed(path: os.PathLike[str] | str) -> bool:
    """Whether the file starts like a sealed file."""
    with open(path, "rb") as file:
        return file.read(len(MAGIC)) == MAGIC


def _nonce(prefix: bytes, counter: int) -> bytes:
    return prefix + struct.pack(">I", counter)


def _associated(header: bytes, counter: int, final: bool) -> bytes:
    return header + struct.pack(">IB", counter, 1 if final else 0)


class SealedWriter(io.RawIOBase):
    """Encrypts what is written to it onto ``raw`` (an unbuffered binary file it owns), chunk by chunk.

    Not seekable: containers written through it must not need to seek back (WebM
    does not when told so). After a write error (a full disk) it is broken: later
    writes raise again, and :meth:`close` closes the file without writing.
    """

    def __init__(self, raw: BinaryIO, key: bytes) -> None:
        super().__init__()
        if len(key) != KEY_SIZE:
            raise ValueError("the recordings key must be 32 bytes")
        self._raw = raw
        self._aead = AESGCM(key)
        self._prefix = os.urandom(8)
        self._header = MAGIC + key_id(key) + self._prefix
        self._buffer = bytearray()
        self._counter = 0
        self._error: OSError | None = None
        self._put(self._header)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def _put(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        try:
            view = memoryview(data)
            while view:
                written = self._raw.write(view)
                if not written:
                    raise OSError("the file accepted no bytes")
                view = view[written:]
        except OSError as exc:
            self._error = exc
            raise

    def _seal(self, plaintext: bytes, final: bool) -> None:
        if self._counter >= 2**32 - 1:
            raise OSError("sealed file too long")
        sealed = self._aead.encrypt(_nonce(self._prefix, self._counter),
                                    plaintext, _associated(self._header, self._counter, final))
        self._put(_LENGTH.pack(len(sealed)) + sealed)
        self._counter += 1

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed sealed file")
        if self._error is not None:
            raise self._error
        self._buffer += data
        while len(self._buffer) >= CHUNK_SIZE:
            chunk = bytes(self._buffer[:CHUNK_SIZE])
            del self._buffer[:CHUNK_SIZE]
            self._seal(chunk, final=False)
        return len(data)

    def flush(self) -> None:
        """Seal what is waiting as a chunk of its own and hand it to the operating system."""
        if self.closed or self._error is not None or self._raw.closed:
            return
        if self._buffer:
            chunk = bytes(self._buffer)
            self._buffer.clear()
            self._seal(chunk, final=False)
        self._raw.flush()

    def sync(self) -> None:
        """:meth:`flush`, then ask the disk to keep it (fsync)."""
        self.flush()
        if self._error is None and not self.closed and not self._raw.closed:
            os.fsync(self._raw.fileno())

    def close(self) -> None:
        """Seal the final chunk, sync and close; after a write error, only close."""
        if self.closed:
            return
        try:
            if self._error is None:
                chunk = bytes(self._buffer)
                self._buffer.clear()
                self._seal(chunk, final=True)
                self._raw.flush()
                os.fsync(self._raw.fileno())
        finally:
            self._raw.close()
            super().close()

    def abandon(self) -> None:
        """Close after a fault elsewhere: finish the file if the disk allows, else just close it."""
        try:
            self.close()
        except OSError:
            if not self._raw.closed:
                self._raw.close()
            io.RawIOBase.close(self)


class PlainWriter(io.RawIOBase):
    """The same interface as :class:`SealedWriter` without a key: bytes go to ``raw`` as they are, in
    pieces of up to :data:`CHUNK_SIZE` and on every :meth:`flush`."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._buffer = bytearray()
        self._error: OSError | None = None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def _put(self) -> None:
        if self._error is not None:
            raise self._error
        try:
            view = memoryview(bytes(self._buffer))
            self._buffer.clear()
            while view:
                written = self._raw.write(view)
                if not written:
                    raise OSError("the file accepted no bytes")
                view = view[written:]
        except OSError as exc:
            self._error = exc
            raise

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed file")
        if self._error is not None:
            raise self._error
        self._buffer += data
        if len(self._buffer) >= CHUNK_SIZE:
            self._put()
        return len(data)

    def flush(self) -> None:
        if self.closed or self._error is not None or self._raw.closed:
            return
        if self._buffer:
            self._put()
        self._raw.flush()

    def sync(self) -> None:
        self.flush()
        if not self.closed and self._error is None and not self._raw.closed:
            os.fsync(self._raw.fileno())

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.sync()
        finally:
            self._raw.close()
            super().close()

    def abandon(self) -> None:
        """Close after a fault elsewhere: write what is waiting if the disk allows, then close."""
        try:
            self.close()
        except OSError:
            if not self._raw.closed:
                self._raw.close()
            io.RawIOBase.close(self)


class SealedReader(io.RawIOBase):
    """Decrypts a sealed file on the fly: readable and seekable, reads every intact chunk.

    Opening indexes the chunks (their lengths only) and checks the last one:
    ``truncated`` is True when the file has no final chunk (the writer was
    killed, or the disk filled up); a torn last chunk is left out. A damaged
    chunk before the end raises :class:`SealedFileError` when it is read.
    """

    def __init__(self, raw: BinaryIO, key: bytes) -> None:
        super().__init__()
        self._raw = raw
        header = raw.read(HEADER_SIZE)
        if len(header) < HEADER_SIZE or not header.startswith(MAGIC):
            raise SealedFileError("not a sealed recording file")
        if header[8:16] != key_id(key):
            raise SealedFileError("the file was sealed with another recordings key")
        self._header = header
        self._prefix = header[16:24]
        self._aead = AESGCM(key)
        self._offsets: list[int] = []  # file offset of each chunk's length field
        self._starts: list[int] = [0]  # plaintext offset of each chunk, then the total size
        self.truncated = True
        self._pos = 0
        self._cache: tuple[int, bytes] | None = None
        self._index()

    def _index(self) -> None:
        end = self._raw.seek(0, io.SEEK_END)
        offset = HEADER_SIZE
        while offset + _LENGTH.size <= end:
            self._raw.seek(offset)
            (length,) = _LENGTH.unpack(self._raw.read(_LENGTH.size))
            if length < TAG_SIZE or length > _MAX_SEALED:
                if offset + _LENGTH.size + length > end:
                    break  # a torn length at the end
                raise SealedFileError(f"damaged chunk {len(self._offsets)}")
            if offset + _LENGTH.size + length > end:
                break  # torn: its bytes never all reached the disk
            self._offsets.append(offset)
            self._starts.append(self._starts[-1] + length - TAG_SIZE)
            offset += _LENGTH.size + length
        if not self._offsets:
            return
        last = len(self._offsets) - 1
        for final in (True, False):
            try:
                plaintext = self._open(last, final)
            except InvalidTag:
                continue
            self._cache = (last, plaintext)
            trailing = offset < end
            if final and trailing:
                raise SealedFileError("data after the final chunk")
            self.truncated = not final
            return
        # the last complete-looking chunk does not authenticate: torn by a crash; leave it out
        self._offsets.pop()
        self._starts.pop()
        self.truncated = True

    def _open(self, index: int, final: bool) -> bytes:
        self._raw.seek(self._offsets[index] + _LENGTH.size)
        sealed = self._raw.read(self._starts[index + 1] - self._starts[index] + TAG_SIZE)
        return self._aead.decrypt(_nonce(self._prefix, index), sealed, _associated(self._header, index, final))

    def _chunk(self, index: int) -> bytes:
        if self._cache is not None and self._cache[0] == index:
            return self._cache[1]
        final = index == len(self._offsets) - 1 and not self.truncated
        try:
            plaintext = self._open(index, final)
        except InvalidTag:
            raise SealedFileError(f"damaged chunk {index}") from None
        self._cache = (index, plaintext)
        return plaintext

    @property
    def size(self) -> int:
        """Plaintext bytes readable."""
        return self._starts[-1]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError("seek before the start")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._pos >= self.size:
            return 0
        index = bisect.bisect_right(self._starts, self._pos) - 1
        plaintext = self._chunk(index)
        start = self._pos - self._starts[index]
        count = min(len(buffer), len(plaintext) - start)
        buffer[:count] = plaintext[start:start + count]
        self._pos += count
        return count

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
