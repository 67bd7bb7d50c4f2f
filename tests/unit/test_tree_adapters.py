"""The in-process tree engines answer exactly as their libraries do, through the repository."""

from __future__ import annotations

from pathlib import Path

import lightgbm
import numpy as np
import yaml

from aisf.adapters.registry import AdapterRegistry
from aisf.services.common.db.engine import open_database
from aisf.services.common.db.model_store import ModelStore
from aisf.services.common.tensors import InferRequest, Tensor
from aisf.services.router.repository import ModelRepository
from aisf.services.samples import tabular_training_data


async def test_lightgbm_model_serves_its_own_predictions(tmp_path: Path) -> None:
    features, labels = tabular_training_data()
    booster = lightgbm.train(
        {"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1},
        lightgbm.Dataset(features, labels),
        num_boost_round=5,
    )
    model_dir = tmp_path / "models" / "gbm"
    (model_dir / "1").mkdir(parents=True)
    booster.save_model(str(model_dir / "1" / "model.txt"))
    (model_dir / "config.yaml").write_text(yaml.safe_dump({"backend": "lightgbm", "max_batch_size": 16}))
    engine = open_database(f"sqlite:///{tmp_path / 'meta.db'}")
    repository = ModelRepository(tmp_path / "models", AdapterRegistry.from_entry_points(), ModelStore(engine))
    await repository.load("gbm")
    model = repository.get("gbm")
    assert [(t.name, t.datatype, t.shape) for t in model.inputs] == [("input__0", "FP32", (-1, 4))]
    rows = features[:5]
    request = InferRequest("gbm", "", [Tensor.from_numpy("input__0", rows)])
    response, _ = await model.executor.execute(request, 5)
    np.testing.assert_allclose(response.outputs[0].data[:, 0], booster.predict(rows), rtol=1e-6)
    await repository.close()
    engine.close()
