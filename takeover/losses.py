"""Training losses of the method: imitation (behaviour cloning / DAgger) and DPO (as TRL's DPOTrainer).

Pure functions of tensors; no optimiser, no model. Shapes: B samples, K waypoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from carla_bridge.errors import TakeoverError
from takeover.policy.distributions import PlanDistribution

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


class LossInputError(TakeoverError):
    """Loss inputs of the wrong shape, or a hyper-parameter out of range."""


@dataclass
class ImitationWeights:
    """Weights of the imitation terms (TCP uses 1.0 waypoints, 1.0 control, 0.05 speed)."""

    waypoint_l1: float = 1.0  # mean |tau - mu| over K x 2 coordinates, m
    waypoint_nll: float = 0.5  # mean Laplace NLL per coordinate (trains the scales DPO's log_prob uses)
    control_nll: float = 1.0  # mean Beta NLL per control dimension
    speed: float = 0.05  # |v_hat - v| of the anti-inertia speed head, m/s


def _check_batch(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != shape:
        raise LossInputError(f"{name} has shape {tuple(t.shape)}, expected {shape}")


def imitation_loss(
    dist: PlanDistribution,
    target_waypoints: torch.Tensor | None,
    target_control: torch.Tensor | None,
    weights: ImitationWeights,
    target_speed: torch.Tensor | None = None,
    sample_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted imitation loss over a batch, and its parts as floats.

    Per sample i (terms whose target is None are left out):
        l_i = w_l1 * mean_{k,d} |tau_ikd - mu_ikd|
            + w_nll * mean_{k,d} ( |tau_ikd - mu_ikd| / b_ikd + log(2 b_ikd) )
            + w_ctrl * mean_j -log p_j(c_ij)            (Beta densities on [-1, 1], see distributions)
            + w_speed * |v_hat_i - v_i|
    loss = sum_i s_i l_i / sum_i s_i with sample weights s (all 1 when None; e.g. >1 on takeover frames).
    Metrics: loss, the four terms, ade_m / fde_m (mean / final Euclidean waypoint error), steer_l1 and
    acceleration_l1 (|mode - target| of the control branch).
    """
    b = dist.batch_size
    if target_waypoints is None and target_control is None:
        raise LossInputError("imitation_loss needs target_waypoints and/or target_control")
    per_sample = torch.zeros(b, device=dist.traj_loc.device, dtype=dist.traj_loc.dtype)
    metrics: dict[str, float] = {}
    if target_waypoints is not None:
        _check_batch("target_waypoints", target_waypoints, tuple(dist.traj_loc.shape))
        err = (target_waypoints - dist.traj_loc).abs()
        l1 = err.mean(dim=(1, 2))
        nll = -dist.trajectory_log_prob(target_waypoints) / err[0].numel()
        per_sample = per_sample + weights.waypoint_l1 * l1 + weights.waypoint_nll * nll
        dist_err = (target_waypoints - dist.traj_loc).norm(dim=-1).detach()
        metrics |= {
            "waypoint_l1": float(l1.detach().mean()),
            "waypoint_nll": float(nll.detach().mean()),
            "ade_m": float(dist_err.mean()),
            "fde_m": float(dist_err[:, -1].mean()),
        }
    if target_control is not None:
        _check_batch("target_control", target_control, (b, 3))
        ctrl_nll = -dist.control_log_prob(target_control) / 2.0
        per_sample = per_sample + weights.control_nll * ctrl_nll
        mode = dist.control_mode().detach()
        acc_err = ((mode[:, 0] - mode[:, 2]) - (target_control[:, 0] - target_control[:, 2])).abs()
        metrics |= {
            "control_nll": float(ctrl_nll.detach().mean()),
            "steer_l1": float((mode[:, 1] - target_control[:, 1]).abs().mean()),
            "acceleration_l1": float(acc_err.mean()),
        }
    if target_speed is not None:
        _check_batch("target_speed", target_speed, (b,))
        speed_l1 = (dist.speed - target_speed).abs()
        per_sample = per_sample + weights.speed * speed_l1
        metrics["speed_l1"] = float(speed_l1.detach().mean())
    if sample_weight is None:
        loss = per_sample.mean()
    else:
        _check_batch("sample_weight", sample_weight, (b,))
        if bool((sample_weight < 0).any()) or float(sample_weight.sum()) <= 0:
            raise LossInputError("sample_weight must be >= 0 with a positive sum")
        loss = (per_sample * sample_weight).sum() / sample_weight.sum()
    metrics["loss"] = float(loss.detach())
    return loss, metrics


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    rpo_alpha: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO losses and implicit rewards, as TRL's DPOTrainer.dpo_loss.

    rho_w = log pi(y_w|x) - log pi_ref(y_w|x),  rho_l likewise,  Delta = rho_w - rho_l, eps = label_smoothing:
        sigmoid: -(1 - eps) log sigma(beta Delta) - eps log sigma(-beta Delta)
        robust:  [-(1 - eps) log sigma(beta Delta) + eps log sigma(-beta Delta)] / (1 - 2 eps)
        hinge:   relu(1 - beta Delta)
        ipo:     (Delta - 1 / (2 beta))^2
    plus, when rpo_alpha > 0, rpo_alpha * (-log pi(y_w|x)) (the NLL / "sft" term on the chosen sample).
    Rewards (detached): chosen = beta rho_w, rejected = beta rho_l.
    Returns (losses (B,), chosen_rewards (B,), rejected_rewards (B,)); the training loss is losses.mean().
    """
    if beta <= 0:
        raise LossInputError(f"DPO beta={beta} must be > 0 (TRL's default is 0.1)")
    if loss_type not in DPO_LOSS_TYPES:
        raise LossInputError(f"DPO loss_type={loss_type!r}; use one of {', '.join(DPO_LOSS_TYPES)}")
    if not 0.0 <= label_smoothing < 0.5:
        raise LossInputError(f"DPO label_smoothing={label_smoothing} must be in [0, 0.5)")
    if rpo_alpha < 0:
        raise LossInputError(f"rpo_alpha={rpo_alpha} must be >= 0")
    shape = tuple(policy_chosen_logps.shape)
    if len(shape) != 1:
        raise LossInputError(f"DPO log-probs must be (B,) vectors, got {shape}")
    for name, t in (
        ("policy_rejected_logps", policy_rejected_logps),
        ("ref_chosen_logps", ref_chosen_logps),
        ("ref_rejected_logps", ref_rejected_logps),
    ):
        _check_batch(name, t, shape)

    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    logits = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        losses = (
            -F.logsigmoid(beta * logits) * (1 - label_smoothing)
            - F.logsigmoid(-beta * logits) * label_smoothing
        )
    elif loss_type == "robust":
        losses = (
            -F.logsigmoid(beta * logits) * (1 - label_smoothing)
            + F.logsigmoid(-beta * logits) * label_smoothing
        ) / (1 - 2 * label_smoothing)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    else:  # ipo
        losses = (logits - 1 / (2 * beta)) ** 2
    if rpo_alpha > 0:
        losses = losses + rpo_alpha * (-policy_chosen_logps)
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    return losses, chosen_rewards, rejected_rewards


def dpo_metrics(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    prefix: str = "",
) -> dict[str, float]:
    """TRL's logged DPO statistics (batch means); `prefix` e.g. "eval_"."""
    return {
        f"{prefix}rewards/chosen": float(chosen_rewards.detach().mean()),
        f"{prefix}rewards/rejected": float(rejected_rewards.detach().mean()),
        f"{prefix}rewards/accuracies": float((chosen_rewards > rejected_rewards).float().mean()),
        f"{prefix}rewards/margins": float((chosen_rewards - rejected_rewards).mean()),
        f"{prefix}logps/chosen": float(policy_chosen_logps.detach().mean()),
        f"{prefix}logps/rejected": float(policy_rejected_logps.detach().mean()),
    }
