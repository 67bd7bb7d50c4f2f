"""Runs one role, or every role in one process (--role all), until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, start_http_server

from aisf import __version__
from aisf.gateway.server import start_gateway
from aisf.services.clients.feature_client import FeatureClient
from aisf.services.clients.mesh_client import MeshClient
from aisf.services.clients.pii_client import PiiClient, blocking_redactor
from aisf.services.clients.router_client import RouterClient
from aisf.services.common import call_context, heap
from aisf.services.common.auth.authenticator import Authenticator
from aisf.services.common.auth.grpc_guard import GrpcGuard
from aisf.services.common.auth.key_store import INTERNAL_TOKEN, KeyStore
from aisf.services.common.auth.rate_limits import TierRateLimits
from aisf.services.common.db.engine import Database, open_database
from aisf.services.common.grpc_server import Registrar, build_server
from aisf.services.common.logging import use_log_redaction
from aisf.services.common.metrics import DatabasePoolCollector, register_build_info
from aisf.services.common.request_log import request_log_of
from aisf.services.common.settings import WILDCARD_HOSTS, Role, Settings
from aisf.services.common.tracing import configure_tracing
from aisf.services.edge.nginx import start_edge
from aisf.services.feature.server import build_feature_lane
from aisf.services.job.job_metrics import JobGauges
from aisf.services.job.payload_redaction import Redact
from aisf.services.job.server import (
    build_finalizer,
    build_job_lane,
    open_storage,
    payload_redactor,
    payload_seal,
)
from aisf.services.job.store import JobStore
from aisf.services.job.temporal import connect, start_dev_server
from aisf.services.mesh.control_plane import build_control_plane
from aisf.services.mesh.member import MeshMember, advertised_address, replica_id
from aisf.services.pii.servicer import SERVICE_NAME as PII_SERVICE
from aisf.services.pii.servicer import PiiLane
from aisf.services.pii.servicer import register as register_pii
from aisf.services.router.server import RouterService, build_router
from aisf.workflows.activities import JobActivities
from aisf.workflows.worker import start_workers

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Endpoints:
    rest: str = ""
    grpc: str = ""
    metrics: str = ""
    temporal_ui: str = ""
    edge: str = ""

    def describe(self) -> str:
        named = (
            ("REST", self.rest),
            ("gRPC", self.grpc),
            ("metrics", self.metrics),
            ("Temporal UI", self.temporal_ui),
            ("edge", f"{self.edge} (TLS: REST, SSE and gRPC)" if self.edge else ""),
        )
        return "aisf ready: " + "  ".join(f"{name} {url}" for name, url in named if url)


def _display_host(host: str) -> str:
    return "localhost" if host in WILDCARD_HOSTS else host


async def run(settings: Settings, role: Role, announce: Callable[[Endpoints], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with AsyncExitStack() as stack:
        endpoints = await _start(settings, role, stack)
        if settings.gc_freeze:
            heap.freeze()  # start-up's objects never stall a collection under load
        announce(endpoints)
        await stop.wait()
        log.info("shutting down", extra={"grace_s": settings.shutdown_grace_s})


async def _start(settings: Settings, role: Role, stack: AsyncExitStack) -> Endpoints:
    """Start the role's parts; `stack` stops them in reverse order (edge first, database last)."""
    host = _display_host(settings.host)
    tracer_provider = configure_tracing(settings, role)  # before any channel: they take its interceptors
    if tracer_provider is not None:
        stack.callback(tracer_provider.shutdown)  # last out: flushes every span the others ended
    registry = CollectorRegistry()
    metrics_server, metrics_thread = start_http_server(settings.metrics_port, settings.host, registry)
    stack.callback(metrics_thread.join, 2)
    stack.callback(metrics_server.shutdown)
    endpoints = Endpoints(metrics=f"http://{host}:{metrics_server.server_port}/metrics")
    register_build_info(registry, __version__, role)
    co_located = role == "all"
    own_target = f"unix://{settings.router_socket()}" if co_located else ""
    router_target = own_target or settings.router_address or f"127.0.0.1:{settings.grpc_port}"
    keys_on = settings.auth == "keys"
    database = (
        open_database(settings.resolved_database_url(), settings.database_threads)
        if keys_on or role not in ("gateway", "feature", "pii")
        else None
    )
    if database is not None:
        stack.callback(database.close)
        registry.register(DatabasePoolCollector(database.engine.pool, database.engine.dialect.name))
    authenticator, guard = await _start_auth(settings, database)

    temporal_address = settings.temporal_address or f"127.0.0.1:{settings.temporal_port}"
    if co_located and not settings.temporal_address:
        dev = await start_dev_server(settings)
        stack.callback(dev.stop)
        temporal_address, endpoints.temporal_ui = dev.address, dev.ui_url

    registrars: list[Registrar] = []
    names: list[str] = []
    # Feature lane: Feast's registry loads (seconds) while the router loads its models.
    serves_features = role in ("all", "feature") and settings.feature_repo is not None
    feature_lane = asyncio.create_task(build_feature_lane(settings, registry)) if serves_features else None
    router = None
    try:
        if role in ("all", "router"):
            assert database is not None
            router = await build_router(settings, registry, database)
            stack.push_async_callback(router.close)
            registrars += router.registrars
            names += router.service_names
    finally:
        features = await feature_lane if feature_lane is not None else None
    if features is not None:
        stack.push_async_callback(features.close)
        registrars += features.registrars
        names += features.service_names
    if role == "pii" or (co_located and settings.pii_service):
        pii = PiiLane(settings)
        pii.start()  # its models load in the background: seconds, off the start-up path
        stack.push_async_callback(pii.close)
        registrars.append(register_pii(pii))
        names.append(PII_SERVICE)
    else:
        pii = None
    pii_redact = _use_pii(settings, pii, router, stack)
    feature_target = own_target if features is not None else settings.feature_address
    if router is not None:
        if features is not None:
            router.dataplane.features.use(features.lookup)  # in process: no hop
        elif settings.feature_address:
            remote = FeatureClient(settings.feature_address, settings.max_request_bytes)
            stack.push_async_callback(remote.close)
            router.dataplane.features.use(remote)
    # The job service and the workers of one process share one router channel, job store and file storage.
    router_client = job_store = storage = None
    if role in ("all", "job", "worker"):
        assert database is not None
        router_client = RouterClient(
            router_target, settings.max_request_bytes, settings.request_timeout_s, settings.stream_timeout_s
        )
        stack.push_async_callback(router_client.close)
        seal = await payload_seal(settings, database)
        job_store = JobStore(database, seal)
        storage = open_storage(settings, seal)
        stack.callback(storage.close)
    if role in ("all", "job"):
        assert database is not None and router_client is not None and job_store is not None and storage
        temporal = await connect(settings, temporal_address, lazy=True)
        lane = build_job_lane(settings, database, job_store, router_client, temporal, storage)
        stack.push_async_callback(lane.close)
        gauges = JobGauges(
            job_store,
            temporal,
            settings.temporal_namespace,
            [settings.job_task_queue, settings.job_large_task_queue],
            settings.job_gauges_interval_s,
        )
        gauges.start(registry)
        stack.push_async_callback(gauges.close)
        registrars += lane.registrars
        names += lane.service_names
    plane = None
    if role == "control-plane":
        assert database is not None
        plane = build_control_plane(settings, database, registry)
        await plane.start()
        registrars += plane.registrars
        names += plane.service_names
    if registrars:
        tcp = f"{settings.host}:{settings.grpc_port}"
        if co_located:
            settings.router_socket().parent.mkdir(parents=True, exist_ok=True)
            settings.router_socket().unlink(missing_ok=True)
        server = build_server(
            registrars,
            names,
            [tcp, own_target] if co_located else [tcp],
            settings.max_request_bytes,
            (settings.request_timeout_s, settings.stream_timeout_s),
            guard,
        )
        await server.start()
        stack.push_async_callback(server.stop, settings.shutdown_grace_s)
        endpoints.grpc = f"{host}:{server.ports[tcp]}"
        if router is not None:
            router.dataplane.mark_started()
        if settings.mesh_address and role != "control-plane":
            _join_mesh(settings, role, server.ports[tcp], router, stack)
        if plane is not None:
            stack.push_async_callback(plane.close)  # popped before the server drains
    if role in ("all", "worker"):
        assert database is not None and router_client is not None and job_store is not None and storage
        if role == "worker" and settings.files_storage == "local":
            # Batch outputs written here are read by the job role's Files API: only a shared folder works.
            log.warning(
                "batch files go to this worker's local folder; the job role must see the same folder "
                "(AISF_FILES_DIR on a shared volume) or both must use AISF_FILES_STORAGE=s3",
                extra={"files_dir": str(settings.files_dir or settings.data_dir / "files")},
            )
        finalizer = build_finalizer(database, job_store, storage)
        activities = JobActivities(
            job_store,
            router_client,
            finalizer,
            settings.job_item_concurrency,
            request_log_of(settings),
            payload_redactor(settings, pii_redact, registry),
        )
        await _start_workers(settings, activities, temporal_address, stack)
    if role in ("all", "gateway"):
        job_target = own_target or settings.job_address or router_target
        gateway = await start_gateway(
            settings, registry, router_target, job_target, feature_target, authenticator
        )
        stack.push_async_callback(gateway.stop)
        endpoints.rest = f"http://{host}:{gateway.http_port}"
        if settings.mesh_address and role == "gateway":  # role all joins with its gRPC port above
            _join_mesh(settings, role, gateway.http_port, None, stack)
        if settings.edge:
            edge = await start_edge(settings, gateway.http_port, _grpc_upstream(settings, endpoints), host)
            stack.push_async_callback(edge.stop)  # first out: no request reaches a stopped gateway
            endpoints.edge = edge.url
    elif settings.edge:
        raise RuntimeError(f"--edge needs the REST edge in this process (role all or gateway, not {role})")
    return endpoints


