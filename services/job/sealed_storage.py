"""File storage whose files are sealed at rest (batch inputs carry what users sent, PII included): any
FileStorage underneath, a folder or a bucket, sees only ciphertext.

A file is a header (marker, key id, a random file id) and frames of at most _FRAME plain bytes, each
`length | nonce | ciphertext`, its additional data binding it to the file's key, its file id, its place and
whether it is the last: a frame moved, dropped, taken from another version of the file, or a file cut
short does not open. Files stored before sealing read as they are."""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterator

from aisf.services.common.errors import PayloadUnreadable, RequestTooLarge
from aisf.services.common.sealing import OVERHEAD, PayloadSeal
from aisf.services.job.file_storage import FileStorage

_MARK = b"\x00aisf-sealed-file\x02"
_FILE_ID = 16
_FRAME = 256 * 1024
_LENGTH = struct.Struct(">I")


def _context(key: str, file_id: bytes, index: int, last: bool) -> bytes:
    return f"{key}\x00{file_id.hex()}\x00{index}\x00{int(last)}".encode()


class SealedFileStorage:
    def __init__(self, inner: FileStorage, seal: PayloadSeal) -> None:
        self._inner = inner
        self._seal = seal
        self._header = len(_MARK) + len(seal.key_id) + _FILE_ID

    async def put(self, key: str, chunks: AsyncIterator[bytes], limit: int) -> int:
        plain = 0
        file_id = os.urandom(_FILE_ID)

        async def sealed() -> AsyncIterator[bytes]:
            nonlocal plain
            yield _MARK + self._seal.key_id + file_id
            pending, index = bytearray(), 0
            async for chunk in chunks:
                plain += len(chunk)
                if plain > limit:
                    raise RequestTooLarge(f"file exceeds the limit of {limit} bytes")
                pending += chunk
                # Whole frames while more may come: the last frame is only known once the chunks end.
                while len(pending) > _FRAME:
                    yield self._frame(_context(key, file_id, index, False), bytes(pending[:_FRAME]))
                    del pending[:_FRAME]
                    index += 1
            yield self._frame(_context(key, file_id, index, True), bytes(pending))

        frames = limit // _FRAME + 2
        await self._inner.put(key, sealed(), self._header + limit + frames * (_LENGTH.size + OVERHEAD))
        return plain

    def _frame(self, context: bytes, plain: bytes) -> bytes:
        blob = self._seal.encrypt(plain, context)
        return _LENGTH.pack(len(blob)) + blob

    async def get(self, key: str) -> AsyncIterator[bytes]:
        stored = self._inner.get(key)
        buffer = bytearray()
        # Read until the header is whole, or the bytes cannot be one (a file stored before sealing).
        async for chunk in stored:
            buffer += chunk
            if len(buffer) >= self._header or not (_MARK.startswith(buffer) or buffer.startswith(_MARK)):
                break
        if not buffer.startswith(_MARK):
            if buffer:
                yield bytes(buffer)
            async for chunk in stored:
                yield chunk
            return
        if len(buffer) < self._header:
            raise PayloadUnreadable(f"file '{key}' is cut short inside its header")
        self._seal.check_key(bytes(buffer[len(_MARK) : self._header - _FILE_ID]))
        file_id = bytes(buffer[self._header - _FILE_ID : self._header])
        del buffer[: self._header]
        index, finished, more = 0, False, True
        while more or buffer:
            frame = _whole_frame(buffer, key)
            if frame is None:
                try:
                    buffer += await anext(stored)
                except StopAsyncIteration:
                    more = False
                    if buffer:
                        raise PayloadUnreadable(f"file '{key}' ends inside a sealed frame") from None
                continue
            if finished:
                raise PayloadUnreadable(f"file '{key}' holds data after its last sealed frame")
            try:
                plain = self._seal.decrypt(frame, _context(key, file_id, index, False))
            except PayloadUnreadable:
                plain = self._seal.decrypt(frame, _context(key, file_id, index, True))
                finished = True
            yield plain
            index += 1
        if not finished:
            raise PayloadUnreadable(f"file '{key}' is cut short: its last sealed frame is missing")

    async def delete(self, key: str) -> None:
        await self._inner.delete(key)

    def close(self) -> None:
        self._inner.close()


def _whole_frame(buffer: bytearray, key: str) -> bytes | None:
    """Take the first whole frame off `buffer`, or None while it is incomplete."""
    if len(buffer) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack_from(buffer)
    if length > _FRAME + OVERHEAD:  # altered: do not buffer gigabytes to find out
        raise PayloadUnreadable(f"file '{key}' holds a sealed frame longer than any aisf writes")
    end = _LENGTH.size + length
    if len(buffer) < end:
        return None
    frame = bytes(buffer[_LENGTH.size : end])
    del buffer[:end]
    return frame
