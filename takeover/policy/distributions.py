"""The plan distribution of a policy: a Laplace over future waypoints and Betas over the controls.

Trajectory: each coordinate of the K ego-frame waypoints is an independent Laplace(mu, b), so
log p(tau) = sum_{k,d} [ -|tau_kd - mu_kd| / b_kd - log(2 b_kd) ]; with b fixed this is an L1 loss.

Control (TCP): two Betas on [0, 1], one for the longitudinal action a = throttle - brake and one for
steer, each mapped to [-1, 1] by x = 2u - 1. The density of x is Beta(u; alpha, beta) / 2, so
log p(throttle, steer, brake) = sum_j [ log Beta((x_j + 1) / 2; alpha_j, beta_j) - log 2 ].
alpha, beta >= 1 keeps each Beta unimodal with mode (alpha - 1) / (alpha + beta - 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Beta, Laplace

from carla_bridge.errors import TakeoverError

CONTROL_DIMS = ("acceleration", "steer")  # order of the Beta parameters' last dimension
_UNIT_EPS = 1e-4  # keep u inside (0, 1): Beta log-densities are infinite at the bounds when alpha/beta > 1
_LOG2 = math.log(2.0)


class DistributionError(TakeoverError):
    """Actions whose shape does not match the distribution they are scored under."""


@dataclass
class PolicyActions:
    """Actions to score: ego-frame waypoints (B, K, 2) in metres and/or controls (B, 3) as
    (throttle, steer, brake). A field left None is not scored."""

    waypoints: torch.Tensor | None = None
    control: torch.Tensor | None = None


def control_to_unit(control: torch.Tensor) -> torch.Tensor:
    """(B, 3) throttle, steer, brake -> (B, 2) Beta samples u = ((throttle - brake) + 1) / 2, (steer + 1) / 2."""
    acc = control[..., 0] - control[..., 2]
    x = torch.stack([acc, control[..., 1]], dim=-1).clamp(-1.0, 1.0)
    return ((x + 1.0) * 0.5).clamp(_UNIT_EPS, 1.0 - _UNIT_EPS)


def unit_to_control(u: torch.Tensor) -> torch.Tensor:
    """(B, 2) Beta values -> (B, 3) throttle, steer, brake: a = 2u_0 - 1 splits into throttle = max(a, 0)
    and brake = max(-a, 0); steer = 2u_1 - 1."""
    x = u * 2.0 - 1.0
    acc = x[..., 0]
    return torch.stack([acc.clamp(min=0.0), x[..., 1], (-acc).clamp(min=0.0)], dim=-1)


@dataclass
class PlanDistribution:
    """Batched output of a policy network (leading dimension B everywhere)."""

    traj_loc: torch.Tensor  # (B, K, 2) ego-frame waypoints, m
    traj_log_scale: torch.Tensor  # (B, K, 2) log of the Laplace scale, log m
    control_alpha: torch.Tensor  # (B, 2) >= 1, over CONTROL_DIMS
    control_beta: torch.Tensor  # (B, 2) >= 1
    speed: torch.Tensor  # (B,) auxiliary prediction of the ego's current speed, m/s

    @property
    def batch_size(self) -> int:
        return int(self.traj_loc.shape[0])

    @property
    def num_waypoints(self) -> int:
        return int(self.traj_loc.shape[1])

    def trajectory(self) -> Laplace:
        return Laplace(self.traj_loc, self.traj_log_scale.exp())

    def controls(self) -> Beta:
        return Beta(self.control_alpha, self.control_beta)

    def trajectory_log_prob(self, waypoints: torch.Tensor) -> torch.Tensor:
        """(B,) log p(tau) = sum_{k,d} -|tau - mu| / b - log(2 b)."""
        if waypoints.shape != self.traj_loc.shape:
            raise DistributionError(
                f"waypoints of shape {tuple(waypoints.shape)} scored under a trajectory distribution of "
                f"shape {tuple(self.traj_loc.shape)}; give (B, K, 2) ego-frame waypoints"
            )
        scale = self.traj_log_scale.exp()
        lp = -(waypoints - self.traj_loc).abs() / scale - self.traj_log_scale - _LOG2
        return lp.sum(dim=(1, 2))

    def control_log_prob(self, control: torch.Tensor) -> torch.Tensor:
        """(B,) log p(control) = sum_j log Beta(u_j; alpha_j, beta_j) - log 2, u = control_to_unit(control)."""
        if control.shape != (self.batch_size, 3):
            raise DistributionError(
                f"controls of shape {tuple(control.shape)}; expected ({self.batch_size}, 3) as throttle, steer, brake"
            )
        return (self.controls().log_prob(control_to_unit(control)) - _LOG2).sum(dim=-1)

    def log_prob(self, actions: PolicyActions) -> torch.Tensor:
        """(B,) sum of the log-densities of the fields present in `actions`."""
        if actions.waypoints is None and actions.control is None:
            raise DistributionError("PolicyActions has neither waypoints nor control; give at least one")
        total = torch.zeros(self.batch_size, device=self.traj_loc.device, dtype=self.traj_loc.dtype)
        if actions.waypoints is not None:
            total = total + self.trajectory_log_prob(actions.waypoints)
        if actions.control is not None:
            total = total + self.control_log_prob(actions.control)
        return total

    def control_mode(self) -> torch.Tensor:
        """(B, 3) throttle, steer, brake at the Betas' modes (alpha, beta >= 1; uniform -> 1/2)."""
        a, b = self.control_alpha, self.control_beta
        denom = a + b - 2.0
        u = torch.where(denom > 1e-6, (a - 1.0) / denom.clamp(min=1e-6), torch.full_like(a, 0.5))
        return unit_to_control(u)

    def control_mean(self) -> torch.Tensor:
        """(B, 3) throttle, steer, brake at the Betas' means alpha / (alpha + beta)."""
        return unit_to_control(self.control_alpha / (self.control_alpha + self.control_beta))

    def detach(self) -> PlanDistribution:
        return PlanDistribution(
            self.traj_loc.detach(),
            self.traj_log_scale.detach(),
            self.control_alpha.detach(),
            self.control_beta.detach(),
            self.speed.detach(),
        )
