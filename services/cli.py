"""The `aisf` command: serve a role, start the embedded default, build the sample models."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from aisf import __version__
from aisf.services.common.errors import AisfError
from aisf.services.common.logging import configure_logging
from aisf.services.common.settings import Role, Settings
from aisf.services.runtime import Endpoints, run
from aisf.services.samples import build_samples


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
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    names = (
        "model_repository",
        "host",
        "http_port",
        "grpc_port",
        "metrics_port",
        "data_dir",
        "router_address",
    )
    overrides: dict[str, Any] = {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
    return Settings(**overrides)


def _announce(endpoints: Endpoints) -> None:
    print(endpoints.describe(), flush=True)
    print("Ctrl-C stops it.", flush=True)


def _serve(settings: Settings, role: str) -> None:
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(run(settings, role, _announce))  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "models":
            for path in build_samples(args.directory):
                print(f"wrote {path}")
            return 0
        settings = _settings(args)
        if args.command == "up":
            if args.model_repository is None and "AISF_MODEL_REPOSITORY" not in os.environ:
                settings = settings.model_copy(update={"model_repository": settings.data_dir / "models"})
            if not any(settings.model_repository.glob("*/config.yaml")):
                print(f"building sample models in {settings.model_repository}", flush=True)
                build_samples(settings.model_repository)
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
