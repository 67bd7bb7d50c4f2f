"""The S3 file storage streams: a file larger than a part goes up as a multipart upload (never held
whole), reads back byte for byte, and an upload over the limit is aborted with nothing left behind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from aisf.services.common.errors import RequestTooLarge
from aisf.services.job import file_storage
from aisf.services.job.file_storage import S3FileStorage

MiB = 1024 * 1024


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="files")
        yield client


async def _chunks(total: int, size: int = MiB) -> AsyncIterator[bytes]:
    for start in range(0, total, size):
        yield bytes((start // size + i) % 251 for i in range(min(size, total - start)))


async def _read(storage: S3FileStorage, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.get(key)])


async def test_a_file_larger_than_a_part_is_a_multipart_upload_that_reads_back_whole(bucket: Any) -> None:
    storage = S3FileStorage("files", "aisf/", "", "us-east-1")
    total = 2 * file_storage._PART + 3 * MiB
    try:
        assert await storage.put("big", _chunks(total), limit=total) == total
        expected = b"".join([chunk async for chunk in _chunks(total)])
        assert await _read(storage, "big") == expected
    finally:
        storage.close()
    assert bucket.head_object(Bucket="files", Key="aisf/big")["ETag"].strip('"').endswith("-3")  # 3 parts


async def test_a_small_file_is_one_put(bucket: Any) -> None:
    storage = S3FileStorage("files", "aisf/", "", "us-east-1")
    try:
        assert await storage.put("small", _chunks(1000), limit=MiB) == 1000
        assert len(await _read(storage, "small")) == 1000
    finally:
        storage.close()
    assert "-" not in bucket.head_object(Bucket="files", Key="aisf/small")["ETag"]


async def test_an_upload_over_the_limit_is_aborted_and_leaves_nothing(bucket: Any) -> None:
    storage = S3FileStorage("files", "aisf/", "", "us-east-1")
    limit = file_storage._PART + MiB
    try:
        with pytest.raises(RequestTooLarge, match="limit"):
            await storage.put("over", _chunks(limit + MiB), limit=limit)
    finally:
        storage.close()
    assert "Contents" not in bucket.list_objects_v2(Bucket="files")
    assert "Uploads" not in bucket.list_multipart_uploads(Bucket="files")
