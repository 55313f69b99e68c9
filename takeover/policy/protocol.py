"""The `Policy` contract (DESIGN.md): features -> plan distribution -> control, with log-probabilities.

Any model implementing it can be post-optimised: DAgger needs `forward` (for the imitation loss),
DPO needs `log_prob` and `module` (whose parameters are optimised; its reference is a frozen copy).
A Policy is also a carla_bridge Agent (`name`, `reset(route, cmap)`, `run_step(snapshot)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from carla_bridge.snapshot import Control

if TYPE_CHECKING:
    import carla
    import torch

    from carla_bridge.route import Route
    from carla_bridge.snapshot import WorldSnapshot
    from takeover.policy.distributions import PlanDistribution, PolicyActions
    from takeover.policy.features import PolicyFeatures


@dataclass(frozen=True)
class PolicyPlan:
    """What the policy intends at one tick, comparable with the expert's plan by the takeover monitor.

    Waypoint k is where the ego means to be `times_s[k]` seconds from now.
    """

    times_s: np.ndarray  # (K,) s
    xy_world: np.ndarray  # (K, 2) world m
    xy_ego: np.ndarray  # (K, 2) ego frame m (x forward, y right)
    speeds_mps: np.ndarray  # (K,) mean speed over the interval ending at waypoint k
    control: Control  # the control sent (after fusion)
    control_branch: Control  # the control head's own action (Beta modes)
    trajectory_branch: Control  # the PID's action following the trajectory
    turning: bool  # which fusion weights were used
    predicted_speed_mps: float  # the anti-inertia speed head's estimate of the current speed
    waypoint_scale_m: np.ndarray  # (K, 2) Laplace scales: the model's own uncertainty


@runtime_checkable
class Policy(Protocol):
    name: str

    @property
    def module(self) -> torch.nn.Module:
        """The trainable network (DAgger / DPO optimise its parameters)."""
        ...

    @property
    def device(self) -> torch.device: ...

    def reset(self, route: Route, cmap: carla.Map, seed: int = 0) -> None:
        """Start an episode: set the route and map, clear controller and noise state."""
        ...

    def features(self, snapshot: WorldSnapshot) -> PolicyFeatures:
        """Network inputs of one snapshot (no perception noise: that belongs to act())."""
        ...

    def forward(self, features: PolicyFeatures) -> PlanDistribution:
        """Batched (or single, then batch of one) features -> plan distribution, with gradients."""
        ...

    def act(self, snapshot: WorldSnapshot) -> tuple[Control, PolicyPlan]:
        """Drive one tick: the control to apply and the plan behind it."""
        ...

    def log_prob(self, actions: PolicyActions, features: PolicyFeatures) -> torch.Tensor:
        """(B,) log-density of `actions` (waypoints and/or controls) given `features`, with gradients."""
        ...

    def run_step(self, snapshot: WorldSnapshot) -> Control:
        """Agent protocol: act() without the plan."""
        ...
