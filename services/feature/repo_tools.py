"""`aisf features apply | materialize`: Feast's own apply and materialization, run on a repository."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from aisf.services.feature.catalog import repository_config
from aisf.services.feature.feast_import import import_feast
from aisf.services.feature.server import open_feature_store


def apply(repo: Path) -> None:
    """Register the repository's definitions (Feast's `feast apply`) and create its online tables."""
    repo = repo.resolve()  # Feast reads relative paths of the config against the directory it moves into
    config_path = repository_config(repo)
    import_feast()
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    # Feast imports the repository's modules by name: put it on the path for this apply only, and forget
    # its modules afterwards (a second repository's features.py must not be the cached first one).
    # Feast's apply also changes the working directory to the repository for good: put it back, or every
    # relative path after it (the data dir of `aisf up`) would resolve inside the repository.
    root = str(repo)
    cwd = os.getcwd()
    sys.path.insert(0, root)
    try:
        apply_total(load_repo_config(repo, config_path), repo, skip_source_validation=False)
    finally:
        os.chdir(cwd)
        sys.path.remove(root)
        for name, module in list(sys.modules.items()):
            if (getattr(module, "__file__", None) or "").startswith(root + "/"):
                del sys.modules[name]


def materialize(repo: Path, start: datetime | None, end: datetime | None, incremental: bool) -> None:
    """Copy the offline sources into the online store: [start, end], or since the last run (incremental)."""
    store = open_feature_store(repo)
    end = end or datetime.now(tz=UTC)
    if incremental:
        store.materialize_incremental(end_date=end)
        return
    if start is None:
        raise ValueError("materialize needs --start (or --incremental)")
    store.materialize(start_date=start, end_date=end)
