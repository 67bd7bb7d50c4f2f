"""Shared fixtures: the sample repository (built once) and a real aisf server over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aisf.services.samples import build_samples
from tests.support.models import build_test_models
from tests.support.processes import AisfProcess, running_aisf


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