def _join_mesh(
    settings: Settings, role: Role, port: int, router: RouterService | None, stack: AsyncExitStack
) -> None:
    """Register with the control plane at `port` (gRPC; a gateway's REST); leave (popped before the server
    stops) so Envoy sends no new calls while the in-flight ones drain."""

    def models() -> list[str]:
        return sorted({m.name for m in router.repository.ready()}) if router is not None else []

    member = MeshMember(
        MeshClient(settings.mesh_address),
        replica_id(settings, role),
        role,
        advertised_address(settings, port),
        models,
    )
    if router is not None:
        router.repository.on_change(lambda _name: member.nudge())
    member.start()
    stack.push_async_callback(member.close)


def _grpc_upstream(settings: Settings, endpoints: Endpoints) -> str:
    """host:port of the gRPC server behind the edge: this process's, or the router the gateway role calls."""
    if endpoints.grpc:
        return f"127.0.0.1:{endpoints.grpc.rsplit(':', 1)[1]}"
    return (settings.router_address or f"127.0.0.1:{settings.grpc_port}").removeprefix("dns:///")


def _use_pii(
    settings: Settings, pii: PiiLane | None, router: RouterService | None, stack: AsyncExitStack
) -> Redact | None:
    """What asks the pii role: this process's log handler, and the semantic cache before it keeps an
    answer; the pii role here, or at AISF_PII_ADDRESS. Returns its Redact for the job workers."""
    client = None
    if pii is not None:
        use_log_redaction(pii.redact_blocking)
    elif settings.pii_address:
        use_log_redaction(blocking_redactor(settings.pii_address))
        # A worker's Redact of a group may carry a megabyte of text: more than the default 10 s to answer.
        client = PiiClient(settings.pii_address, settings.max_request_bytes, timeout_s=60.0)
        stack.push_async_callback(client.close)
    checks = pii or client
    if router is not None and router.llm is not None and router.llm.caches:
        if checks is not None:
            router.llm.use_personal_data_check(checks.holds_personal_data)
        else:
            log.warning(
                "the semantic cache keeps answers unchecked for personal data: no pii role here "
                "(AISF_PII_SERVICE) or at AISF_PII_ADDRESS"
            )
    return checks.redact if checks is not None else None


