"""`PolicyConfig`: the OmegaConf structured config of the built-in BEV hybrid policy (conf/policy.yaml).

The `bev` and `model` sections define the network's shape and are stored in every checkpoint; the
others (controller, perception noise, device) only change how a loaded model drives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from carla_bridge.bev import CH_EGO_HISTORY, BevConfig, validate_bev_config
from carla_bridge.config import load_config
from carla_bridge.errors import TakeoverError


class PolicyConfigError(TakeoverError):
    """A policy configuration value is out of range or names something that does not exist."""


@dataclass
class FeatureConfig:
    """What the policy reads besides the BEV: target point and navigation command."""

    target_point_distance_m: float = 20.0  # arc length along the dense route from the ego to the target point
    progress_search_m: float = (
        30.0  # route span after the progress index searched for the ego's nearest point
    )


@dataclass
class ModelConfig:
    """Shape of the TCP-like hybrid network (changing any field needs a new checkpoint)."""

    num_waypoints: int = 8  # K future waypoints
    waypoint_dt_s: float = 0.5  # time between waypoints
    encoder_channels: list[int] = field(default_factory=lambda: [32, 64, 96, 128])  # stride-2 conv stages
    first_kernel_px: int = 5  # kernel of the first conv stage (the others are 3x3)
    feature_dim: int = 256  # BEV embedding size
    measurement_dim: int = 128  # speed / target point / command embedding size
    fused_dim: int = 256  # joint embedding feeding the heads
    gru_hidden: int = 64  # trajectory decoder state
    speed_norm_mps: float = 10.0  # speeds are divided by this before entering the network
    target_norm_m: float = 20.0  # target point coordinates are divided by this
    min_waypoint_scale_m: float = 0.05  # Laplace scale bounds of each waypoint coordinate
    max_waypoint_scale_m: float = 20.0
    initial_waypoint_scale_m: float = 1.0  # scale of an untrained model


@dataclass
class ControllerConfig:
    """PID that turns the trajectory into a control, and the TCP fusion with the control branch.

    Gains and thresholds are TCP's (Wu et al. 2022, tcp_agent / PIDController).
    """

    turn_kp: float = 0.75
    turn_ki: float = 0.75
    turn_kd: float = 0.3
    turn_window: int = 40  # ticks in the integral window
    speed_kp: float = 5.0
    speed_ki: float = 0.5
    speed_kd: float = 1.0
    speed_window: int = 40
    brake_speed_mps: float = 0.4  # the trajectory asks to stop below this desired speed
    brake_ratio: float = 1.1  # ... or when driving faster than this factor times the desired speed
    clip_delta_mps: float = 0.25  # speed error fed to the speed PID is clipped to [0, this]
    max_throttle: float = 0.75
    min_steer_speed_mps: float = 0.01  # no steering while standing
    control_weight_turning: float = 0.7  # weight of the control branch when turning ...
    control_weight_straight: float = 0.3  # ... and otherwise (the trajectory branch gets the rest)
    turning_steer_threshold: float = 0.1  # |trajectory-branch steer| above this counts as turning


@dataclass
class PerceptionNoiseConfig:
    """Imperfect perception applied to snapshots before rasterising (off by default)."""

    enabled: bool = False
    miss_probability: float = 0.0  # each actor is dropped independently on each tick with this probability
    position_sigma_m: float = 0.0  # Gaussian noise on actor x and y
    yaw_sigma_rad: float = 0.0  # Gaussian noise on actor heading
    light_delay_ticks: int = 0  # traffic-light states are reported this many ticks late
    seed: int = 0  # combined with the episode seed given to reset()


@dataclass
class PolicyConfig:
    bev: BevConfig = field(default_factory=BevConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    perception_noise: PerceptionNoiseConfig = field(default_factory=PerceptionNoiseConfig)
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...


def load_policy_config(overrides: list[str] | None = None) -> PolicyConfig:
    """Schema defaults <- conf/policy.yaml <- dotlist overrides, validated."""
    config = load_config(PolicyConfig, "policy", overrides)
    validate_policy_config(config)
    return config


def validate_policy_config(config: PolicyConfig, check_device: bool = True) -> None:
    """Raise PolicyConfigError on the first out-of-range value (BEV fields raise BevError);
    `check_device` also requires the configured device to exist here."""

    validate_bev_config(config.bev)
    if CH_EGO_HISTORY in config.bev.channels:
        raise PolicyConfigError(
            "bev.channels lists ego_history, which the built-in policy does not feed: a cloned policy that sees "
            "its own past learns to extrapolate it (the copycat problem); remove it from conf/policy.yaml"
        )
    m = config.model
    if m.num_waypoints < 2:
        raise PolicyConfigError(f"model.num_waypoints={m.num_waypoints}; the PID needs at least 2 waypoints")
    if m.waypoint_dt_s <= 0:
        raise PolicyConfigError(f"model.waypoint_dt_s={m.waypoint_dt_s} must be > 0 s")
    if not m.encoder_channels or min(m.encoder_channels) < 1:
        raise PolicyConfigError(f"model.encoder_channels={m.encoder_channels} needs positive channel counts")
    if config.bev.size_px >> len(m.encoder_channels) < 1:
        raise PolicyConfigError(
            f"{len(m.encoder_channels)} stride-2 stages shrink a {config.bev.size_px} px BEV below 1 px; "
            "use fewer model.encoder_channels or a bigger bev.size_px"
        )
    if not 0 < m.min_waypoint_scale_m <= m.initial_waypoint_scale_m <= m.max_waypoint_scale_m:
        raise PolicyConfigError(
            "need 0 < model.min_waypoint_scale_m <= initial_waypoint_scale_m <= max_waypoint_scale_m, got "
            f"{m.min_waypoint_scale_m}, {m.initial_waypoint_scale_m}, {m.max_waypoint_scale_m}"
        )
    c = config.controller
    for name in ("control_weight_turning", "control_weight_straight"):
        if not 0.0 <= getattr(c, name) <= 1.0:
            raise PolicyConfigError(f"controller.{name}={getattr(c, name)} must be in [0, 1]")
    if c.turn_window < 2 or c.speed_window < 2:
        raise PolicyConfigError("controller.turn_window and speed_window must be >= 2 ticks")
    n = config.perception_noise
    if not 0.0 <= n.miss_probability <= 1.0:
        raise PolicyConfigError(f"perception_noise.miss_probability={n.miss_probability} must be in [0, 1]")
    if n.position_sigma_m < 0 or n.yaw_sigma_rad < 0 or n.light_delay_ticks < 0:
        raise PolicyConfigError("perception_noise sigmas and light_delay_ticks must be >= 0")
    if config.features.target_point_distance_m <= 0:
        raise PolicyConfigError("features.target_point_distance_m must be > 0")
    if check_device:
        resolve_device(config.device)


def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu; an explicit CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise PolicyConfigError(f"device={name!r} is not a torch device; use auto, cpu or cuda[:N]") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PolicyConfigError(f"device={name!r} but CUDA is not available here; use device=auto or cpu")
    return device
