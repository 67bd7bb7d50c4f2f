"""Envoy's listeners, routes, clusters and endpoints for a set of healthy replicas: what a gRPC mesh
needs (per-request HTTP/2 balancing by least request, retries of idempotent calls on another replica,
outlier detection, per-cluster circuit breakers) and routing by model name.

Written as Envoy's own JSON shapes and parsed into the xDS messages, so each reads like the Envoy
configuration it is."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (registers the type)
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format
from google.protobuf.message import Message

from aisf.services.common import call_context
from aisf.services.mesh.registry import Replica

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
"""In the order a push sends them: clusters and their endpoints before the routes that name them."""
SHORT_NAMES = {LISTENER: "listeners", ROUTE: "routes", CLUSTER: "clusters", ENDPOINT: "endpoints"}

LISTENER_NAME = "aisf-grpc"
ROUTE_NAME = "aisf-routes"
HTTP_LISTENER_NAME = "aisf-http"
HTTP_ROUTE_NAME = "aisf-http-routes"
MODEL_HEADER = call_context.MODEL_KEY
"""Calls that name their model in this metadata (aisf's own clients do) go to replicas that have the
model loaded; the others to any replica of the role (Envoy cannot read the protobuf body)."""

_ADS = {"ads": {}, "resource_api_version": "V3"}
# gRPC services, by the role that serves them: the route prefixes of each role's cluster.
_SERVICES_BY_ROLE = {
    "router": ("/inference.GRPCInferenceService/", "/aisf.llm.v1.", "/aisf.router.v1."),
    "job": ("/aisf.job.v1.",),
    "feature": ("/aisf.feature.v1.",),
    "pii": ("/aisf.pii.v1.",),
}
_MODEL_SERVICES = ("/inference.GRPCInferenceService/", "/aisf.llm.v1.")
# Calls a second replica may answer again: every read and inference. A job submit, a file upload or a
# batch is retried only when it never reached a replica (the connection failed or was refused).
_IDEMPOTENT_RETRY_ON = "unavailable,reset,connect-failure,refused-stream"
_SAFE_RETRY_ON = "connect-failure,refused-stream"
_RETRIED_ON_ANY_ERROR = frozenset({"router", "feature", "pii"})


@dataclass(frozen=True, slots=True)
class MeshOptions:
    listener_port: int = 10000
    http_listener_port: int = 0
    """The REST listener in front of the gateways; 0: none."""
    retries: int = 3
    max_requests: int = 4096
    """Per-cluster circuit breaker: requests (and pending requests) in flight at once; more get 503."""
    connect_timeout_s: float = 1.0
    ejection_s: float = 5.0
    """How long outlier detection keeps a failing replica out (longer each time it is ejected again)."""


def cluster_of_role(role: str) -> str:
    return f"aisf-{role}"


def cluster_of_model(model: str) -> str:
    return f"aisf-model-{model}"


def resources(
    replicas: Sequence[Replica], options: MeshOptions, lingering_models: Iterable[str] = ()
) -> dict[str, list[Message]]:
    """Every resource by type URL. `lingering_models` keep their cluster (on every router) without a
    route for one more push: Envoy gets the route table without them before their cluster goes."""
    members = {role: [r for r in replicas if r.role in (role, "all")] for role in _SERVICES_BY_ROLE}
    serving: dict[str, list[Replica]] = {}
    for replica in members["router"]:
        for model in replica.models:
            serving.setdefault(model, []).append(replica)
    endpoints = {cluster_of_role(role): found for role, found in members.items()}
    endpoints |= {cluster_of_model(m): found for m, found in sorted(serving.items())}
    for model in lingering_models:
        endpoints.setdefault(cluster_of_model(model), members["router"])
    clusters = [_cluster(name, options) for name in endpoints]
    listeners, routes = (
        [_listener(LISTENER_NAME, options.listener_port, ROUTE_NAME, "HTTP2")],
        [_route_configuration(sorted(serving), options)],
    )
    if options.http_listener_port:
        gateway = cluster_of_role("gateway")
        endpoints[gateway] = [r for r in replicas if r.role == "gateway"]
        clusters.append(_cluster(gateway, options, http2=False))
        listeners.append(_listener(HTTP_LISTENER_NAME, options.http_listener_port, HTTP_ROUTE_NAME, "AUTO"))
        routes.append(_rest_routes(gateway, options))
    return {
        CLUSTER: clusters,
        ENDPOINT: [_assignment(name, found) for name, found in endpoints.items()],
        LISTENER: listeners,
        ROUTE: routes,
    }


def resource_name(resource: Message) -> str:
    if isinstance(resource, endpoint_pb2.ClusterLoadAssignment):
        return str(resource.cluster_name)
    return str(getattr(resource, "name"))  # noqa: B009  (Listener, Cluster, RouteConfiguration)


def _parsed(shape: dict[str, Any], message: Message) -> Message:
    return json_format.ParseDict(shape, message)


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def http2_upstream(ping_interval_s: float, ping_timeout_s: float) -> dict[str, Any]:
    """A cluster's protocol options: HTTP/2 (gRPC), with pings that find a peer whose host vanished
    without a reset (a node lost, a partition)."""
    keepalive = {"interval": _seconds(ping_interval_s), "timeout": _seconds(ping_timeout_s)}
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {"connection_keepalive": keepalive}},
        }
    }


def _cluster(name: str, options: MeshOptions, http2: bool = True) -> Message:
    """`http2`: gRPC replicas; otherwise HTTP/1.1 (the gateways' REST)."""
    limit = options.max_requests
    return _parsed(
        {
            "name": name,
            "type": "EDS",
            "eds_cluster_config": {"eds_config": _ADS},
            "connect_timeout": _seconds(options.connect_timeout_s),
            "lb_policy": "LEAST_REQUEST",
            **({"typed_extension_protocol_options": http2_upstream(5.0, 2.0)} if http2 else {}),
            "outlier_detection": {
                "consecutive_5xx": 5,
                "consecutive_gateway_failure": 2,  # resets and refused connections: a replica gone
                "interval": "1s",
                "base_ejection_time": _seconds(options.ejection_s),
                "max_ejection_percent": 50,
            },
            "circuit_breakers": {
                "thresholds": [
                    {
                        "priority": "DEFAULT",
                        "max_connections": limit,
                        "max_pending_requests": limit,
                        "max_requests": limit,
                        # Envoy's default (3 retries in flight per cluster) would fail the load of a
                        # dead replica's share; a budget lets a quarter of the active requests retry.
                        "retry_budget": {"budget_percent": {"value": 25.0}, "min_retry_concurrency": 64},
                    }
                ]
            },
        },
        cluster_pb2.Cluster(),
    )


def _assignment(cluster: str, replicas: Sequence[Replica]) -> Message:
    return _parsed(
        {
            "cluster_name": cluster,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": r.host, "port_value": r.port}},
                                "hostname": r.replica_id,
                            },
                            "health_status": "HEALTHY",
                        }
                        for r in replicas
                    ]
                }
            ],
        },
        endpoint_pb2.ClusterLoadAssignment(),
    )


