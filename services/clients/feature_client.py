"""The gRPC client of the feature service (the gateway's REST routes, and the router's feature join when
the feature role runs elsewhere)."""

from __future__ import annotations

from aisf.feature.v1 import feature_service_pb2_grpc as pb_grpc
from aisf.services.clients.grpc_client import GrpcClient
from aisf.services.feature import codec
from aisf.services.feature.types import FeatureQuery, FeatureResult


class FeatureClient(GrpcClient):
    def __init__(self, target: str, max_message_bytes: int, timeout_s: float = 10.0) -> None:
        super().__init__(target, max_message_bytes, timeout_s)
        self._stub = pb_grpc.FeatureServiceStub(self._channel)

    async def get(self, query: FeatureQuery) -> FeatureResult:
        reply = await self._call(self._stub.GetOnlineFeatures, codec.query_to_proto(query))
        return codec.result_from_proto(reply)
