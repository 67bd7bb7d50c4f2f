"""The `aisf` command: serve a role, start the embedded default, build the sample models."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from pydantic import ValidationError

from aisf import __version__
from aisf.services import admin_cli
from aisf.services.common.errors import AisfError
from aisf.services.common.logging import configure_logging
from aisf.services.common.settings import Role, Settings
from aisf.services.edge.nginx import EdgeConfig, render
from aisf.services.feature import repo_tools

if TYPE_CHECKING:
    from aisf.services.runtime import Endpoints


def _serve_flags(parser: argparse.ArgumentParser, roles: bool) -> None:
    if roles:
        parser.add_argument("--role", choices=get_args(Role), default="all")
    parser.add_argument(
        "--model-repository", type=Path, help="models/<name>/config.yaml folder (AISF_MODEL_REPOSITORY)"
    )
    parser.add_argument("--host", help="bind address (AISF_HOST, default 0.0.0.0)")
    parser.add_argument("--http-port", type=int, help="REST port (AISF_HTTP_PORT, default 8000)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (AISF_GRPC_PORT, default 8001)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (AISF_METRICS_PORT, default 8002)")
    parser.add_argument(
        "--data-dir", type=Path, help="embedded database and sockets (AISF_DATA_DIR, default .aisf)"
    )
    parser.add_argument(
        "--router-address", help="router gRPC target for --role gateway (AISF_ROUTER_ADDRESS)"
    )
    parser.add_argument(
        "--edge",
        action="store_true",
        default=None,
        help="start nginx in front: TLS, rate limits, CORS on AISF_EDGE_PORT (8443) (AISF_EDGE)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aisf", description="AI Serving Foundation")
    parser.add_argument("--version", action="version", version=f"aisf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _serve_flags(commands.add_parser("serve", help="run one role, or every role in one process"), roles=True)
    _serve_flags(
        commands.add_parser(
            "up", help="the embedded default: sample models (built if missing) and every role"
        ),
        roles=False,
    )
    models = commands.add_parser("models", help="model repository tools").add_subparsers(
        dest="action", required=True
    )
    samples = models.add_parser(
        "build-samples", help="write the sample models (trained/exported on the spot)"
    )
    samples.add_argument("directory", type=Path)
    samples.add_argument(
        "--features", type=Path, help="also write the sample Feast repository here, and recsys-demo"
    )
    export = models.add_parser(
        "export-triton", help="write a Triton model config (FIL backend) for a tree model of the repository"
    )
    export.add_argument("model", type=Path, help="the model's folder (models/<name>)")
    export.add_argument("--output", type=Path, help="Triton model folder to write (default: print)")
    features = commands.add_parser("features", help="Feast feature repository tools").add_subparsers(
        dest="action", required=True
    )
    for action, text in (
        ("apply", "register the repository's definitions (Feast apply)"),
        ("materialize", "load the offline sources into the online store"),
    ):
        command = features.add_parser(action, help=text)
        command.add_argument(
            "--repo", type=Path, help="the feature repository (AISF_FEATURE_REPO, default .aisf/features)"
        )
        if action == "materialize":
            command.add_argument("--start", type=_timestamp, help="ISO 8601 start (UTC if naive)")
            command.add_argument("--end", type=_timestamp, help="ISO 8601 end (default: now)")
            command.add_argument("--incremental", action="store_true", help="since the last materialization")
    admin_cli.add_commands(commands)
    edge = commands.add_parser("edge", help="the nginx edge").add_subparsers(dest="action", required=True)
    config = edge.add_parser(
        "config", help="print the nginx config for an edge of its own (limits from AISF_EDGE_* settings)"
    )
    config.add_argument("--gateway", required=True, help="host:port of the gateway's REST port")
    config.add_argument("--router", required=True, help="host:port of the router's gRPC port")
    config.add_argument("--cert", type=Path, required=True, help="PEM certificate chain")
    config.add_argument("--key", type=Path, required=True, help="PEM private key")
    config.add_argument("--prefix", type=Path, default=Path("/var/lib/aisf-edge"), help="nginx's own folder")
    mesh = commands.add_parser("mesh", help="Envoy and the xDS control plane").add_subparsers(
        dest="action", required=True
    )
    envoy = mesh.add_parser(
        "envoy-bootstrap", help="print the bootstrap of an Envoy fed by the control plane"
    )
    envoy.add_argument("--xds", required=True, help="host:port of the control plane's gRPC port")
    envoy.add_argument("--node-id", default="envoy", help="this Envoy's node id (one per Envoy)")
    envoy.add_argument("--admin-port", type=int, default=9901, help="Envoy's admin port")
    envoy.add_argument("--admin-host", default="127.0.0.1", help="Envoy's admin address")
    return parser


def _timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _settings(args: argparse.Namespace) -> Settings:
    names = (
        "model_repository",
        "host",
        "http_port",
        "grpc_port",
        "metrics_port",
        "data_dir",
        "router_address",
        "edge",
    )
    overrides: dict[str, Any] = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return Settings(**overrides)


def _announce(endpoints: Endpoints) -> None:
    print(endpoints.describe(), flush=True)
    print("Ctrl-C stops it.", flush=True)


# The servers, the sample builders (xgboost, torch) and the exporters import in seconds: each command
# imports what it runs, so `aisf keys list` does not pay for `aisf serve`.


def _serve(settings: Settings, role: str) -> None:
    from aisf.services.runtime import run

    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(run(settings, role, _announce))  # type: ignore[arg-type]


def _models(args: argparse.Namespace) -> int:
    from aisf.services.samples import build_samples
    from aisf.services.triton_export import triton_config_text, write_triton_model

    if args.action == "export-triton":
        text = triton_config_text(args.model)
        if args.output is None:
            print(text, end="")
        else:
            print(f"wrote {write_triton_model(args.model, args.output)}")
        return 0
    for path in build_samples(args.directory, args.features):
        print(f"wrote {path}")
    return 0


def _edge_config(args: argparse.Namespace) -> int:
    settings = Settings()
    config = EdgeConfig(
        f"{settings.host}:{settings.edge_port}", args.gateway, args.router, args.prefix, args.cert, args.key
    )
    print(render(settings, config), end="")
    return 0


def _mesh(args: argparse.Namespace) -> int:
    from aisf.services.mesh.envoy_bootstrap import bootstrap_yaml

    print(bootstrap_yaml(args.xds, args.node_id, args.admin_port, args.admin_host), end="")
    return 0


def _prepare_features(repo: Path | None) -> None:
    """The embedded default's feature repository, registered and loaded once."""
    if (
        repo is None
        or not (repo / "feature_store.yaml").is_file()
        or (repo / "data" / "registry.db").is_file()
    ):
        return
    print(f"registering and materializing the sample features in {repo}", flush=True)
    repo_tools.apply(repo)
    repo_tools.materialize(repo, datetime(2000, 1, 1, tzinfo=UTC), None, incremental=False)


