"""aisf.router.v1.ModelRepositoryService: model load history from the metadata database."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from aisf.router.v1 import model_repository_pb2 as pb
from aisf.router.v1 import model_repository_pb2_grpc as pb_grpc
from aisf.services.common.db.model_store import EventKind, ModelEvent, ModelStore
from aisf.services.common.errors import InvalidInput

SERVICE_NAME = "aisf.router.v1.ModelRepositoryService"
_KINDS = {
    EventKind.LOADED: pb.MODEL_EVENT_KIND_LOADED,
    EventKind.UNLOADED: pb.MODEL_EVENT_KIND_UNLOADED,
    EventKind.LOAD_FAILED: pb.MODEL_EVENT_KIND_LOAD_FAILED,
}


def _to_proto(event: ModelEvent) -> pb.ModelEvent:
    created = Timestamp()
    created.FromDatetime(event.created_at)
    return pb.ModelEvent(
        model_name=event.name,
        model_version=event.version,
        kind=_KINDS[event.kind],
        reason=event.reason,
        create_time=created,
        backend=event.backend,
    )


class ModelRepositoryServicer(pb_grpc.ModelRepositoryServiceServicer):
    def __init__(self, store: ModelStore) -> None:
        self._store = store

    async def ListModelEvents(
        self, request: pb.ListModelEventsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListModelEventsResponse:
        if not 0 <= request.page_size <= 1000:
            raise InvalidInput(f"page_size must be within 0..1000, got {request.page_size}")
        if request.page_token and not request.page_token.isdigit():
            raise InvalidInput("page_token is not one this service issued")
        size = request.page_size or 100
        events = await self._store.events(request.model_name, size, int(request.page_token or 0))
        token = str(events[-1].id) if len(events) == size else ""
        return pb.ListModelEventsResponse(events=[_to_proto(e) for e in events], next_page_token=token)


def register(store: ModelStore) -> Any:
    def add(server: aio.Server) -> None:
        pb_grpc.add_ModelRepositoryServiceServicer_to_server(ModelRepositoryServicer(store), server)

    return add
