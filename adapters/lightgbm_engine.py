"""LightGBM in process: a text model file, predicted on a worker thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import numpy.typing as npt

from aisf.adapters.tabular import TabularAdapter


class LightGBMAdapter(TabularAdapter):
    platform = "lightgbm"
    default_model_file = "model.txt"

    def _load_model(self, path: Path) -> tuple[Any, int, int]:
        booster = lightgbm.Booster(model_file=str(path))
        probe = booster.predict(np.zeros((1, booster.num_feature()), dtype=np.float32), num_threads=1)
        return booster, booster.num_feature(), int(np.asarray(probe).reshape(1, -1).shape[1])

    def _predict(self, model: Any, features: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
        return np.asarray(model.predict(features, num_threads=1))
