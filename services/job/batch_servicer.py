"""aisf.job.v1.FileService and BatchService over the files and batch dataplane; handlers only decode, call
and encode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from aisf.job.v1 import batch_service_pb2 as pb
from aisf.job.v1 import batch_service_pb2_grpc as pb_grpc
from aisf.services.common.auth import tenancy
from aisf.services.common.errors import InvalidInput
from aisf.services.job.batch_codec import batch_to_proto, file_to_proto
from aisf.services.job.batches import BatchService, FileService

FILE_SERVICE = "aisf.job.v1.FileService"
BATCH_SERVICE = "aisf.job.v1.BatchService"
Context = aio.ServicerContext[Any, Any]


async def _chunks(parts: AsyncIterator[pb.UploadFileRequest]) -> AsyncIterator[bytes]:
    async for part in parts:
        if part.WhichOneof("part") != "chunk":
            raise InvalidInput("UploadFile: only the first message may be a header")
        yield part.chunk


class FileServicer(pb_grpc.FileServiceServicer):
    def __init__(self, files: FileService) -> None:
        self._files = files

    async def UploadFile(
        self, requests: AsyncIterator[pb.UploadFileRequest], context: Context
    ) -> pb.UploadFileResponse:
        first = await anext(aiter(requests), None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidInput("UploadFile: the first message must be the file's header")
        header = first.header
        info = await self._files.upload(
            tenancy.tenant_for(header.tenant), header.filename, header.purpose, _chunks(requests)
        )
        return pb.UploadFileResponse(file=file_to_proto(info))

    async def GetFile(self, request: pb.GetFileRequest, context: Context) -> pb.GetFileResponse:
        return pb.GetFileResponse(
            file=file_to_proto(await self._files.get(request.file_id, tenancy.tenant_for(request.tenant)))
        )

    async def GetFileContent(
        self, request: pb.GetFileContentRequest, context: Context
    ) -> AsyncIterator[pb.GetFileContentResponse]:
        async for chunk in await self._files.content(request.file_id, tenancy.tenant_for(request.tenant)):
            yield pb.GetFileContentResponse(chunk=chunk)

    async def ListFiles(self, request: pb.ListFilesRequest, context: Context) -> pb.ListFilesResponse:
        files, more = await self._files.list(
            tenancy.tenant_for(request.tenant), request.purpose, request.limit, request.after
        )
        return pb.ListFilesResponse(files=[file_to_proto(f) for f in files], has_more=more)

    async def DeleteFile(self, request: pb.DeleteFileRequest, context: Context) -> pb.DeleteFileResponse:
        await self._files.delete(request.file_id, tenancy.tenant_for(request.tenant))
        return pb.DeleteFileResponse(file_id=request.file_id, deleted=True)


class BatchServicer(pb_grpc.BatchServiceServicer):
    def __init__(self, batches: BatchService) -> None:
        self._batches = batches

    async def CreateBatch(self, request: pb.CreateBatchRequest, context: Context) -> pb.CreateBatchResponse:
        view = await self._batches.create(
            tenancy.tenant_for(request.tenant),
            request.input_file_id,
            request.endpoint,
            request.completion_window,
            dict(request.metadata),
        )
        return pb.CreateBatchResponse(batch=batch_to_proto(view))

    async def GetBatch(self, request: pb.GetBatchRequest, context: Context) -> pb.GetBatchResponse:
        view = await self._batches.get(request.batch_id, tenancy.tenant_for(request.tenant))
        return pb.GetBatchResponse(batch=batch_to_proto(view))

    async def CancelBatch(self, request: pb.CancelBatchRequest, context: Context) -> pb.CancelBatchResponse:
        view = await self._batches.cancel(request.batch_id, tenancy.tenant_for(request.tenant))
        return pb.CancelBatchResponse(batch=batch_to_proto(view))

    async def ListBatches(self, request: pb.ListBatchesRequest, context: Context) -> pb.ListBatchesResponse:
        views, more = await self._batches.list(
            tenancy.tenant_for(request.tenant), request.limit, request.after
        )
        return pb.ListBatchesResponse(batches=[batch_to_proto(v) for v in views], has_more=more)


def register(files: FileService, batches: BatchService) -> Any:
    def add(server: aio.Server) -> None:
        pb_grpc.add_FileServiceServicer_to_server(FileServicer(files), server)
        pb_grpc.add_BatchServiceServicer_to_server(BatchServicer(batches), server)

    return add
