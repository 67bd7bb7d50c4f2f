"""The gRPC client of the job role's Files and Batch APIs (aisf.job.v1.FileService, BatchService)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from grpc import aio

from aisf.job.v1 import batch_service_pb2 as pb
from aisf.job.v1 import batch_service_pb2_grpc as pb_grpc
from aisf.services.clients.grpc_client import GrpcClient
from aisf.services.common import call_context, deadlines
from aisf.services.common.errors import AisfError
from aisf.services.common.grpc_errors import error_from_rpc

_TRANSFER_TIMEOUT_S = 600.0  # uploads and downloads of up to a few hundred MB


class BatchClient(GrpcClient):
    def __init__(self, target: str, max_message_bytes: int, timeout_s: float = 30.0) -> None:
        super().__init__(target, max_message_bytes, timeout_s)
        self._files = pb_grpc.FileServiceStub(self._channel)
        self._batches = pb_grpc.BatchServiceStub(self._channel)

    async def upload(self, header: pb.UploadFileHeader, chunks: AsyncIterator[bytes]) -> pb.File:
        """Stream the file; an error `chunks` raises (e.g. over the size limit) is raised as it was."""
        failed: list[AisfError] = []

        async def parts() -> AsyncIterator[pb.UploadFileRequest]:
            yield pb.UploadFileRequest(header=header)
            try:
                async for chunk in chunks:
                    yield pb.UploadFileRequest(chunk=chunk)
            except AisfError as error:
                failed.append(error)  # grpc.aio only cancels the call; the caller must hear why
                raise

        try:
            reply = await self._files.UploadFile(
                parts(),
                timeout=deadlines.timeout_or(_TRANSFER_TIMEOUT_S),
                metadata=tuple(call_context.outgoing()) or None,
            )
        except (aio.AioRpcError, asyncio.CancelledError) as exc:
            if failed:
                raise failed[0] from None
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise error_from_rpc(exc) from None
        return reply.file

    async def file(self, file_id: str, tenant: str) -> pb.File:
        return (await self._call(self._files.GetFile, pb.GetFileRequest(file_id=file_id, tenant=tenant))).file

    async def file_content(self, file_id: str, tenant: str) -> AsyncGenerator[bytes, None]:
        request = pb.GetFileContentRequest(file_id=file_id, tenant=tenant)
        async with aclosing(self._read(self._files.GetFileContent, request, _TRANSFER_TIMEOUT_S)) as parts:
            async for part in parts:
                yield part.chunk

    async def files(self, request: pb.ListFilesRequest) -> pb.ListFilesResponse:
        return await self._call(self._files.ListFiles, request)

    async def delete_file(self, file_id: str, tenant: str) -> pb.DeleteFileResponse:
        return await self._call(self._files.DeleteFile, pb.DeleteFileRequest(file_id=file_id, tenant=tenant))

    async def create_batch(self, request: pb.CreateBatchRequest) -> pb.Batch:
        return (await self._call(self._batches.CreateBatch, request)).batch

    async def batch(self, batch_id: str, tenant: str) -> pb.Batch:
        request = pb.GetBatchRequest(batch_id=batch_id, tenant=tenant)
        return (await self._call(self._batches.GetBatch, request)).batch

    async def cancel_batch(self, batch_id: str, tenant: str) -> pb.Batch:
        request = pb.CancelBatchRequest(batch_id=batch_id, tenant=tenant)
        return (await self._call(self._batches.CancelBatch, request)).batch

    async def batches(self, request: pb.ListBatchesRequest) -> pb.ListBatchesResponse:
        return await self._call(self._batches.ListBatches, request)
