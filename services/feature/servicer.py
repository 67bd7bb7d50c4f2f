"""aisf.feature.v1.FeatureService: decode, call the feature lane, encode."""

from __future__ import annotations

from typing import Any

from grpc import aio

from aisf.feature.v1 import feature_service_pb2 as pb
from aisf.feature.v1 import feature_service_pb2_grpc as pb_grpc
from aisf.services.feature import codec
from aisf.services.feature.online import FeatureLookup

Context = aio.ServicerContext[Any, Any]
SERVICE_NAME = "aisf.feature.v1.FeatureService"


class FeatureServicer(pb_grpc.FeatureServiceServicer):
    def __init__(self, lookup: FeatureLookup) -> None:
        self._lookup = lookup

    async def GetOnlineFeatures(
        self, request: pb.GetOnlineFeaturesRequest, context: Context
    ) -> pb.GetOnlineFeaturesResponse:
        return codec.result_to_proto(await self._lookup.get(codec.query_from_proto(request)))

    async def ListFeatures(
        self, request: pb.ListFeaturesRequest, context: Context
    ) -> pb.ListFeaturesResponse:
        return codec.catalog_to_proto(self._lookup.catalog)


def register(lookup: FeatureLookup) -> Any:
    def add(server: aio.Server) -> None:
        pb_grpc.add_FeatureServiceServicer_to_server(FeatureServicer(lookup), server)

    return add
