"""Payloads at rest are sealed: a value opens only under its key and in its own row; sealed files
stream back byte for byte and refuse to open when cut short, reordered or stored under another key."""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aisf.services import cli
from aisf.services.common.errors import PayloadUnreadable, RequestTooLarge
from aisf.services.common.sealing import OVERHEAD, PayloadSeal, is_sealed, key_from_text
from aisf.services.common.settings import Settings
from aisf.services.job import sealed_storage
from aisf.services.job.file_storage import LocalFileStorage
from aisf.services.job.sealed_storage import SealedFileStorage

SEAL = PayloadSeal(os.urandom(32))


@given(value=st.binary(max_size=2048), context=st.binary(max_size=64))
def test_a_sealed_value_opens_to_itself_and_holds_none_of_its_bytes(value: bytes, context: bytes) -> None:
    sealed = SEAL.seal(value, context)
    assert is_sealed(sealed)
    assert SEAL.open(sealed, context) == value
    if len(value) >= 8:
        header = len(SEAL.seal(b"")) - OVERHEAD  # the marker and the key id
        assert value not in sealed[header:]


def test_a_value_that_is_not_sealed_reads_as_it_is() -> None:
    assert SEAL.open(b'{"messages": []}') == b'{"messages": []}'
    assert SEAL.open(b"\n\x05model") == b"\n\x05model"


def test_a_sealed_value_does_not_open_in_another_row_or_under_another_key() -> None:
    sealed = SEAL.seal(b"payload", b"job-1/0/request")
    with pytest.raises(PayloadUnreadable, match="altered"):
        SEAL.open(sealed, b"job-1/1/request")
    with pytest.raises(PayloadUnreadable, match="another payload key"):
        PayloadSeal(os.urandom(32)).open(sealed, b"job-1/0/request")


def test_a_key_is_read_from_its_text_and_a_short_one_is_refused() -> None:
    assert len(key_from_text(secrets.token_urlsafe(32))) == 32
    with pytest.raises(ValueError, match="32 bytes"):
        key_from_text(secrets.token_urlsafe(16))


async def _chunks(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    at, turn = 0, 0
    while at < len(data):
        size = sizes[turn % len(sizes)] if sizes else len(data)
        yield data[at : at + size]
        at, turn = at + size, turn + 1


def _storage(tmp_path: Path) -> tuple[SealedFileStorage, Path]:
    return SealedFileStorage(LocalFileStorage(tmp_path), SEAL), tmp_path


async def _read(storage: SealedFileStorage, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.get(key)])


FRAME = sealed_storage._FRAME


@pytest.mark.parametrize("size", [0, 1, FRAME - 1, FRAME, FRAME + 1, 3 * FRAME + 5])
async def test_a_sealed_file_reads_back_whole_and_its_stored_bytes_hold_none_of_it(
    tmp_path: Path, size: int
) -> None:
    storage, root = _storage(tmp_path)
    data = (b"call 010-1234-5678 " * (size // 19 + 1))[:size]
    assert await storage.put("f", _chunks(data, [7, 4096, 100_000]), limit=size) == size
    assert await _read(storage, "f") == data
    if size:
        assert b"010-1234-5678" not in (root / "f").read_bytes()


@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=3 * FRAME // 2), sizes=st.lists(st.integers(1, FRAME), max_size=4))
def test_any_chunking_of_a_sealed_file_reads_back_the_same_bytes(data: bytes, sizes: list[int]) -> None:
    async def round_trip() -> bytes:
        with tempfile.TemporaryDirectory() as root:
            storage = SealedFileStorage(LocalFileStorage(Path(root)), SEAL)
            await storage.put("h", _chunks(data, sizes), limit=len(data))
            try:
                return await _read(storage, "h")
            finally:
                storage.close()

    assert asyncio.run(round_trip()) == data


class Trickling:
    """A storage that hands its files back a few bytes at a time (short reads, as a socket may give)."""

    def __init__(self, inner: LocalFileStorage, size: int) -> None:
        self._inner, self._size = inner, size

    async def put(self, key: str, chunks: AsyncIterator[bytes], limit: int) -> int:
        return await self._inner.put(key, chunks, limit)

    async def get(self, key: str) -> AsyncIterator[bytes]:
        async for chunk in self._inner.get(key):
            for at in range(0, len(chunk), self._size):
                yield chunk[at : at + self._size]

    async def delete(self, key: str) -> None:
        await self._inner.delete(key)

    def close(self) -> None:
        self._inner.close()


@pytest.mark.parametrize("read_size", [1, 3, 19, 20, 37, 4096])
async def test_a_sealed_file_read_back_in_short_pieces_is_whole(tmp_path: Path, read_size: int) -> None:
    storage = SealedFileStorage(Trickling(LocalFileStorage(tmp_path), read_size), SEAL)
    data = os.urandom(FRAME + 100) if read_size > 3 else os.urandom(300)
    await storage.put("f", _chunks(data, [1000]), limit=len(data))
    assert await _read(storage, "f") == data
    storage.close()


async def test_a_frame_of_an_impossible_length_is_refused_without_reading_it(tmp_path: Path) -> None:
    storage, root = _storage(tmp_path)
    await storage.put("f", _chunks(b"abc", [3]), limit=3)
    whole = (root / "f").read_bytes()
    (root / "f").write_bytes(
        whole[: storage._header] + (2**31).to_bytes(4, "big") + whole[storage._header + 4 :]
    )
    with pytest.raises(PayloadUnreadable, match="longer than any"):
        await _read(storage, "f")


async def test_a_file_over_the_limit_is_refused_and_nothing_is_kept(tmp_path: Path) -> None:
    storage, root = _storage(tmp_path)
    with pytest.raises(RequestTooLarge):
        await storage.put("big", _chunks(b"x" * 101, [10]), limit=100)
    assert not any(root.iterdir())


async def test_a_sealed_file_cut_short_or_reordered_does_not_open(tmp_path: Path) -> None:
    storage, root = _storage(tmp_path)
    await storage.put("f", _chunks(os.urandom(2 * FRAME + 10), [FRAME]), limit=3 * FRAME)
    whole = (root / "f").read_bytes()
    header = storage._header
    frame = 4 + int.from_bytes(whole[header : header + 4], "big")
    (root / "f").write_bytes(whole[: header + 2 * frame])  # the last frame dropped
    with pytest.raises(PayloadUnreadable, match="cut short"):
        await _read(storage, "f")
    first, second = whole[header : header + frame], whole[header + frame : header + 2 * frame]
    (root / "f").write_bytes(whole[:header] + second + first + whole[header + 2 * frame :])
    with pytest.raises(PayloadUnreadable):
        await _read(storage, "f")


async def test_a_file_stored_before_sealing_reads_as_it_is(tmp_path: Path) -> None:
    storage, root = _storage(tmp_path)
    (root / "old").write_bytes(b'{"custom_id": "a"}\n')
    assert await _read(storage, "old") == b'{"custom_id": "a"}\n'


@pytest.mark.parametrize("text", ["short", "x" * 45, "not base64 at all!"])
def test_a_malformed_payload_key_is_one_settings_line_that_never_shows_the_key(
    text: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AISF_PAYLOAD_KEY", text)
    assert cli.main(["serve", "--role", "job"]) == 2
    printed = capsys.readouterr().err.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("aisf: invalid settings: ('payload_key',): ")
    assert text not in printed[0]


def test_a_well_formed_payload_key_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AISF_PAYLOAD_KEY", secrets.token_urlsafe(32))
    assert len(key_from_text(Settings().payload_key.get_secret_value())) == 32
