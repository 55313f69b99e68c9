"""Built-in hybrid policy: features on a real town, network shapes, distributions, act()."""

from __future__ import annotations

import math

import carla
import numpy as np
import pytest
import torch

from carla_bridge.geometry import ego_to_world, world_to_ego
from carla_bridge.route import DenseRoute, RoadOption, Route
from carla_bridge.snapshot import ActorTable, Control, EgoState, Pose, RouteProgress, WorldSnapshot
from takeover.policy import HybridPolicy, PolicyActions, PolicyConfig, PolicyFeatures, collate_features
from takeover.policy.config import PolicyConfigError, load_policy_config
from takeover.policy.distributions import DistributionError
from takeover.policy.features import COMMANDS, FeatureError, command_index
from takeover.policy.hybrid import PolicyStateError
from takeover.policy.protocol import Policy

K = 8


@pytest.fixture(scope="module")
def town01(shared_maps_dir) -> carla.Map:
    return carla.Map("Town01", (shared_maps_dir / "Town01.xodr").read_text())


@pytest.fixture(scope="module")
def route(town01: carla.Map) -> Route:
    """120 m of Town01 lane, 1 m apart, by following the lane graph from one waypoint."""
    wps = [town01.generate_waypoints(50.0)[5]]
    for _ in range(120):
        wps.append(wps[-1].next(1.0)[0])
    xyz = np.array([[w.transform.location.x, w.transform.location.y, 0.0] for w in wps])
    n = len(wps)
    dense = DenseRoute(
        xyz=xyz,
        yaw=np.radians([w.transform.rotation.yaw for w in wps]),
        commands=np.full(n, int(RoadOption.LANEFOLLOW), np.int8),
        s=np.r_[0.0, np.cumsum(np.hypot(*np.diff(xyz[:, :2], axis=0).T))],
        road_id=np.array([w.road_id for w in wps], np.int32),
        lane_id=np.array([w.lane_id for w in wps], np.int32),
        in_junction=np.array([w.is_junction for w in wps]),
        speed_limit=np.full(n, 8.3, np.float32),
    )
    return Route("test", "Town01", xyz[[0, -1]], dense=dense)


def snapshot_on(route: Route, index: int, speed: float = 5.0) -> WorldSnapshot:
    d = route.dense
    assert d is not None
    pose = Pose(float(d.xyz[index, 0]), float(d.xyz[index, 1]), 0.0, float(d.yaw[index]))
    ego = EgoState(pose, np.zeros(2), speed, np.zeros(2), 0.0, np.array([2.4, 1.0, 0.8]), Control())
    progress = RouteProgress(index, float(d.s[index]), d.length_m, 0.0, int(d.commands[index]))
    return WorldSnapshot(index, index * 0.05, "Town01", ego, ActorTable.empty(), (), (), progress)


@pytest.fixture(scope="module")
def policy(route: Route, town01: carla.Map) -> HybridPolicy:
    torch.manual_seed(0)
    p = HybridPolicy(PolicyConfig())
    p.reset(route, town01)
    return p


def test_policy_implements_the_protocol(policy: HybridPolicy):
    assert isinstance(policy, Policy)
    assert policy.device.type in ("cpu", "cuda")


def test_features_target_point_and_command(policy: HybridPolicy, route: Route):
    # Given the ego on the route, 20 m before its end region
    snap = snapshot_on(route, 30)
    # When its features are built
    f = policy.features(snap)
    # Then the BEV is float in [0, 1], and the target point is the route point 20 m ahead, in the ego frame
    c = len(policy.config.bev.channels)
    assert f.bev.shape == (c, 128, 128) and f.bev.dtype == torch.float32
    assert float(f.bev.min()) >= 0.0 and float(f.bev.max()) <= 1.0 and float(f.bev.max()) == 1.0
    d = route.dense
    expected = world_to_ego(d.xyz[50, :2], snap.ego.pose)
    np.testing.assert_allclose(f.target_point.numpy(), expected, atol=0.05)
    assert float(f.speed) == 5.0
    assert f.command.tolist() == [1.0 if c == RoadOption.LANEFOLLOW else 0.0 for c in COMMANDS]


