"""The model repository loads, versions, unloads and records history in SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from aisf.adapters.registry import AdapterRegistry
from aisf.services.common.db.engine import Database, open_database
from aisf.services.common.db.model_store import EventKind, ModelStore
from aisf.services.common.errors import (
    EngineUnavailable,
    InvalidInput,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotReady,
)
from aisf.services.common.tensors import InferRequest, Tensor
from aisf.services.router.repository import ModelRepository, ModelState
from aisf.services.samples import build_tabular_demo
from tests.support.databases import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with fresh_database(request.param, tmp_path) as url:
        database = open_database(url)
        yield database
        database.close()


@pytest.fixture
def repository_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    build_tabular_demo(root)
    broken = root / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.yaml").write_text("backend: xgboost\nmax_batch_size: 4\n")
    return root


def _repository(root: Path, database: Database) -> ModelRepository:
    return ModelRepository(root, AdapterRegistry.from_entry_points(), ModelStore(database))


def _infer(repository: ModelRepository, version: str = "") -> str:
    model = repository.get("tabular-demo", version)
    return str(model.version)


async def test_a_model_that_fails_to_load_leaves_the_others_serving(
    repository_dir: Path, database: Database
) -> None:
    repository = _repository(repository_dir, database)
    await repository.load_all()
    states = {(e.name, e.state) for e in repository.index()}
    assert states == {("tabular-demo", ModelState.READY), ("broken", ModelState.UNAVAILABLE)}
    broken = next(e for e in repository.index() if e.name == "broken")
    assert "model.json not found" in broken.reason
    with pytest.raises(ModelNotReady, match="broken"):
        repository.get("broken")
    events = await ModelStore(database).events()
    assert {(e.name, e.kind) for e in events} == {
        ("tabular-demo", EventKind.LOADED),
        ("broken", EventKind.LOAD_FAILED),
    }
    await repository.close()


async def test_unload_then_load_is_recorded_newest_first(repository_dir: Path, database: Database) -> None:
    repository = _repository(repository_dir, database)
    await repository.load("tabular-demo")
    await repository.unload("tabular-demo")
    with pytest.raises(ModelNotReady, match="unloaded"):
        repository.get("tabular-demo")
    await repository.load("tabular-demo")
    store = ModelStore(database)
    kinds = [e.kind for e in await store.events("tabular-demo")]
    assert kinds == [EventKind.LOADED, EventKind.UNLOADED, EventKind.LOADED]
    first_page = await store.events("tabular-demo", limit=2)
    rest = await store.events("tabular-demo", limit=2, before_id=first_page[-1].id)
    assert [e.kind for e in first_page + rest] == kinds
    await repository.close()


async def test_version_policy_latest_serves_the_newest_versions(
    repository_dir: Path, database: Database
) -> None:
    model_dir = repository_dir / "tabular-demo"
    for version in ("2", "3"):
        shutil.copytree(model_dir / "1", model_dir / version)
    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    config["version_policy"] = {"latest": 2}
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config))
    repository = _repository(repository_dir, database)
    await repository.load("tabular-demo")
    assert _infer(repository) == "3"
    assert _infer(repository, "2") == "2"
    with pytest.raises(ModelNotFound, match="no ready version 1"):
        repository.get("tabular-demo", "1")
    with pytest.raises(InvalidInput, match="version 'x'"):
        repository.get("tabular-demo", "x")
    await repository.close()


async def test_unknown_model_is_not_found(repository_dir: Path, database: Database) -> None:
    repository = _repository(repository_dir, database)
    with pytest.raises(ModelNotFound, match="unknown model 'nope'"):
        repository.get("nope")
    with pytest.raises(ModelNotFound):
        await repository.load("../etc")


async def test_a_failed_reload_keeps_the_loaded_version_serving(
    repository_dir: Path, database: Database
) -> None:
    repository = _repository(repository_dir, database)
    await repository.load("tabular-demo")
    config_path = repository_dir / "tabular-demo" / "config.yaml"
    config_path.write_text(config_path.read_text() + "unknown_field: 1\n")
    with pytest.raises(ModelLoadFailed, match="unknown_field"):
        await repository.load("tabular-demo")
    model = repository.get("tabular-demo")
    features = Tensor.from_numpy("input__0", np.zeros((1, 4), np.float32))
    response, _ = await model.executor.execute(InferRequest("tabular-demo", "", [features]), 1)
    assert response.outputs[0].shape == (1, 1)
    await repository.close()


def test_unreachable_database_is_one_clear_error() -> None:
    with pytest.raises(EngineUnavailable, match="unreachable") as raised:
        open_database("postgresql://nobody@127.0.0.1:1/none")
    assert "\n" not in raised.value.message
