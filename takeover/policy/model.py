"""The built-in network: a TCP-like hybrid of a trajectory branch and a control branch over a BEV.

    bev ─ CNN (stride-2 stages) ─ f_bev ──┬─────────────── speed head (anti-inertia: speed from the
                                          │                 scene alone, never from the speed input)
    speed, target point, command ─ MLP ─ f_meas
    j = MLP([f_bev, f_meas])
    trajectory: GRU decoder, h_0 = W j; step k: h_k = GRU([x_{k-1}, tp], h_{k-1}), x_k = x_{k-1} + W_o h_k,
                log b_k = clamp(W_s h_k)  -> Laplace over K waypoints
    control:    MLP([j, x_1..x_K]) -> alpha, beta = 1 + softplus(.) -> Betas over (throttle - brake, steer)

TCP (Wu et al., 2022) guides its control branch with the trajectory branch's features; here the
control head reads the predicted waypoints, which does the same at CPU cost.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from takeover.policy.config import PolicyConfig
from takeover.policy.distributions import PlanDistribution
from takeover.policy.features import NUM_COMMANDS, PolicyFeatures

_NUM_CONTROL_DIMS = 2


def _conv(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride=2, padding=kernel // 2), nn.ReLU(inplace=True))


class BevEncoder(nn.Module):
    """Stride-2 conv stages, then a 1x1 conv squeeze and a linear layer on the flattened map."""

    def __init__(self, in_channels: int, size_px: int, channels: list[int], first_kernel: int, out_dim: int):
        super().__init__()
        stages = []
        c_in = in_channels
        for i, c in enumerate(channels):
            stages.append(_conv(c_in, c, first_kernel if i == 0 else 3))
            c_in = c
        self.stages = nn.Sequential(*stages)
        self.squeeze = nn.Sequential(nn.Conv2d(c_in, c_in // 2, 1), nn.ReLU(inplace=True))
        side = size_px
        for _ in channels:
            side = (side + 1) // 2
        # Flattening (not pooling) keeps where things are relative to the ego, which driving needs.
        self.proj = nn.Sequential(
            nn.Flatten(), nn.Linear((c_in // 2) * side * side, out_dim), nn.ReLU(inplace=True)
        )

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        return self.proj(self.squeeze(self.stages(bev)))


class HybridPlanner(nn.Module):
    """BEV + measurements -> PlanDistribution (trajectory Laplace, control Betas, speed)."""

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        m = config.model
        self.num_waypoints = m.num_waypoints
        self.speed_norm = m.speed_norm_mps
        self.target_norm = m.target_norm_m
        self.log_scale_min = math.log(m.min_waypoint_scale_m)
        self.log_scale_max = math.log(m.max_waypoint_scale_m)
        in_channels = len(config.bev.channels)
        self.encoder = BevEncoder(
            in_channels, config.bev.size_px, m.encoder_channels, m.first_kernel_px, m.feature_dim
        )
        self.measurements = nn.Sequential(
            nn.Linear(1 + 2 + NUM_COMMANDS, m.measurement_dim),
            nn.ReLU(inplace=True),
            nn.Linear(m.measurement_dim, m.measurement_dim),
            nn.ReLU(inplace=True),
        )
        self.join = nn.Sequential(
            nn.Linear(m.feature_dim + m.measurement_dim, m.fused_dim),
            nn.LayerNorm(m.fused_dim),
            nn.ReLU(inplace=True),
        )
        self.gru_init = nn.Linear(m.fused_dim, m.gru_hidden)
        self.gru = nn.GRUCell(2 + 2, m.gru_hidden)
        self.waypoint_delta = nn.Linear(m.gru_hidden, 2)
        self.waypoint_log_scale = nn.Linear(m.gru_hidden, 2)
        self.control_head = nn.Sequential(
            nn.Linear(m.fused_dim + 2 * m.num_waypoints, m.fused_dim // 2),
            nn.ReLU(inplace=True),
            nn.Linear(m.fused_dim // 2, 2 * _NUM_CONTROL_DIMS),
        )
        self.speed_head = nn.Sequential(
            nn.Linear(m.feature_dim, m.feature_dim // 2),
            nn.ReLU(inplace=True),
            nn.Linear(m.feature_dim // 2, 1),
        )
        # An untrained model starts at the configured waypoint scale rather than at an arbitrary one.
        nn.init.zeros_(self.waypoint_log_scale.weight)
        nn.init.constant_(self.waypoint_log_scale.bias, math.log(m.initial_waypoint_scale_m))

    def forward(self, features: PolicyFeatures) -> PlanDistribution:
        f = features.as_batch()
        f_bev = self.encoder(f.bev)
        tp = f.target_point / self.target_norm
        meas = torch.cat([(f.speed / self.speed_norm).unsqueeze(-1), tp, f.command], dim=-1)
        j = self.join(torch.cat([f_bev, self.measurements(meas)], dim=-1))

        h = self.gru_init(j)
        x = torch.zeros_like(tp)
        locs, log_scales = [], []
        for _ in range(self.num_waypoints):
            h = self.gru(torch.cat([x / self.target_norm, tp], dim=-1), h)
            x = x + self.waypoint_delta(h)
            locs.append(x)
            log_scales.append(self.waypoint_log_scale(h))
        traj = torch.stack(locs, dim=1)
        log_scale = torch.stack(log_scales, dim=1).clamp(self.log_scale_min, self.log_scale_max)

        ctrl = self.control_head(torch.cat([j, traj.flatten(1) / self.target_norm], dim=-1))
        concentration = 1.0 + F.softplus(ctrl)
        speed = F.softplus(self.speed_head(f_bev).squeeze(-1)) * self.speed_norm
        return PlanDistribution(
            traj_loc=traj,
            traj_log_scale=log_scale,
            control_alpha=concentration[:, :_NUM_CONTROL_DIMS],
            control_beta=concentration[:, _NUM_CONTROL_DIMS:],
            speed=speed,
        )


def build_model(config: PolicyConfig) -> HybridPlanner:
    return HybridPlanner(config)
