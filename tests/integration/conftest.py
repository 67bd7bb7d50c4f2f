"""The server most integration modules want: `aisf serve --role all` over the module's own `models`
repository (with the module's `server_env`), and a REST client of it. A module with other needs
defines its own `server`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import AisfProcess, running_aisf


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    return {}


@pytest.fixture(scope="module")
def server(
    models: Path, server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AisfProcess]:
    with running_aisf(models, tmp_path_factory.mktemp("data"), env=server_env) as process:
        yield process


@pytest.fixture(scope="module")
def rest(server: AisfProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=60) as client:
        yield client
