"""Where the bytes of files live (batch inputs, outputs, errors): a folder under the data dir by default,
or an S3-compatible bucket by configuration. Metadata stays in the metadata database."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from aisf.services.common.errors import EngineUnavailable, FileNotFound, RequestTooLarge
from aisf.services.common.threads import BlockingPool

CHUNK = 1024 * 1024
_PART = 8 * 1024 * 1024  # S3 multipart parts (S3 wants at least 5 MiB but for the last)


class FileStorage(Protocol):
    async def put(self, key: str, chunks: AsyncIterator[bytes], limit: int) -> int:
        """Store the chunks under `key`; more than `limit` bytes is a 413 and nothing is kept."""
        ...

    def get(self, key: str) -> AsyncIterator[bytes]: ...

    async def delete(self, key: str) -> None: ...

    def close(self) -> None: ...


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"file exceeds the limit of {limit} bytes")


class LocalFileStorage:
    """Files in one folder; a write goes to a temporary name and is renamed when complete, so a reader
    never sees half a file."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._threads = BlockingPool("files", 2)

    def _path(self, key: str) -> Path:
        return self._root / key

    async def put(self, key: str, chunks: AsyncIterator[bytes], limit: int) -> int:
        self._root.mkdir(parents=True, exist_ok=True)
        scratch = self._path(key).with_suffix(".part")
        size = 0
        try:
            with scratch.open("wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit)
                    await self._threads.run(out.write, chunk)
            await self._threads.run(os.replace, scratch, self._path(key))
        finally:
            scratch.unlink(missing_ok=True)
        return size

    async def get(self, key: str) -> AsyncIterator[bytes]:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFound(f"file content '{key}' is missing from the file storage")
        with path.open("rb") as source:
            while chunk := await self._threads.run(source.read, CHUNK):
                yield chunk

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def close(self) -> None:
        self._threads.close()


class S3FileStorage:
    """An S3-compatible bucket (AWS S3, MinIO, Ceph RGW, ...) through boto3 on threads of its own; the
    credentials come from boto3's usual places (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, roles)."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str, region: str) -> None:
        import boto3  # an optional dependency: only S3 deployments need it

        self._bucket, self._prefix = bucket, prefix
        self._client: Any = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None)
        self._threads = BlockingPool("files-s3", 4)

    async def put(self, key: str, chunks: AsyncIterator[bytes], limit: int) -> int:
        """One PUT for a small file; a larger one streams as a multipart upload (parts of _PART bytes),
        so a file is never held whole; an upload that fails or passes `limit` is aborted."""
        key, buffered, size = self._prefix + key, bytearray(), 0
        upload_id = ""
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                buffered += chunk
                if len(buffered) >= _PART:
                    if not upload_id:
                        started = await self._call(
                            self._client.create_multipart_upload, Bucket=self._bucket, Key=key
                        )
                        upload_id = started["UploadId"]
                    parts.append(await self._part(key, upload_id, len(parts) + 1, bytes(buffered)))
                    buffered.clear()
            if not upload_id:
                await self._call(self._client.put_object, Bucket=self._bucket, Key=key, Body=bytes(buffered))
                return size
            if buffered or not parts:
                parts.append(await self._part(key, upload_id, len(parts) + 1, bytes(buffered)))
            await self._call(
                self._client.complete_multipart_upload,
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            if upload_id:
                await self._call(
                    self._client.abort_multipart_upload, Bucket=self._bucket, Key=key, UploadId=upload_id
                )
            raise
        return size

    async def _part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        answer = await self._call(
            self._client.upload_part,
            Bucket=self._bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
        )
        return {"ETag": answer["ETag"], "PartNumber": number}

    async def get(self, key: str) -> AsyncIterator[bytes]:
        answer = await self._call(self._client.get_object, Bucket=self._bucket, Key=self._prefix + key)
        stream = answer["Body"]
        try:
            while chunk := await self._call(stream.read, CHUNK):
                yield chunk
        finally:
            stream.close()

    async def delete(self, key: str) -> None:
        await self._call(self._client.delete_object, Bucket=self._bucket, Key=self._prefix + key)

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await self._threads.run(method, *args, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404"):
                raise FileNotFound(f"file content is missing from bucket '{self._bucket}'") from None
            raise EngineUnavailable(f"file storage (S3 bucket '{self._bucket}'): {code or exc}") from None
        except BotoCoreError as exc:
            raise EngineUnavailable(f"file storage (S3 bucket '{self._bucket}'): {exc}") from None

    def close(self) -> None:
        self._threads.close()
