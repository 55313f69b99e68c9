"""Imitation loss: hand-computed terms, sample weights, errors, and that it fits a batch."""

from __future__ import annotations

import math

import pytest
import torch

from carla_bridge.bev import BevConfig
from takeover.losses import ImitationWeights, LossInputError, imitation_loss
from takeover.policy import PolicyConfig, PolicyFeatures
from takeover.policy.config import ModelConfig
from takeover.policy.distributions import PlanDistribution
from takeover.policy.model import build_model


def uniform_dist(b: int = 2, k: int = 2, scale: float = 2.0, speed: float = 3.0) -> PlanDistribution:
    # mu = 0, Laplace scale b = 2, Beta(1, 1) controls (uniform), speed head says 3 m/s
    return PlanDistribution(
        traj_loc=torch.zeros(b, k, 2),
        traj_log_scale=torch.full((b, k, 2), math.log(scale)),
        control_alpha=torch.ones(b, 2),
        control_beta=torch.ones(b, 2),
        speed=torch.full((b,), speed),
    )


def test_terms_by_hand():
    # Given targets 1 m off on every coordinate, any control, and true speed 1 m/s
    dist = uniform_dist()
    weights = ImitationWeights(waypoint_l1=1.0, waypoint_nll=0.5, control_nll=1.0, speed=0.05)
    loss, m = imitation_loss(
        dist, torch.ones(2, 2, 2), torch.tensor([[0.3, 0.1, 0.0], [0.0, -0.5, 0.8]]), weights, torch.ones(2)
    )
    # Then: L1 = 1; Laplace NLL per coordinate = 1/2 + log(2*2); uniform Beta on [-1, 1] has NLL log 2 per dim;
    # speed error |3 - 1| = 2
    l1, nll, ctrl, speed = 1.0, 0.5 + math.log(4.0), math.log(2.0), 2.0
    assert m["waypoint_l1"] == pytest.approx(l1)
    assert m["waypoint_nll"] == pytest.approx(nll)
    assert m["control_nll"] == pytest.approx(ctrl, abs=1e-6)
    assert m["speed_l1"] == pytest.approx(speed)
    assert m["ade_m"] == pytest.approx(math.sqrt(2.0)) and m["fde_m"] == pytest.approx(math.sqrt(2.0))
    assert float(loss) == pytest.approx(l1 + 0.5 * nll + ctrl + 0.05 * speed, rel=1e-6)
    assert m["loss"] == pytest.approx(float(loss))


def test_sample_weights_and_optional_terms():
    dist = uniform_dist()
    target = torch.stack([torch.ones(2, 2), torch.full((2, 2), 3.0)])  # L1 of 1 and 3
    w = ImitationWeights(waypoint_l1=1.0, waypoint_nll=0.0, control_nll=0.0, speed=0.0)
    loss, m = imitation_loss(dist, target, None, w, sample_weight=torch.tensor([3.0, 1.0]))
    assert float(loss) == pytest.approx((3 * 1 + 1 * 3) / 4)
    assert "control_nll" not in m and "speed_l1" not in m
    loss, _ = imitation_loss(dist, target, None, w)
    assert float(loss) == pytest.approx(2.0)


def test_bad_inputs():
    dist = uniform_dist()
    w = ImitationWeights()
    with pytest.raises(LossInputError, match="target_waypoints"):
        imitation_loss(dist, torch.zeros(2, 3, 2), None, w)
    with pytest.raises(LossInputError, match="target_control"):
        imitation_loss(dist, None, torch.zeros(2, 2), w)
    with pytest.raises(LossInputError, match="and/or"):
        imitation_loss(dist, None, None, w)
    with pytest.raises(LossInputError, match="sample_weight"):
        imitation_loss(dist, torch.zeros(2, 2, 2), None, w, sample_weight=torch.zeros(2))


def test_gradient_steps_fit_a_batch():
    # Given a small network and one batch of expert labels
    torch.manual_seed(0)
    config = PolicyConfig(
        bev=BevConfig(size_px=32, ego_forward_offset_m=4.0, channels=["drivable", "vehicles"]),
        model=ModelConfig(
            encoder_channels=[8, 16], feature_dim=32, measurement_dim=16, fused_dim=32, gru_hidden=16
        ),
    )
    model = build_model(config)
    b = 8
    feats = PolicyFeatures(
        torch.rand(b, 2, 32, 32),
        torch.rand(b) * 8,
        torch.randn(b, 2) * 10,
        torch.eye(6)[torch.randint(0, 6, (b,))],
    )
    speed = torch.linspace(0.0, 8.0, b)
    waypoints = torch.stack([torch.arange(1, 9) * 0.5 * s for s in speed])
    target_wp = torch.stack([waypoints, torch.zeros_like(waypoints)], dim=-1)
    target_ctrl = torch.stack([torch.full((b,), 0.5), torch.zeros(b), torch.zeros(b)], dim=-1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    # When trained on it for a few steps
    for _ in range(40):
        loss, m = imitation_loss(
            model(feats), target_wp, target_ctrl, ImitationWeights(), target_speed=feats.speed
        )
        first = first if first is not None else m
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Then every term went down
    assert m["loss"] < 0.5 * first["loss"]
    assert m["ade_m"] < 0.5 * first["ade_m"]
    assert m["control_nll"] < first["control_nll"]