async def _start_auth(
    settings: Settings, database: Database | None
) -> tuple[Authenticator | None, GrpcGuard | None]:
    """With keys: the authenticator both transports share, and the roles' token for calling each other."""
    if settings.auth == "off":
        call_context.use_internal_token("")
        log.warning("AISF_AUTH=off: no API keys are asked for; the tenant is whatever X-Aisf-Tenant says")
        return None, None
    assert database is not None
    store = KeyStore(database, frozenset({*settings.tier_priorities, settings.default_tier}))
    token = settings.internal_token.get_secret_value() or await database.run(
        store.shared_secret, INTERNAL_TOKEN
    )
    call_context.use_internal_token(token)
    if not await database.run(store.has_keys):
        log.warning(
            "no API keys yet: every call but health will be refused; make one with "
            "`aisf tenants create NAME` and `aisf keys create --tenant NAME --roles infer`"
        )
    authenticator = Authenticator(store, settings.auth_cache_s, TierRateLimits(settings.tier_rate_limits))
    return authenticator, GrpcGuard(authenticator, token)


async def _start_workers(
    settings: Settings, activities: JobActivities, temporal_address: str, stack: AsyncExitStack
) -> None:
    temporal = await connect(settings, temporal_address, lazy=False)
    workers = await start_workers(
        temporal,
        settings.worker_task_queues or [settings.job_task_queue],
        activities,
        settings.worker_max_concurrent_activities,
        settings.shutdown_grace_s,
    )
    stack.push_async_callback(workers.stop)
