"""The gRPC client of the control plane's replica registry (aisf.mesh.v1.MeshService)."""

from __future__ import annotations

from aisf.mesh.v1 import mesh_service_pb2 as pb
from aisf.mesh.v1 import mesh_service_pb2_grpc as pb_grpc
from aisf.services.clients.grpc_client import GrpcClient

# gRPC's reconnect backoff grows to two minutes: a replica would miss its heartbeats (and leave Envoy's
# endpoints) long after a restarted control plane is back. Heartbeats retry every second anyway.
_RECONNECT = (("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 1000))


class MeshClient(GrpcClient):
    def __init__(self, target: str, timeout_s: float = 2.0) -> None:
        super().__init__(target, 4 * 1024 * 1024, timeout_s, _RECONNECT)
        self._stub = pb_grpc.MeshServiceStub(self._channel)

    async def register(self, replica_id: str, role: str, address: str, models: list[str]) -> float:
        """The heartbeat interval the control plane asks for."""
        request = pb.RegisterRequest(replica_id=replica_id, role=role, address=address, models=models)
        answer = await self._call(self._stub.Register, request)
        return float(answer.heartbeat_interval_s)

    async def heartbeat(self, replica_id: str, models: list[str]) -> str:
        answer = await self._call(
            self._stub.Heartbeat, pb.HeartbeatRequest(replica_id=replica_id, models=models)
        )
        return str(answer.snapshot_version)

    async def leave(self, replica_id: str) -> None:
        await self._call(self._stub.Leave, pb.LeaveRequest(replica_id=replica_id))

    async def replicas(self) -> pb.ListReplicasResponse:
        return await self._call(self._stub.ListReplicas, pb.ListReplicasRequest())