def test_command_announces_a_turn_ahead(route: Route, town01: carla.Map):
    # Given a route whose points 60..80 are a LEFT turn
    d = route.dense
    commands = d.commands.copy()
    commands[60:80] = int(RoadOption.LEFT)
    turned = Route(
        route.id, route.town, route.keypoints, dense=DenseRoute(**{**d.__dict__, "commands": commands})
    )
    p = HybridPolicy(PolicyConfig())
    p.reset(turned, town01)
    # Then 30 m before it the command is LANEFOLLOW, 15 m before and inside it LEFT, after it LANEFOLLOW
    left, follow = command_index(RoadOption.LEFT), command_index(RoadOption.LANEFOLLOW)
    assert int(p.features(snapshot_on(turned, 30)).command.argmax()) == follow
    assert int(p.features(snapshot_on(turned, 45)).command.argmax()) == left
    assert int(p.features(snapshot_on(turned, 75)).command.argmax()) == left
    assert int(p.features(snapshot_on(turned, 81)).command.argmax()) == follow
    assert command_index(RoadOption.VOID) == follow


def test_forward_shapes_and_ranges(policy: HybridPolicy, route: Route):
    batch = collate_features([policy.features(snapshot_on(route, i)) for i in (10, 20, 30)])
    dist = policy.forward(batch)
    assert dist.traj_loc.shape == (3, K, 2) and dist.traj_log_scale.shape == (3, K, 2)
    assert dist.control_alpha.shape == (3, 2) and dist.control_beta.shape == (3, 2)
    assert bool((dist.control_alpha >= 1).all()) and bool((dist.control_beta >= 1).all())
    assert dist.speed.shape == (3,) and bool((dist.speed >= 0).all())
    scale = dist.traj_log_scale.exp()
    assert bool((scale >= 0.05 - 1e-6).all()) and bool((scale <= 20.0 + 1e-6).all())
    # A single (unbatched) sample is a batch of one
    assert policy.forward(policy.features(snapshot_on(route, 10))).traj_loc.shape == (1, K, 2)


def test_log_prob_prefers_the_mean_trajectory_and_the_mode_control(policy: HybridPolicy, route: Route):
    # Given the plan distribution of two states
    feats = collate_features([policy.features(snapshot_on(route, i)) for i in (10, 40)])
    with torch.no_grad():
        dist = policy.forward(feats)
        mean_traj = dist.traj_loc.clone()
        far_traj = mean_traj + torch.tensor([5.0, -3.0])
        mode = dist.control_mode()
        other = mode.clone()
        other[:, 1] = torch.where(mode[:, 1] > 0, mode[:, 1] - 0.6, mode[:, 1] + 0.6)
        # When trajectories and controls are scored
        lp_mean = policy.log_prob(PolicyActions(waypoints=mean_traj), feats)
        lp_far = policy.log_prob(PolicyActions(waypoints=far_traj), feats)
        lp_mode = dist.control_log_prob(mode)
        lp_other = dist.control_log_prob(other)
        lp_both = policy.log_prob(PolicyActions(waypoints=mean_traj, control=mode), feats)
    # Then the distribution's own mean / mode score higher, and joint scores add up
    assert lp_mean.shape == (2,)
    assert bool((lp_mean > lp_far).all())
    assert bool((lp_mode > lp_other).all())
    torch.testing.assert_close(lp_both, lp_mean + lp_mode, rtol=1e-5, atol=1e-4)
    # And the Laplace log-density matches its closed form for one coordinate
    b = dist.traj_log_scale.exp()
    manual = (-(far_traj - dist.traj_loc).abs() / b - torch.log(2 * b)).sum(dim=(1, 2))
    torch.testing.assert_close(lp_far, manual, rtol=1e-5, atol=1e-4)


