"""File storage whose files are sealed at rest (batch inputs carry what users sent, PII included): any
FileStorage underneath, a folder or a bucket, sees only ciphertext.

A file is a header (marker + key id) and frames of at most _FRAME plain bytes, each `length | nonce |
ciphertext`, its additional data binding it to the file's key, its place and whether it is the last: a
frame moved, dropped or a file cut short does not open. Files stored before sealing read as they are."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

from aisf.services.common.errors import PayloadUnreadable, RequestTooLarge
from aisf.services.common.sealing import OVERHEAD, PayloadSeal
from aisf.services.job.file_storage import FileStorage

_MARK = b"\x00aisf-sealed-file\x01"
_FRAME = 256 * 1024
_LENGTH = struct.Struct(">I")


def _context(key: str, index: int, last: bool) -> bytes:
    return f"{key}\x00{index}\x00{int(last)}".encode()


class SealedFileStorage:
    def __init__(self, inner: FileStorage, seal: PayloadSeal) -> None:
        self._inner = inner
        self._seal = seal

    async def put(self, key: str, chunks: AsyncIterator[bytes], limit: int) -> int:
        plain = 0

        async def sealed() -> AsyncIterator[bytes]:
            nonlocal plain
            yield _MARK + self._seal.key_id
            pending, index = bytearray(), 0
            async for chunk in chunks:
                plain += len(chunk)
                if plain > limit:
                    raise RequestTooLarge(f"file exceeds the limit of {limit} bytes")
                pending += chunk
                # One frame behind: the last frame is only known once the chunks end.
                while len(pending) > _FRAME:
                    yield self._frame(key, index, bytes(pending[:_FRAME]), last=False)
                    del pending[:_FRAME]
                    index += 1
            yield self._frame(key, index, bytes(pending), last=True)

        frames = limit // _FRAME + 2
        await self._inner.put(key, sealed(), len(_MARK) + 4 + limit + frames * (_LENGTH.size + OVERHEAD))
        return plain

    def _frame(self, key: str, index: int, plain: bytes, last: bool) -> bytes:
        blob = self._seal.encrypt(plain, _context(key, index, last))
        return _LENGTH.pack(len(blob)) + blob

    async def get(self, key: str) -> AsyncIterator[bytes]:
        stored = self._inner.get(key)
        buffer, index, header = bytearray(), 0, len(_MARK) + len(self._seal.key_id)
        async for chunk in stored:
            buffer += chunk
            if len(buffer) >= header or not _MARK.startswith(bytes(buffer)):
                break
        if not buffer.startswith(_MARK):
            if buffer:
                yield bytes(buffer)  # stored before sealing: as it is
            async for chunk in stored:
                yield chunk
            return
        self._seal.check_key(bytes(buffer[len(_MARK) : header]))
        del buffer[:header]
        finished = False
        more = True
        while more or buffer:
            frame = _whole_frame(buffer)
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
                yield self._seal.decrypt(frame, _context(key, index, last=False))
            except PayloadUnreadable:
                yield self._seal.decrypt(frame, _context(key, index, last=True))
                finished = True
            index += 1
        if not finished:
            raise PayloadUnreadable(f"file '{key}' is cut short: its last sealed frame is missing")

    async def delete(self, key: str) -> None:
        await self._inner.delete(key)

    def close(self) -> None:
        self._inner.close()


def _whole_frame(buffer: bytearray) -> bytes | None:
    """Take the first whole frame off `buffer`, or None while it is incomplete."""
    if len(buffer) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack_from(buffer)
    end = _LENGTH.size + length
    if len(buffer) < end:
        return None
    frame = bytes(buffer[_LENGTH.size : end])
    del buffer[:end]
    return frame
