"""prefect.yaml's deployments name flows that exist, with parameters those flows take."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.serve import NIGHTLY_CRON, NIGHTLY_PARAMETERS

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"
DEPLOYMENTS: list[dict[str, Any]] = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]


def entrypoint(deployment: dict[str, Any]) -> Any:
    module, name = deployment["entrypoint"].split(":")
    return getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), name)


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: f"{d['entrypoint']}/{d['name']}")
def test_every_deployment_parameter_is_a_parameter_of_its_flow(deployment: dict[str, Any]):
    flow = entrypoint(deployment)
    accepted = set(inspect.signature(flow.fn).parameters)
    unknown = set(deployment.get("parameters") or {}) - accepted
    assert not unknown, f"{deployment['entrypoint']} takes no parameter {sorted(unknown)}"


def test_the_served_nightly_matches_prefect_yaml():
    (nightly,) = [d for d in DEPLOYMENTS if d["name"] == "nightly"]
    assert nightly["schedules"][0]["cron"] == NIGHTLY_CRON
    for key, value in NIGHTLY_PARAMETERS.items():
        assert nightly["parameters"][key] == value
