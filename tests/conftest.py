"""Shared fixtures. `../shared` (towns, dev routes) lies beside the checkout in CI; tests skip cleanly without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TAKEOVER_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "carla_maps").is_dir():
        pytest.skip(f"{SHARED} (CARLA towns, Bench2Drive dev routes) is not present")
    return SHARED


@pytest.fixture(scope="session")
def shared_maps_dir(shared_dir: Path) -> Path:
    return shared_dir / "carla_maps"


@pytest.fixture(scope="session")
def dev_routes_file(shared_dir: Path) -> Path:
    path = shared_dir / "bench2drive" / "routes_dev.xml"
    if not path.exists():
        pytest.skip(f"{path} is not present")
    return path