def test_log_prob_has_gradients(policy: HybridPolicy, route: Route):
    feats = collate_features([policy.features(snapshot_on(route, 10))])
    policy.module.zero_grad()
    lp = policy.log_prob(
        PolicyActions(waypoints=torch.zeros(1, K, 2), control=torch.tensor([[0.5, 0.0, 0.0]])), feats
    )
    lp.sum().backward()
    grads = [p.grad for p in policy.module.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    policy.module.zero_grad()


def test_bad_actions_are_one_clear_error(policy: HybridPolicy, route: Route):
    feats = policy.features(snapshot_on(route, 10))
    with pytest.raises(DistributionError, match="waypoints of shape"):
        policy.log_prob(PolicyActions(waypoints=torch.zeros(1, 4, 2)), feats)
    with pytest.raises(DistributionError, match="neither"):
        policy.log_prob(PolicyActions(), feats)


def test_act_returns_a_valid_control_and_a_world_plan(policy: HybridPolicy, route: Route, town01: carla.Map):
    # Given a snapshot on the route, at the start of an episode
    snap = snapshot_on(route, 20, speed=4.0)
    policy.reset(route, town01)
    # When the policy acts
    control, plan = policy.act(snap)
    # Then the control is in range and never throttles and brakes at once
    assert isinstance(control, Control)
    assert 0.0 <= control.throttle <= 0.75 and 0.0 <= control.brake <= 1.0 and -1.0 <= control.steer <= 1.0
    assert control.throttle == 0.0 or control.brake == 0.0
    assert all(math.isfinite(v) for v in (control.throttle, control.steer, control.brake))
    # And the plan's world waypoints are its ego waypoints placed at the ego
    assert plan.xy_world.shape == (K, 2) and plan.speeds_mps.shape == (K,)
    np.testing.assert_allclose(plan.xy_world, ego_to_world(plan.xy_ego, snap.ego.pose), atol=1e-9)
    np.testing.assert_allclose(plan.times_s, 0.5 * np.arange(1, K + 1))
    assert plan.control == control
    # And a new episode replays it exactly (controller state is reset), through the Agent entry point too
    policy.reset(route, town01)
    assert policy.run_step(snap) == control


def test_the_opt_in_motion_channel_feeds_the_network(route: Route, town01: carla.Map):
    # Given the default channels plus actor_motion
    config = load_policy_config(
        ["bev.channels=" + "[" + ",".join(PolicyConfig().bev.channels) + ",actor_motion]"]
    )
    p = HybridPolicy(config)
    p.reset(route, town01)
    # When it acts on a snapshot
    snap = snapshot_on(route, 20, speed=4.0)
    control, plan = p.act(snap)
    # Then its input has one channel more than the default and it drives like the default policy does
    assert p.features(snap).bev.shape[0] == len(PolicyConfig().bev.channels) + 1
    assert plan.xy_world.shape == (K, 2) and math.isfinite(control.steer)


def test_features_before_reset_is_a_clear_error(route: Route):
    with pytest.raises(PolicyStateError, match="reset"):
        HybridPolicy(PolicyConfig()).act(snapshot_on(route, 10))


def test_route_without_dense_interpolation_is_rejected(route: Route, town01: carla.Map):
    with pytest.raises(FeatureError, match="dense"):
        HybridPolicy(PolicyConfig()).reset(Route("x", "Town01", route.keypoints), town01)


def test_config_loads_from_yaml_and_validates():
    assert load_policy_config() == PolicyConfig()
    with pytest.raises(PolicyConfigError, match="num_waypoints"):
        load_policy_config(["model.num_waypoints=1"])
    with pytest.raises(PolicyConfigError, match="copycat"):
        load_policy_config(["bev.channels=[drivable,ego_history]"])
    with pytest.raises(PolicyConfigError, match="control_weight_turning"):
        load_policy_config(["controller.control_weight_turning=1.5"])
    if not torch.cuda.is_available():
        with pytest.raises(PolicyConfigError, match="CUDA is not available"):
            load_policy_config(["device=cuda"])


def test_features_batch_helpers():
    f = PolicyFeatures(torch.zeros(3, 8, 8), torch.tensor(1.0), torch.zeros(2), torch.zeros(6))
    b = collate_features([f, f.as_batch()])
    assert b.is_batched and b.batch_size == 2 and b.speed.shape == (2,)
    with pytest.raises(FeatureError, match="different shapes"):
        collate_features(
            [f, PolicyFeatures(torch.zeros(3, 4, 4), torch.tensor(1.0), torch.zeros(2), torch.zeros(6))]
        )
