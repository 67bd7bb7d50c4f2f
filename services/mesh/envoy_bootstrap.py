"""Envoy's bootstrap for an aisf mesh: everything but the admin port and the control plane's address
comes over ADS (listeners, routes, clusters, endpoints), so Envoy never restarts as replicas change."""

from __future__ import annotations

from typing import Any

import yaml

from aisf.services.mesh.envoy_resources import http2_upstream
from aisf.services.mesh.registry import split_address

XDS_CLUSTER = "aisf-xds"


def bootstrap(
    xds_address: str, node_id: str, admin_port: int, admin_host: str = "127.0.0.1"
) -> dict[str, Any]:
    host, port = split_address(xds_address, "xds")
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": node_id, "cluster": "aisf-mesh"},
        "admin": {"address": {"socket_address": {"address": admin_host, "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [
                    {
                        "envoy_grpc": {
                            "cluster_name": XDS_CLUSTER,
                            # Back within seconds of a control-plane restart (the default backoff
                            # grows to 30 s); Envoy routes on its last config meanwhile.
                            "retry_policy": {
                                "retry_back_off": {"base_interval": "0.25s", "max_interval": "2s"}
                            },
                        }
                    }
                ],
                "set_node_on_first_message_only": True,
            },
            "lds_config": ads,
            "cds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER,
                    "type": "STRICT_DNS",
                    "connect_timeout": "1s",
                    # The ADS stream lives for hours: pings notice a control plane gone away.
                    "typed_extension_protocol_options": http2_upstream(10.0, 5.0),
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {"address": host, "port_value": port}
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {}}]},
    }


def bootstrap_yaml(xds_address: str, node_id: str, admin_port: int, admin_host: str = "127.0.0.1") -> str:
    header = (
        "# Envoy bootstrap for an aisf mesh: `aisf mesh envoy-bootstrap` wrote it; everything else comes\n"
        "# from the control plane over ADS.\n"
    )
    body = yaml.safe_dump(bootstrap(xds_address, node_id, admin_port, admin_host), sort_keys=False)
    return header + body
