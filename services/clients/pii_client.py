"""The gRPC client of the pii role (aisf.pii.v1.PiiService), for roles in other processes."""

from __future__ import annotations

from aisf.pii.v1 import pii_service_pb2 as pb
from aisf.pii.v1 import pii_service_pb2_grpc as pb_grpc
from aisf.services.clients.grpc_client import GrpcClient


class PiiClient(GrpcClient):
    def __init__(self, target: str, max_message_bytes: int, timeout_s: float = 10.0) -> None:
        super().__init__(target, max_message_bytes, timeout_s)
        self._stub = pb_grpc.PiiServiceStub(self._channel)

    async def detect(self, texts: tuple[str, ...]) -> pb.DetectResponse:
        return await self._call(self._stub.Detect, pb.DetectRequest(texts=texts))

    async def holds_personal_data(self, texts: tuple[str, ...]) -> bool:
        answer = await self.detect(texts)
        return any(result.findings for result in answer.results)
