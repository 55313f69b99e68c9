"""`HybridPolicy`: the built-in Policy (BEV -> HybridPlanner -> PID + TCP fusion), also an Agent."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from carla_bridge.errors import TakeoverError
from carla_bridge.geometry import ego_to_world
from carla_bridge.snapshot import Control
from takeover.policy.checkpoint import load_checkpoint, save_checkpoint
from takeover.policy.config import PolicyConfig, resolve_device, validate_policy_config
from takeover.policy.controller import TrajectoryFollower, fuse_controls, is_turning
from takeover.policy.distributions import PlanDistribution, PolicyActions
from takeover.policy.features import COMMANDS, FeatureBuilder, PolicyFeatures
from takeover.policy.model import HybridPlanner, build_model
from takeover.policy.perception_noise import PerceptionNoise
from takeover.policy.protocol import PolicyPlan

if TYPE_CHECKING:
    import carla

    from carla_bridge.route import Route
    from carla_bridge.snapshot import WorldSnapshot


class PolicyStateError(TakeoverError):
    """The policy was asked to drive before `reset(route, cmap)` gave it a route."""


class HybridPolicy:
    """TCP-like BEV policy. One instance drives one episode at a time (`reset` starts the next)."""

    name = "hybrid_bev"

    def __init__(self, config: PolicyConfig, model: HybridPlanner | None = None) -> None:
        validate_policy_config(config)
        self.config = config
        self._device = resolve_device(config.device)
        self._model = (model if model is not None else build_model(config)).to(self._device)
        self._follower = TrajectoryFollower(config.controller, config.model.waypoint_dt_s)
        self._noise = PerceptionNoise(config.perception_noise)
        self._builder: FeatureBuilder | None = None
        k = config.model.num_waypoints
        self._times = config.model.waypoint_dt_s * np.arange(1, k + 1)

    # -- construction / persistence ------------------------------------------------------------

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], overrides: PolicyConfig | None = None
    ) -> tuple[HybridPolicy, dict[str, Any]]:
        """Load weights and config; `overrides` may change driving settings (controller, noise, device)
        but must keep the checkpoint's network (bev, model sections). Returns (policy, extra)."""
        model, config, extra = load_checkpoint(path, map_location="cpu", expect=overrides)
        return cls(overrides if overrides is not None else config, model), extra

    def save(self, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> str:
        """Atomic checkpoint of this policy; returns its sha256."""
        return save_checkpoint(path, self._model, self.config, extra)

    # -- the Policy protocol --------------------------------------------------------------------

    @property
    def module(self) -> HybridPlanner:
        return self._model

    @property
    def device(self) -> torch.device:
        return self._device

    def reset(self, route: Route, cmap: carla.Map, seed: int = 0) -> None:
        self._builder = FeatureBuilder(self.config.features, self.config.bev, cmap, route.dense)
        self._follower.reset()
        self._noise.reset(seed)

    @property
    def feature_builder(self) -> FeatureBuilder:
        if self._builder is None:
            raise PolicyStateError(
                f"{self.name}: call reset(route, cmap) before driving or building features"
            )
        return self._builder

    def features(self, snapshot: WorldSnapshot) -> PolicyFeatures:
        return self.feature_builder.build(snapshot)

    def forward(self, features: PolicyFeatures) -> PlanDistribution:
        return self._model(features.as_batch().to(self._device))

    def log_prob(self, actions: PolicyActions, features: PolicyFeatures) -> torch.Tensor:
        dist = self.forward(features)
        return dist.log_prob(
            PolicyActions(
                waypoints=None if actions.waypoints is None else actions.waypoints.to(self._device),
                control=None if actions.control is None else actions.control.to(self._device),
            )
        )

    @torch.inference_mode()
    def act(self, snapshot: WorldSnapshot) -> tuple[Control, PolicyPlan]:
        features = self.feature_builder.build(self._noise.apply(snapshot))
        command = COMMANDS[int(features.command.argmax())]
        dist = self.forward(features).detach()
        waypoints = dist.traj_loc[0].float().cpu().numpy().astype(np.float64)
        ctrl = dist.control_mode()[0].float().cpu().numpy()

        speed = float(snapshot.ego.speed)  # odometry is not subject to perception noise
        control_branch = Control(throttle=float(ctrl[0]), steer=float(ctrl[1]), brake=float(ctrl[2]))
        trajectory_branch = self._follower.step(waypoints, speed).control
        turning = is_turning(command, trajectory_branch.steer, self.config.controller)
        control = fuse_controls(control_branch, trajectory_branch, turning, self.config.controller)

        steps = np.diff(np.vstack([[0.0, 0.0], waypoints]), axis=0)
        plan = PolicyPlan(
            times_s=self._times.copy(),
            xy_world=ego_to_world(waypoints, snapshot.ego.pose),
            xy_ego=waypoints,
            speeds_mps=np.linalg.norm(steps, axis=1) / self.config.model.waypoint_dt_s,
            control=control,
            control_branch=control_branch,
            trajectory_branch=trajectory_branch,
            turning=turning,
            predicted_speed_mps=float(dist.speed[0]),
            waypoint_scale_m=dist.traj_log_scale[0].exp().float().cpu().numpy().astype(np.float64),
        )
        return control, plan

    def run_step(self, snapshot: WorldSnapshot) -> Control:
        return self.act(snapshot)[0]
