"""deploy/k8s rendered with the real `kubectl kustomize` and every object checked offline: Kubernetes'
own kinds against its OpenAPI schemas (kubernetes-validate, strict: unknown fields fail), KEDA's
ScaledObject against the schema checked in beside the manifests; then what a cluster relies on."""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from aisf.services.mesh.envoy_bootstrap import bootstrap_yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
BIN = Path(sys.executable).parent
KUBERNETES = "1.33.0"
OVERLAYS = ("base", "overlays/dev", "overlays/prod")
GRPC_ROLES = ("router", "job", "feature", "pii")


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl", path=str(BIN)) or "kubectl"
    text = subprocess.run(
        [kubectl, "kustomize", str(K8S / overlay)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(text) if doc)


def _named(objects: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_offline(overlay: str) -> None:
    scaled_object = yaml.safe_load((K8S / "schemas" / "scaledobject-keda.sh-v1alpha1.yaml").read_text())
    kinds = set()
    for item in rendered(overlay):
        kinds.add(item["kind"])
        if item["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(item, scaled_object)
        else:
            kubernetes_validate.validate(item, KUBERNETES, strict=True)
    assert {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ScaledObject",
    } <= kinds


def test_the_scaledobject_schema_catches_a_misspelt_field() -> None:
    schema = yaml.safe_load((K8S / "schemas" / "scaledobject-keda.sh-v1alpha1.yaml").read_text())
    (good,) = _named(rendered("base"), "ScaledObject").values()
    bad = {**good, "spec": {**good["spec"], "maxReplicas": 5}}
    with pytest.raises(jsonschema.ValidationError, match="maxReplicas"):
        jsonschema.validate(bad, schema)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_a_disruption_budget_and_every_container_a_probe(overlay: str) -> None:
    objects = rendered(overlay)
    budgets = [b["spec"]["selector"]["matchLabels"] for b in _named(objects, "PodDisruptionBudget").values()]
    for name, deployment in _named(objects, "Deployment").items():
        if not name.startswith("aisf-") or deployment["metadata"]["labels"][
            "app.kubernetes.io/component"
        ] in (
            "postgres",
            "redis",
            "temporal",
            "minio",  # the dev overlay's throwaway stores
        ):
            continue
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(all(labels.get(k) == v for k, v in b.items()) for b in budgets), name
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert "livenessProbe" in container, name


def test_the_grpc_roles_join_the_mesh_at_their_pod_address_and_probe_grpc_health() -> None:
    deployments = _named(rendered("base"), "Deployment")
    for role in GRPC_ROLES:
        (container,) = deployments[f"aisf-{role}"]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["AISF_MESH_ADVERTISE_ADDRESS"]["value"] == "$(POD_IP):8001"
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert container["readinessProbe"]["grpc"]["port"] == 8001
        assert container["args"] == ["serve", "--role", role]
    (gateway,) = deployments["aisf-gateway"]["spec"]["template"]["spec"]["containers"]
    assert {e["name"]: e for e in gateway["env"]}["AISF_MESH_ADVERTISE_ADDRESS"]["value"] == "$(POD_IP):8000"
    envoy_ports = {p["port"] for p in _named(rendered("base"), "Service")["aisf-envoy"]["spec"]["ports"]}
    assert envoy_ports == {10000, 10080}  # the gRPC and REST listeners the control plane gives Envoy
    config = _named(rendered("base"), "ConfigMap")["aisf-config"]["data"]
    assert config["AISF_MESH_ADDRESS"] == "aisf-control-plane:8001"
    assert config["AISF_ROUTER_ADDRESS"] == "aisf-envoy:10000"  # the gateway's calls balance through Envoy


def test_a_worker_has_time_to_checkpoint_before_it_is_killed() -> None:
    worker = _named(rendered("base"), "Deployment")["aisf-worker"]["spec"]["template"]["spec"]
    (container,) = worker["containers"]
    grace_s = float({e["name"]: e["value"] for e in container["env"]}["AISF_SHUTDOWN_GRACE_S"])
    assert worker["terminationGracePeriodSeconds"] >= grace_s + 15


def test_routers_scale_on_queue_depth_and_the_cpu_bound_roles_on_cpu() -> None:
    objects = rendered("base")
    (scaled,) = _named(objects, "ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] == "aisf-router"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and "aisf_queue_depth" in trigger["metadata"]["query"]
    assert 'component="router"' in trigger["metadata"]["query"]
    targets = {
        h["spec"]["scaleTargetRef"]["name"] for h in _named(objects, "HorizontalPodAutoscaler").values()
    }
    assert targets == {"aisf-gateway", "aisf-job", "aisf-feature", "aisf-pii", "aisf-worker", "aisf-envoy"}
    scrape = (K8S.parent / "prometheus" / "prometheus-kubernetes.yml").read_text()
    assert "__meta_kubernetes_pod_label_app_kubernetes_io_component" in scrape  # the label the query uses


def test_dev_brings_its_stores_and_prod_keeps_secrets_out_of_git() -> None:
    dev, prod = rendered("overlays/dev"), rendered("overlays/prod")
    assert {"aisf-postgres", "aisf-redis", "aisf-temporal", "aisf-minio"} <= set(_named(dev, "Deployment"))
    assert "aisf-secrets" in _named(dev, "Secret")
    assert _named(prod, "Secret") == {}
    assert _named(prod, "Deployment")["aisf-router"]["spec"]["replicas"] == 3
    prod_config = _named(prod, "ConfigMap")["aisf-config"]["data"]
    assert prod_config["AISF_TEMPORAL_ADDRESS"].startswith("temporal-frontend.")


def test_the_envoy_bootstrap_is_what_the_cli_writes_and_envoy_accepts_it() -> None:
    path = K8S / "base" / "envoy-bootstrap.yaml"
    assert path.read_text() == bootstrap_yaml("aisf-control-plane:8001", "envoy", 9901, "0.0.0.0"), (
        "regenerate: aisf mesh envoy-bootstrap --xds aisf-control-plane:8001 --node-id envoy "
        "--admin-host 0.0.0.0 > deploy/k8s/base/envoy-bootstrap.yaml"
    )
    checked = subprocess.run(
        [str(BIN / "envoy"), "--mode", "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0 and f"configuration '{path}' OK" in checked.stdout + checked.stderr
