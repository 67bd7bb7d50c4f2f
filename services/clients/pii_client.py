"""The gRPC client of the pii role (aisf.pii.v1.PiiService), for roles in other processes."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from aisf.pii.v1 import pii_service_pb2 as pb
from aisf.pii.v1 import pii_service_pb2_grpc as pb_grpc
from aisf.services.clients.grpc_client import GrpcClient
from aisf.services.common import call_context


class PiiClient(GrpcClient):
    def __init__(self, target: str, max_message_bytes: int, timeout_s: float = 10.0) -> None:
        super().__init__(target, max_message_bytes, timeout_s)
        self._stub = pb_grpc.PiiServiceStub(self._channel)

    async def detect(self, texts: tuple[str, ...]) -> pb.DetectResponse:
        return await self._call(self._stub.Detect, pb.DetectRequest(texts=texts))

    async def redact(self, texts: list[str]) -> list[str]:
        answer = await self._call(self._stub.Redact, pb.RedactRequest(texts=texts))
        return list(answer.texts)

    async def holds_personal_data(self, texts: tuple[str, ...]) -> bool:
        answer = await self.detect(texts)
        return any(result.findings for result in answer.results)


def blocking_redactor(target: str, timeout_s: float = 5.0) -> Callable[[list[str]], list[str]]:
    """Redact over a channel of its own for a caller outside the event loop (the log handler's thread)."""
    channel = grpc.insecure_channel(target)
    stub = pb_grpc.PiiServiceStub(channel)

    def redact(texts: list[str]) -> list[str]:
        metadata = tuple((k, v) for k, v in call_context.outgoing() if k == "authorization")
        return list(stub.Redact(pb.RedactRequest(texts=texts), timeout=timeout_s, metadata=metadata).texts)

    return redact