def _listener(name: str, port: int, route_name: str, codec: str) -> Message:
    return _parsed(
        {
            "name": name,
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.network"
                                ".http_connection_manager.v3.HttpConnectionManager",
                                "stat_prefix": name.replace("-", "_"),
                                "codec_type": codec,
                                "rds": {"config_source": _ADS, "route_config_name": route_name},
                                "http_filters": [
                                    {
                                        "name": "envoy.filters.http.router",
                                        "typed_config": {
                                            "@type": "type.googleapis.com/envoy.extensions.filters.http"
                                            ".router.v3.Router"
                                        },
                                    }
                                ],
                            },
                        }
                    ]
                }
            ],
        },
        listener_pb2.Listener(),
    )


def _route_configuration(models: Sequence[str], options: MeshOptions) -> Message:
    routes: list[dict[str, Any]] = []
    for model in models:
        for prefix in _MODEL_SERVICES:
            header = {"name": MODEL_HEADER, "string_match": {"exact": model}}
            routes.append(_route(prefix, cluster_of_model(model), "router", options, [header]))
    for role, prefixes in _SERVICES_BY_ROLE.items():
        routes += [_route(prefix, cluster_of_role(role), role, options) for prefix in prefixes]
    routes.append(_route("/grpc.health.v1.Health/", cluster_of_role("router"), "router", options))
    return _parsed(
        {
            "name": ROUTE_NAME,
            # A route naming a cluster Envoy does not have is rejected (NACKed) rather than served as 404s.
            "validate_clusters": True,
            "virtual_hosts": [{"name": "aisf", "domains": ["*"], "routes": routes}],
        },
        route_pb2.RouteConfiguration(),
    )


def _rest_routes(cluster: str, options: MeshOptions) -> Message:
    """Every path to the gateways; a GET may be answered again by another gateway, other methods only
    when they never reached one. No route timeout: SSE streams and long polls last minutes."""

    def route(retry_on: str, method: str | None) -> dict[str, Any]:
        match: dict[str, Any] = {"prefix": "/"}
        if method:
            match["headers"] = [{"name": ":method", "string_match": {"exact": method}}]
        return {
            "match": match,
            "route": {"cluster": cluster, "timeout": "0s", "retry_policy": _retries(retry_on, options)},
        }

    return _parsed(
        {
            "name": HTTP_ROUTE_NAME,
            "validate_clusters": True,
            "virtual_hosts": [
                {
                    "name": "aisf-rest",
                    "domains": ["*"],
                    "routes": [
                        route("reset,connect-failure,refused-stream", "GET"),
                        route(_SAFE_RETRY_ON, None),
                    ],
                }
            ],
        },
        route_pb2.RouteConfiguration(),
    )


def _retries(retry_on: str, options: MeshOptions) -> dict[str, Any]:
    return {
        "retry_on": retry_on,
        "num_retries": options.retries,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3"
                    ".PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 5,
    }


def _route(
    prefix: str,
    cluster: str,
    role: str,
    options: MeshOptions,
    headers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    match: dict[str, Any] = {"prefix": prefix}
    if headers:
        match["headers"] = headers
    return {
        "match": match,
        "route": {
            "cluster": cluster,
            "timeout": "0s",  # the call's own grpc-timeout bounds it (streams last minutes)
            "max_stream_duration": {"grpc_timeout_header_max": "0s"},
            "retry_policy": _retries(
                _IDEMPOTENT_RETRY_ON if role in _RETRIED_ON_ANY_ERROR else _SAFE_RETRY_ON, options
            ),
        },
    }
