"""Shared pieces of the loop's tests (imported by tests/test_flows_*.py, test_evaluate_*.py):
one Prefect test harness per test session, an untrained policy checkpoint, route files with a route
whose town does not exist, and a tiny loop config.

Import the fixtures with `from conftest_prefect import *` (tests/ is on pytest's path).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from carla_bridge.route_sets import BUILTIN_ROUTES_DIR

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

MISSING_TOWN = "Atlantis01"
BAD_ROUTE_ID = "9999"
SHORT_EPISODE_S = 4.0  # simulated seconds per episode in these tests (episode.max_time_s)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server and database for the whole session (it takes ~17 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


def write_untrained_checkpoint(path: Path) -> Path:
    """A policy checkpoint with freshly initialised weights (seeded): it drives badly, so takeovers happen."""
    import torch

    from takeover.policy import load_policy_config, save_checkpoint
    from takeover.policy.model import build_model

    torch.manual_seed(0)
    config = load_policy_config()
    save_checkpoint(path, build_model(config), config, {"kind": "policy"})
    return path


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "untrained.pt")


def write_routes_with_missing_town(path: Path, good_ids: tuple[str, ...] = ("2002",)) -> Path:
    """A route XML holding built-in eval routes `good_ids` and route 9999 in a town that does not exist."""
    tree = ET.parse(BUILTIN_ROUTES_DIR / "builtin_eval.xml")
    root = tree.getroot()
    routes = [r for r in root.findall("route") if r.get("id") in good_ids]
    for route in list(root):
        root.remove(route)
    for route in routes:
        root.append(route)
    bad = ET.fromstring(ET.tostring(routes[0]))
    bad.set("id", BAD_ROUTE_ID)
    bad.set("town", MISSING_TOWN)
    root.append(bad)
    tree.write(path, encoding="utf-8", xml_declaration=True)
    return path


def short_overrides() -> dict[str, list[str]]:
    """Episode overrides that keep closed-loop tests short."""
    return {"episode": [f"max_time_s={SHORT_EPISODE_S}"]}


def tiny_train_overrides(runs_dir: Path) -> list[str]:
    """Training rounds of a couple of steps, checkpoints under `runs_dir`, no TensorBoard."""
    items = []
    for kind in ("bc", "dagger", "dpo"):
        items += [f"{kind}.loop.max_steps=2", f"{kind}.loop.batch_size=8", f"{kind}.loop.runs_dir={runs_dir}",
                  f"{kind}.loop.tensorboard=false"]  # fmt: skip
    return items


__all__ = [
    "BAD_ROUTE_ID",
    "MISSING_TOWN",
    "prefect_harness",
    "short_overrides",
    "tiny_train_overrides",
    "untrained_checkpoint",
    "write_routes_with_missing_town",
    "write_untrained_checkpoint",
]
