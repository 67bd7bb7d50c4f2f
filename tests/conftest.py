"""Shared fixtures: the sample repository (built once) and a real aisf server over it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import prometheus_client  # noqa: F401  (before any feast import: see feast_keeps_its_metrics_folder_to_itself)
import pytest

from aisf.services.samples import build_samples
from tests.support.models import build_test_models
from tests.support.processes import AisfProcess, running_aisf
from tests.support.temporal import TemporalServer, running_temporal


@pytest.fixture(scope="session", autouse=True)
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalServer]:
    """One real Temporal for the session; every aisf the tests start uses it (through the environment)
    with task queues of its own, so no two servers' workers take each other's jobs."""
    with running_temporal(tmp_path_factory.mktemp("temporal")) as server:
        os.environ["AISF_TEMPORAL_ADDRESS"] = server.address
        yield server
        os.environ.pop("AISF_TEMPORAL_ADDRESS", None)


@pytest.fixture(scope="session")
def sample_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample models plus small test models (BYTES, FP16); read-only for every test."""
    repository = tmp_path_factory.mktemp("models")
    build_samples(repository)
    build_test_models(repository)
    return repository


@pytest.fixture(scope="session")
def aisf_server(sample_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AisfProcess]:
    """One `aisf serve --role all` over the sample models, shared by tests that only read state."""
    with running_aisf(sample_repository, tmp_path_factory.mktemp("data")) as server:
        yield server


@pytest.fixture(scope="session", autouse=True)
def feast_keeps_its_metrics_folder_to_itself() -> None:
    """Test modules import feast directly; its metrics module points PROMETHEUS_MULTIPROC_DIR at a temp
    folder, which the aisf servers these tests start must not inherit (aisf undoes it the same way); and
    had prometheus_client not been imported first, this process's metrics would have moved to files."""
    for name in ("PROMETHEUS_MULTIPROCESS_DIR", "PROMETHEUS_MULTIPROC_DIR"):
        if "feast_metrics_" in os.environ.get(name, ""):
            os.environ.pop(name)
