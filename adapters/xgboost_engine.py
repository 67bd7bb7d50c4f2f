"""XGBoost in process (REQ-OPT-02 tabular lane): a Booster file, predicted on a worker thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost

from aisf.adapters.tabular import TabularAdapter


class XGBoostAdapter(TabularAdapter):
    platform = "xgboost"
    default_model_file = "model.json"

    def _load_model(self, path: Path) -> tuple[Any, int, int]:
        booster = xgboost.Booster()
        booster.load_model(str(path))
        # One thread per call: dynamic batching and instance_count give the parallelism.
        booster.set_param({"nthread": 1})
        probe = booster.inplace_predict(np.zeros((1, booster.num_features()), dtype=np.float32))
        per_row = int(np.asarray(probe).reshape(1, -1).shape[1])
        return booster, booster.num_features(), per_row

    def _predict(self, model: Any, features: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        return np.asarray(model.inplace_predict(features))
