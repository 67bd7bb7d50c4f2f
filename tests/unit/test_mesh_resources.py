"""Envoy's resources for a replica set: clusters per role and per served model, routes by the
aisf-model header before the role's routes, retries only where a second answer is safe."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import json_format

from aisf.services.mesh.envoy_resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    MeshOptions,
    resources,
)
from aisf.services.mesh.registry import Replica

NOW = datetime.now(UTC)
REPLICAS = [
    Replica("a", "router", "10.0.0.1:8001", ("big", "small"), NOW),
    Replica("b", "router", "10.0.0.2:8001", ("small",), NOW),
    Replica("j", "job", "10.0.0.3:8001", (), NOW),
    Replica("all", "all", "[fd00::4]:8001", ("small",), NOW),
]


def _endpoints(built: dict[str, list[object]]) -> dict[str, list[tuple[str, int]]]:
    found = {}
    for assignment in built[ENDPOINT]:
        hosts = [
            (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
            for group in assignment.endpoints  # type: ignore[attr-defined]
            for e in group.lb_endpoints
        ]
        found[assignment.cluster_name] = hosts  # type: ignore[attr-defined]
    return found


def test_each_role_and_each_served_model_gets_a_cluster_of_the_replicas_serving_it() -> None:
    built = resources(REPLICAS, MeshOptions())
    endpoints = _endpoints(built)  # type: ignore[arg-type]
    assert endpoints["aisf-router"] == [("10.0.0.1", 8001), ("10.0.0.2", 8001), ("fd00::4", 8001)]
    assert endpoints["aisf-job"] == [("10.0.0.3", 8001), ("fd00::4", 8001)]
    assert endpoints["aisf-model-big"] == [("10.0.0.1", 8001)]
    assert endpoints["aisf-model-small"] == [("10.0.0.1", 8001), ("10.0.0.2", 8001), ("fd00::4", 8001)]
    assert endpoints["aisf-pii"] == [("fd00::4", 8001)]
    assert [c.name for c in built[CLUSTER]] == list(endpoints)  # type: ignore[attr-defined]


def test_clusters_balance_by_least_request_over_http2_with_outlier_detection_and_limits() -> None:
    cluster = json_format.MessageToDict(resources(REPLICAS, MeshOptions(max_requests=77))[CLUSTER][0])
    assert cluster["lbPolicy"] == "LEAST_REQUEST" and cluster["type"] == "EDS"
    assert cluster["outlierDetection"]["consecutiveGatewayFailure"] == 2
    assert cluster["circuitBreakers"]["thresholds"][0]["maxRequests"] == 77
    options = cluster["typedExtensionProtocolOptions"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2ProtocolOptions" in options["explicitHttpConfig"]


def _routes() -> list[dict[str, object]]:
    (config,) = resources(REPLICAS, MeshOptions(retries=2))[ROUTE]
    shape = json_format.MessageToDict(config)
    assert shape["validateClusters"] is True
    return shape["virtualHosts"][0]["routes"]  # type: ignore[no-any-return]


def test_model_header_routes_come_before_the_role_routes() -> None:
    routes = _routes()
    first = routes[0]
    assert first["match"] == {
        "prefix": "/inference.GRPCInferenceService/",
        "headers": [{"name": "aisf-model", "stringMatch": {"exact": "big"}}],
    }
    assert first["route"]["cluster"] == "aisf-model-big"  # type: ignore[index]
    fallback = next(r for r in routes if r["match"] == {"prefix": "/inference.GRPCInferenceService/"})
    assert routes.index(fallback) > max(i for i, r in enumerate(routes) if "headers" in r["match"])  # type: ignore[operator]
    assert fallback["route"]["cluster"] == "aisf-router"  # type: ignore[index]


def test_inference_retries_on_unavailable_but_a_job_submit_only_when_it_never_arrived() -> None:
    by_prefix = {r["match"]["prefix"]: r["route"] for r in _routes() if "headers" not in r["match"]}  # type: ignore[index]
    inference = by_prefix["/inference.GRPCInferenceService/"]["retryPolicy"]
    assert set(inference["retryOn"].split(",")) == {
        "unavailable",
        "reset",
        "connect-failure",
        "refused-stream",
    }
    assert inference["numRetries"] == 2
    assert inference["retryHostPredicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    jobs = by_prefix["/aisf.job.v1."]["retryPolicy"]
    assert set(jobs["retryOn"].split(",")) == {"connect-failure", "refused-stream"}
    assert by_prefix["/aisf.llm.v1."]["timeout"] == "0s"  # streams are bounded by their own deadline


def test_a_model_no_longer_served_keeps_its_cluster_for_one_push_without_a_route() -> None:
    built = resources(REPLICAS[1:], MeshOptions(), lingering_models=["big"])
    endpoints = _endpoints(built)  # type: ignore[arg-type]
    assert endpoints["aisf-model-big"] == [("10.0.0.2", 8001), ("fd00::4", 8001)]  # every router
    (config,) = built[ROUTE]
    assert "aisf-model-big" not in str(config)


def test_the_listener_speaks_http2_and_takes_its_routes_over_ads() -> None:
    (listener,) = resources([], MeshOptions(listener_port=12345))[LISTENER]
    shape = json_format.MessageToDict(listener)
    assert shape["address"]["socketAddress"]["portValue"] == 12345
    manager = shape["filterChains"][0]["filters"][0]["typedConfig"]
    assert manager["codecType"] == "HTTP2"
    assert manager["rds"] == {
        "configSource": {"ads": {}, "resourceApiVersion": "V3"},
        "routeConfigName": "aisf-routes",
    }


def test_gateways_get_a_rest_listener_over_http1_where_only_a_get_is_answered_twice() -> None:
    gateways = [*REPLICAS, Replica("g", "gateway", "10.0.0.9:8000", (), NOW)]
    assert "aisf-gateway" not in _endpoints(resources(gateways, MeshOptions()))  # type: ignore[arg-type]
    built = resources(gateways, MeshOptions(http_listener_port=10080))
    assert _endpoints(built)["aisf-gateway"] == [("10.0.0.9", 8000)]  # type: ignore[arg-type]
    (gateway,) = [json_format.MessageToDict(c) for c in built[CLUSTER] if c.name == "aisf-gateway"]  # type: ignore[attr-defined]
    assert "typedExtensionProtocolOptions" not in gateway  # HTTP/1.1 to uvicorn
    rest = next(json_format.MessageToDict(r) for r in built[ROUTE] if r.name == "aisf-http-routes")  # type: ignore[attr-defined]
    get, other = rest["virtualHosts"][0]["routes"]
    assert get["match"]["headers"] == [{"name": ":method", "stringMatch": {"exact": "GET"}}]
    assert "reset" in get["route"]["retryPolicy"]["retryOn"]
    assert set(other["route"]["retryPolicy"]["retryOn"].split(",")) == {"connect-failure", "refused-stream"}
    assert other["route"]["timeout"] == "0s"  # SSE
    ports = {json_format.MessageToDict(li)["address"]["socketAddress"]["portValue"] for li in built[LISTENER]}
    assert ports == {10000, 10080}
