"""conf/carla.yaml and agent config files: the schema loads, bad values are one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from carla_bridge.carla_client.config import (
    AgentConfig,
    CarlaConfig,
    CarlaConfigError,
    load_agent_config,
    load_carla_config,
    write_agent_config,
)
from carla_bridge.config import CONF_DIR
from carla_bridge.simulator import FIXED_DELTA_S


def test_yaml_mirrors_the_schema():
    # every key of conf/carla.yaml is a schema field and vice versa (a typo would silently be ignored)
    schema = OmegaConf.to_container(OmegaConf.structured(CarlaConfig))
    yaml = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "carla.yaml"))

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict) and k != "roles":
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(yaml) == keys(schema)
    assert load_carla_config().world.fixed_delta_s == FIXED_DELTA_S


def test_environment_overrides_configure_a_container(monkeypatch):
    monkeypatch.setenv(
        "TAKEOVER_CARLA_OVERRIDES", "server.gpus=[0,1] server.external_hosts=[carla-0,carla-1]"
    )
    cfg = load_carla_config(["client.port=2010"])
    assert cfg.server.gpus == [0, 1] and cfg.server.external_hosts == ["carla-0", "carla-1"]
    assert cfg.client.port == 2010


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["server.port_stride=2"], "share ports"),
        (["server.gpus=[]"], "at least one GPU"),
        (["server.gpus=[0,1]", "server.external_hosts=[a]"], "one host per server"),
        (["client.timeout_s=0"], "client.timeout_s=0.0 must be positive"),
        (["agent.ego_source=lidar"], "ego_source"),
        (["client.port=two"], "invalid"),
    ],
)
def test_bad_values_are_one_clear_error(overrides, match):
    with pytest.raises(CarlaConfigError, match=match):
        load_carla_config(overrides)


def test_agent_config_file_round_trip(tmp_path: Path):
    path = write_agent_config(
        AgentConfig(policy="policy:/ckpt.pt", route_id="2003", iteration=4), tmp_path / "a.yaml"
    )
    loaded = load_agent_config(path)
    assert (loaded.policy, loaded.route_id, loaded.iteration, loaded.mode) == (
        "policy:/ckpt.pt",
        "2003",
        4,
        "takeover",
    )


def test_missing_or_broken_agent_config_names_the_file(tmp_path: Path):
    with pytest.raises(CarlaConfigError, match="does not exist"):
        load_agent_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("speed_sensor_hz: often\n")
    with pytest.raises(CarlaConfigError, match=r"bad\.yaml is invalid"):
        load_agent_config(bad)
