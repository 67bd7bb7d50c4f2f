"""aisf.router.v1.ModelControlService: breakers, shadows and traffic, decoded and encoded at the edge."""

from __future__ import annotations

from typing import Any

from grpc import aio

from aisf.router.v1 import model_control_pb2 as pb
from aisf.router.v1 import model_control_pb2_grpc as pb_grpc
from aisf.services.common.errors import InvalidInput
from aisf.services.common.model_config import TrafficConfig
from aisf.services.router.breaker import BreakerMode, BreakerState, BreakerStatus
from aisf.services.router.control import ModelControl, ModelStatus, VersionStatus
from aisf.services.router.shadow import ShadowReport

Context = aio.ServicerContext[Any, Any]
SERVICE_NAME = "aisf.router.v1.ModelControlService"

_STATES = {
    BreakerState.CLOSED: pb.BREAKER_STATE_CLOSED,
    BreakerState.HALF_OPEN: pb.BREAKER_STATE_HALF_OPEN,
    BreakerState.OPEN: pb.BREAKER_STATE_OPEN,
}
_MODES = {
    BreakerMode.AUTO: pb.BREAKER_MODE_AUTO,
    BreakerMode.FORCED_OPEN: pb.BREAKER_MODE_FORCED_OPEN,
    BreakerMode.FORCED_CLOSED: pb.BREAKER_MODE_FORCED_CLOSED,
}
_MODES_BACK = {wire: mode for mode, wire in _MODES.items()}


def _breaker(status: BreakerStatus) -> pb.BreakerStatus:
    return pb.BreakerStatus(
        state=_STATES[status.state],
        mode=_MODES[status.mode],
        failures_in_window=status.failures_in_window,
        failure_threshold=status.threshold,
        window_seconds=status.window_s,
        cooldown_seconds=status.cooldown_s,
        opened_count=status.opened_count,
        rejected_count=status.rejected,
        retry_after_seconds=status.retry_after_s,
        last_failure_reason=status.last_failure,
    )


def _version(status: VersionStatus) -> pb.VersionStatus:
    return pb.VersionStatus(
        model_version=status.version,
        breaker=_breaker(status.breaker),
        queue_depth=status.queue_depth,
        in_flight=status.in_flight,
    )


def _traffic(traffic: TrafficConfig | None) -> list[pb.TrafficRoute]:
    routes = traffic.routes if traffic is not None else []
    return [
        pb.TrafficRoute(model_name=r.model, model_version=str(r.version or ""), weight=r.weight)
        for r in routes
    ]


def status_to_proto(status: ModelStatus) -> pb.GetModelStatusResponse:
    return pb.GetModelStatusResponse(
        model_name=status.name,
        versions=[_version(v) for v in status.versions],
        traffic=_traffic(status.traffic),
        sticky_parameter=status.traffic.sticky_parameter if status.traffic is not None else "",
    )


def report_to_proto(report: ShadowReport) -> pb.ShadowReport:
    return pb.ShadowReport(
        model_name=report.model,
        shadow_model_name=report.shadow_model,
        shadow_model_version=report.shadow_version,
        sample=report.sample,
        offered=report.offered,
        shed=report.shed,
        compared=report.compared,
        agreed=report.agreed,
        agreement=report.agreement,
        errors=report.shadow_errors,
        live_p50_ms=report.live_p50_ms,
        live_p99_ms=report.live_p99_ms,
        shadow_p50_ms=report.shadow_p50_ms,
        shadow_p99_ms=report.shadow_p99_ms,
        gates=[pb.PromotionGate(name=g.name, passed=g.passed, detail=g.detail) for g in report.gates],
        promotable=report.promotable,
        promoted=report.promoted,
    )


def _name(model_name: str) -> str:
    if not model_name:
        raise InvalidInput("model_name: is required")
    return model_name


class ModelControlServicer(pb_grpc.ModelControlServiceServicer):
    def __init__(self, control: ModelControl) -> None:
        self._control = control

    async def GetModelStatus(
        self, request: pb.GetModelStatusRequest, context: Context
    ) -> pb.GetModelStatusResponse:
        return status_to_proto(self._control.status(_name(request.model_name)))

    async def SetBreakerMode(
        self, request: pb.SetBreakerModeRequest, context: Context
    ) -> pb.SetBreakerModeResponse:
        mode = _MODES_BACK.get(request.mode)
        if mode is None:
            raise InvalidInput("mode: must be BREAKER_MODE_AUTO, _FORCED_OPEN or _FORCED_CLOSED")
        versions = self._control.set_breaker(_name(request.model_name), request.model_version, mode)
        return pb.SetBreakerModeResponse(versions=[_version(v) for v in versions])

    async def GetShadowReport(
        self, request: pb.GetShadowReportRequest, context: Context
    ) -> pb.GetShadowReportResponse:
        return pb.GetShadowReportResponse(
            report=report_to_proto(self._control.shadow_report(_name(request.model_name)))
        )

    async def PromoteShadow(
        self, request: pb.PromoteShadowRequest, context: Context
    ) -> pb.PromoteShadowResponse:
        report = self._control.promote_shadow(_name(request.model_name), request.force)
        return pb.PromoteShadowResponse(report=report_to_proto(report))


def register(control: ModelControl) -> Any:
    def add(server: aio.Server) -> None:
        pb_grpc.add_ModelControlServiceServicer_to_server(ModelControlServicer(control), server)

    return add