def _features(args: argparse.Namespace) -> int:
    repo = args.repo or Settings().feature_repo or Path(".aisf/features")
    if args.action == "apply":
        repo_tools.apply(repo)
        print(f"applied {repo}")
    else:
        repo_tools.materialize(repo, args.start, args.end, args.incremental)
        print(f"materialized {repo}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "models":
            return _models(args)
        if args.command == "features":
            return _features(args)
        if args.command in ("tenants", "keys"):
            return admin_cli.run(args)
        if args.command == "edge":
            return _edge_config(args)
        if args.command == "mesh":
            return _mesh(args)
        settings = _settings(args)
        if args.command == "up":
            if args.model_repository is None and "AISF_MODEL_REPOSITORY" not in os.environ:
                settings = settings.model_copy(update={"model_repository": settings.data_dir / "models"})
            if settings.feature_repo is None:
                settings = settings.model_copy(update={"feature_repo": settings.data_dir / "features"})
            if not any(settings.model_repository.glob("*/config.yaml")):
                from aisf.services.samples import build_samples

                print(f"building sample models in {settings.model_repository}", flush=True)
                build_samples(settings.model_repository, settings.feature_repo)
            _prepare_features(settings.feature_repo)
            admin_cli.first_admin_key(settings)
            _serve(settings, "all")
        else:
            _serve(settings, args.role)
    except ValidationError as exc:
        print(f"aisf: invalid settings: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    except AisfError as exc:
        print(f"aisf: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, RuntimeError) as exc:
        print(f"aisf: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
