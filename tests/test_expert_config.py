"""The expert's structured config: schema defaults, conf/expert.yaml, overrides."""

from __future__ import annotations

import pytest
from omegaconf.errors import ConfigKeyError, ValidationError

from carla_bridge.config import CONF_DIR, load_config
from experts.config import ExpertConfig, load_expert_config


def test_yaml_mirrors_the_schema_defaults():
    # conf/expert.yaml states every default with its unit; loading it changes nothing
    assert (CONF_DIR / "expert.yaml").exists()
    assert load_config(ExpertConfig, "expert") == ExpertConfig()


def test_dotlist_overrides_reach_nested_fields():
    cfg = load_expert_config(["idm.max_accel_mps2=1.5", "forecast.graded_decels_mps2=[2.0,5.0]"])
    assert cfg.idm.max_accel_mps2 == 1.5
    assert cfg.forecast.graded_decels_mps2 == [2.0, 5.0]


def test_unknown_key_and_wrong_type_are_rejected():
    with pytest.raises(ConfigKeyError):
        load_expert_config(["idm.max_acceleration=1.5"])
    with pytest.raises(ValidationError):
        load_expert_config(["idm.max_accel_mps2=fast"])
