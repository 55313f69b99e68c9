"""DPO losses against hand-computed values (TRL's definitions), metrics, errors, and that they optimise."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from carla_bridge.bev import BevConfig
from takeover.losses import LossInputError, dpo_loss, dpo_metrics
from takeover.policy import PolicyActions, PolicyConfig, PolicyFeatures
from takeover.policy.config import ModelConfig
from takeover.policy.distributions import PlanDistribution
from takeover.policy.model import build_model

# One pair: rho_w = -1 - (-2) = 1, rho_l = -3 - (-2.5) = -0.5, Delta = 1.5; beta = 0.2 -> beta Delta = 0.3
PC, PR, RC, RR = -1.0, -3.0, -2.0, -2.5
BETA = 0.2
Z = 0.3


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))  # -log sigma(-x)


def run(loss_type: str, label_smoothing: float = 0.0, rpo_alpha: float = 0.0):
    return dpo_loss(t(PC), t(PR), t(RC), t(RR), BETA, loss_type, label_smoothing, rpo_alpha)


def test_sigmoid_by_hand():
    losses, chosen, rejected = run("sigmoid")
    assert float(losses[0]) == pytest.approx(softplus(-Z))  # -log sigma(0.3) = log(1 + e^-0.3)
    assert float(chosen[0]) == pytest.approx(BETA * 1.0)
    assert float(rejected[0]) == pytest.approx(BETA * -0.5)


def test_sigmoid_with_label_smoothing_by_hand():
    losses, _, _ = run("sigmoid", label_smoothing=0.1)
    assert float(losses[0]) == pytest.approx(0.9 * softplus(-Z) + 0.1 * softplus(Z))


def test_robust_by_hand():
    losses, _, _ = run("robust", label_smoothing=0.1)
    # [-(1-e) log sigma(z) + e log sigma(-z)] / (1 - 2e) = [0.9 softplus(-z) - 0.1 softplus(z)] / 0.8
    assert float(losses[0]) == pytest.approx((0.9 * softplus(-Z) - 0.1 * softplus(Z)) / 0.8)
    # Without smoothing it is the sigmoid loss
    assert float(run("robust")[0][0]) == pytest.approx(softplus(-Z))


def test_hinge_by_hand():
    assert float(run("hinge")[0][0]) == pytest.approx(1.0 - Z)
    big, _, _ = dpo_loss(t(0.0), t(-20.0), t(0.0), t(0.0), beta=0.2, loss_type="hinge")
    assert float(big[0]) == 0.0  # 1 - 0.2 * 20 < 0


def test_ipo_by_hand():
    # (Delta - 1 / (2 beta))^2 = (1.5 - 2.5)^2
    assert float(run("ipo")[0][0]) == pytest.approx(1.0)


def test_rpo_term_adds_the_chosen_nll():
    assert float(run("sigmoid", rpo_alpha=0.5)[0][0]) == pytest.approx(softplus(-Z) + 0.5 * 1.0)


def test_batch_and_metrics_use_trl_names():
    pc, pr, rc, rr = t(-1.0, -2.0), t(-3.0, -1.0), t(-2.0, -2.0), t(-2.5, -2.0)
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert losses.shape == (2,)
    m = dpo_metrics(chosen, rejected, pc, pr)
    # pair 1: rewards 0.5, -0.25 ; pair 2: rewards 0.0, 0.5
    assert m == pytest.approx(
        {
            "rewards/chosen": 0.25,
            "rewards/rejected": 0.125,
            "rewards/accuracies": 0.5,
            "rewards/margins": 0.125,
            "logps/chosen": -1.5,
            "logps/rejected": -2.0,
        }
    )
    assert set(dpo_metrics(chosen, rejected, pc, pr, prefix="eval_")) == {"eval_" + k for k in m}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"beta": 0.0}, "beta"),
        ({"loss_type": "kto"}, "loss_type"),
        ({"label_smoothing": 0.5}, "label_smoothing"),
        ({"rpo_alpha": -1.0}, "rpo_alpha"),
    ],
)
def test_bad_hyper_parameters(kwargs: dict, needle: str):
    with pytest.raises(LossInputError, match=needle):
        dpo_loss(t(PC), t(PR), t(RC), t(RR), **kwargs)


def test_mismatched_shapes():
    with pytest.raises(LossInputError, match="ref_chosen_logps"):
        dpo_loss(t(1.0, 2.0), t(1.0, 2.0), t(1.0), t(1.0, 2.0))
    with pytest.raises(LossInputError, match=r"\(B,\) vectors"):
        dpo_loss(torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2))


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge", "robust"])
def test_gradient_steps_increase_the_margin_on_a_toy_gaussian_policy(loss_type: str):
    # Given a trajectory distribution with learnable means, chosen = expert, rejected = a swerve
    torch.manual_seed(0)
    b, k = 4, 8
    loc = torch.nn.Parameter(torch.randn(b, k, 2) * 0.5)
    log_scale = torch.zeros(b, k, 2)
    chosen = torch.zeros(b, k, 2)
    rejected = torch.zeros(b, k, 2)
    rejected[..., 1] = 2.0

    def dist(mu: torch.Tensor) -> PlanDistribution:
        return PlanDistribution(mu, log_scale, torch.ones(b, 2), torch.ones(b, 2), torch.zeros(b))

    ref = dist(loc.detach().clone())
    ref_c, ref_r = ref.trajectory_log_prob(chosen), ref.trajectory_log_prob(rejected)
    opt = torch.optim.SGD([loc], lr=0.05)
    margins = []
    for _ in range(15):
        d = dist(loc)
        pc, pr = d.trajectory_log_prob(chosen), d.trajectory_log_prob(rejected)
        losses, rc, rr = dpo_loss(pc, pr, ref_c, ref_r, beta=0.1, loss_type=loss_type, label_smoothing=0.0)
        margins.append(dpo_metrics(rc, rr, pc, pr)["rewards/margins"])
        opt.zero_grad()
        losses.mean().backward()
        opt.step()
    # Then the implicit reward margin starts at 0 (policy = reference) and grows
    assert margins[0] == pytest.approx(0.0, abs=1e-6)
    assert margins[-1] > margins[5] > 0.0


def test_dpo_through_the_hybrid_network_raises_chosen_over_rejected():
    # Given a small hybrid network, its frozen copy as reference, and pairs (stop = chosen, go = rejected)
    torch.manual_seed(0)
    config = PolicyConfig(
        bev=BevConfig(size_px=32, ego_forward_offset_m=4.0, channels=["drivable", "vehicles"]),
        model=ModelConfig(
            encoder_channels=[8, 16], feature_dim=32, measurement_dim=16, fused_dim=32, gru_hidden=16
        ),
    )
    model = build_model(config)
    ref = copy.deepcopy(model).requires_grad_(False)
    b = 4
    feats = PolicyFeatures(
        torch.rand(b, 2, 32, 32),
        torch.full((b,), 3.0),
        torch.tensor([[20.0, 0.0]] * b),
        torch.eye(6)[[3] * b],
    )
    stop = PolicyActions(waypoints=torch.zeros(b, 8, 2), control=torch.tensor([[0.0, 0.0, 1.0]] * b))
    go = torch.stack([torch.arange(1, 9) * 2.0, torch.zeros(8)], dim=-1).expand(b, 8, 2)
    go_actions = PolicyActions(waypoints=go.clone(), control=torch.tensor([[0.7, 0.0, 0.0]] * b))
    with torch.no_grad():
        ref_dist = ref(feats)
        ref_c, ref_r = ref_dist.log_prob(stop), ref_dist.log_prob(go_actions)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    accuracies, margins = [], []
    # When a few DPO steps are taken
    for _ in range(8):
        d = model(feats)
        pc, pr = d.log_prob(stop), d.log_prob(go_actions)
        losses, rc, rr = dpo_loss(pc, pr, ref_c, ref_r, beta=0.1)
        m = dpo_metrics(rc, rr, pc, pr)
        accuracies.append(m["rewards/accuracies"])
        margins.append(m["rewards/margins"])
        opt.zero_grad()
        losses.mean().backward()
        opt.step()
    # Then the chosen plan gains on the rejected one relative to the reference
    assert margins[0] == pytest.approx(0.0, abs=1e-5)
    assert margins[-1] > 0.0 and accuracies[-1] == 1.0
