"""config.yaml is validated once, with errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from aisf.services.common.errors import ModelLoadFailed
from aisf.services.common.model_config import VersionPolicy, load_model_config


def _write(tmp_path: Path, text: str, name: str = "m") -> Path:
    model_dir = tmp_path / name
    model_dir.mkdir()
    (model_dir / "config.yaml").write_text(text)
    return model_dir


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "backend: xgboost\ninputs: [{name: a, datatype: FP99, dims: [4]}]\n",
            "inputs.0: Value error, datatype 'FP99'",
        ),
        ("backend: xgboost\ndynamic_batching: {}\n", "dynamic_batching needs max_batch_size > 0"),
        ("backend: xgboost\nmax_batch_size: -1\n", "max_batch_size"),
        ("backend: xgboost\nversion_policy: {latest: 1, all: true}\n", "version_policy"),
        ("backend: xgboost\nname: other\n", "names 'other', must match its directory"),
        ("max_batch_size: 1\n", "backend: Field required"),
        ("backend: [unclosed\n", "not valid YAML"),
        ("- a list\n", "must be a mapping"),
    ],
)
def test_invalid_config_names_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ModelLoadFailed, match=message):
        load_model_config(_write(tmp_path, text))


def test_missing_config_is_a_load_failure(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelLoadFailed, match="config.yaml is missing"):
        load_model_config(tmp_path / "m")


@pytest.mark.parametrize(
    ("policy", "chosen"),
    [
        (VersionPolicy(), [5]),
        (VersionPolicy(latest=2), [3, 5]),
        (VersionPolicy(all=True), [1, 3, 5]),
        (VersionPolicy(specific=[1, 4]), [1]),
    ],
)
def test_version_policy_selects_versions(policy: VersionPolicy, chosen: list[int]) -> None:
    assert policy.select([1, 3, 5]) == chosen
