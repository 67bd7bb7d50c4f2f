"""Tenants and API keys made the way an operator makes them: `aisf tenants|keys` on the data dir."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.processes import AISF


def aisf_admin(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [AISF, *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"aisf {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


def create_key(
    data_dir: Path, tenant: str, roles: str = "infer", models: str = "", tier: str = "standard"
) -> str:
    """A new key of `tenant` (made first, at `tier`, if it does not exist)."""
    listed = aisf_admin(data_dir, "tenants", "list")
    if not any(line.split()[0] == tenant for line in listed.splitlines() if line.strip()):
        aisf_admin(data_dir, "tenants", "create", tenant, "--tier", tier)
    printed = aisf_admin(data_dir, "keys", "create", "--tenant", tenant, "--roles", roles, "--models", models)
    return printed.strip().splitlines()[-1]


def key_id(key: str) -> str:
    return key.split("_")[1]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}
