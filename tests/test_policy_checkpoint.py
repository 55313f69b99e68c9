"""Checkpoints: round trip, sha256, atomic write, and one clear error per kind of bad file."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from carla_bridge.bev import BevConfig
from takeover.policy import (
    CheckpointError,
    HybridPolicy,
    PolicyConfig,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
)
from takeover.policy.config import ModelConfig
from takeover.policy.features import PolicyFeatures
from takeover.policy.model import build_model


def small_config() -> PolicyConfig:
    return PolicyConfig(
        bev=BevConfig(size_px=32, ego_forward_offset_m=4.0, channels=["drivable", "route", "vehicles"]),
        model=ModelConfig(
            encoder_channels=[8, 16], feature_dim=32, measurement_dim=16, fused_dim=32, gru_hidden=16
        ),
        device="cpu",
    )


def features(batch: int = 2) -> PolicyFeatures:
    g = torch.Generator().manual_seed(0)
    return PolicyFeatures(
        torch.rand(batch, 3, 32, 32, generator=g),
        torch.rand(batch, generator=g) * 10,
        torch.randn(batch, 2, generator=g) * 10,
        torch.nn.functional.one_hot(torch.tensor([3] * batch), 6).float(),
    )


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module, PolicyConfig, str]:
    torch.manual_seed(1)
    config = small_config()
    model = build_model(config)
    path = tmp_path / "ckpt" / "policy.pt"
    digest = save_checkpoint(
        path, model, config, {"iteration": 3, "metrics": {"ds": 41.5}, "tags": ["dagger"]}
    )
    return path, model, config, digest


def test_round_trip_restores_weights_config_and_extra(saved):
    path, model, config, digest = saved
    loaded, loaded_config, extra = load_checkpoint(path)
    assert loaded_config == config
    assert extra == {"iteration": 3, "metrics": {"ds": 41.5}, "tags": ["dagger"]}
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(features()).traj_loc, model(features()).traj_loc, rtol=0, atol=0)
    # The digest is the file's sha256 and no temp file is left beside it
    assert digest == file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in path.parent.iterdir()] == ["policy.pt"]


def test_policy_from_checkpoint_with_driving_overrides(saved):
    path, _, config, _ = saved
    policy, extra = HybridPolicy.from_checkpoint(
        path, replace(config, perception_noise=replace(config.perception_noise, enabled=True))
    )
    assert policy.config.perception_noise.enabled and extra["iteration"] == 3
    with pytest.raises(CheckpointError, match=r"bev.size_px: checkpoint 32 vs expected 64"):
        HybridPolicy.from_checkpoint(
            path, replace(config, bev=replace(config.bev, size_px=64, ego_forward_offset_m=4.0))
        )


def test_policy_save_returns_digest(tmp_path: Path):
    policy = HybridPolicy(small_config())
    digest = policy.save(tmp_path / "p.pt", {"note": "x"})
    assert digest == file_sha256(tmp_path / "p.pt")


def test_missing_file(tmp_path: Path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


def test_truncated_file_is_corrupt(saved):
    path = saved[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or not a torch file"):
        load_checkpoint(path)


def test_text_file_is_corrupt(tmp_path: Path):
    path = tmp_path / "x.pt"
    path.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match="corrupt or not a torch file"):
        load_checkpoint(path)


def test_other_torch_file_is_not_a_policy_checkpoint(tmp_path: Path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a takeover policy checkpoint"):
        load_checkpoint(path)


def _rewrite(path: Path, edit) -> None:
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)


def test_config_that_does_not_fit_the_schema(saved):
    path = saved[0]
    _rewrite(path, lambda p: p["config"]["model"].update(num_heads=4))
    with pytest.raises(CheckpointError, match="does not fit this version's PolicyConfig"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_config(saved):
    path = saved[0]
    _rewrite(path, lambda p: p["config"]["model"].update(gru_hidden=24))
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(path)


def test_missing_weight_tensor(saved):
    path = saved[0]
    _rewrite(path, lambda p: p["state_dict"].pop("speed_head.0.weight"))
    with pytest.raises(CheckpointError, match=r"speed_head\.0\.weight"):
        load_checkpoint(path)


def test_unsafe_extra_is_refused_at_save(tmp_path: Path):
    config = small_config()
    with pytest.raises(CheckpointError, match=r"extra.bad is a object"):
        save_checkpoint(tmp_path / "p.pt", build_model(config), config, {"bad": object()})
    assert not list(tmp_path.iterdir())


def test_device_of_the_writer_does_not_matter(saved):
    path = saved[0]
    _rewrite(path, lambda p: p["config"].update(device="cuda:3"))
    _, config, _ = load_checkpoint(path)
    assert config.device == "cuda:3"
