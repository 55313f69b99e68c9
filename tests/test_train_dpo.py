"""DPO rounds: the chosen-over-rejected margin grows, the reference stays frozen, runs are reproducible."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session
from test_train_synthetic import (  # noqa: F401 (one_torch_thread is an autouse fixture)
    TINY_POLICY,
    one_torch_thread,
    open_store,
    random_checkpoint,
    tiny_loop,
    write_synthetic_run,
)
from torch.utils.data import DataLoader

from storage.models import Checkpoint, TrainingMetric, TrainingRound
from takeover.datasets import FeatureSpec, PairDataset, collate_pairs, select_pairs
from takeover.dpo import DPOConfig, DPOTrainer, assert_frozen, dpo_round, freeze, pair_logps
from takeover.policy.checkpoint import load_checkpoint
from takeover.policy.model import build_model
from takeover.preferences import PairConfig, build_preference_pairs
from takeover.training import MetricLogger, Precision, TrainingError, seed_everything

CPU = Precision(torch.device("cpu"), None)
SPEC = FeatureSpec.of(TINY_POLICY)
TRL_NAMES = {
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("dpo")
    store = open_store(path)
    write_synthetic_run(store, "syn", demos=0, rollouts=2, iterations=2)
    parent = random_checkpoint(path / "parent.pt", seed=0)
    yield store, path, parent
    store.close()


def dpo_config(runs_dir: Path, **kw) -> DPOConfig:
    loop = kw.pop("loop", tiny_loop(runs_dir, epochs=4, lr=1e-3, batch_size=8))
    return DPOConfig(loop=loop, **kw)


def test_dpo_round_increases_the_chosen_over_rejected_margin(world):
    store, path, parent = world
    result = dpo_round(store, "syn", 0, parent, dpo_config(path / "runs"))
    m = result.metrics
    # The policy starts as its reference: implicit rewards 0. After the round the expert's plans gain
    assert m["eval_rewards/margins"] > 0 and m["eval_rewards/accuracies"] == 1.0
    assert (
        m["eval_logps/chosen"] - m["eval_logps/rejected"]
        > m["eval_logps/chosen_before"] - m["eval_logps/rejected_before"]
    )
    assert m["eval_loss"] < 0.6931  # below log 2, the loss of a policy equal to its reference
    assert m["pairs"] == 6 and m["pairs_new"] == 6 and m["pairs_skipped_margin"] == 4
    assert set(m) >= TRL_NAMES and {f"eval_{n}" for n in TRL_NAMES} <= set(m)


def test_dpo_round_is_recorded_with_its_parent_and_trl_curves(world):
    store, path, parent = world
    result = dpo_round(store, "syn", 0, parent, dpo_config(path / "runs-rec", round_prefix="rec"))
    with Session(store.engine) as session:
        round_ = session.execute(select(TrainingRound).where(TrainingRound.name == "rec-0")).scalar_one()
        out = session.get(Checkpoint, round_.output_checkpoint_id)
        inp = session.get(Checkpoint, round_.input_checkpoint_id)
        names = set(
            session.execute(select(TrainingMetric.name).where(TrainingMetric.round_id == round_.id)).scalars()
        )
    assert round_.kind == "dpo" and round_.status == "completed"
    assert out.sha256 == result.sha256 and out.parent_id == inp.id and inp.sha256 == result.parent_sha256
    assert names >= TRL_NAMES and "eval_rewards/margins" in names
    assert result.checkpoint_path == path / "runs-rec" / "syn" / "ckpt" / "rec-0.pt"


@pytest.mark.parametrize("loss_type", ["ipo", "hinge", "robust"])
def test_every_loss_type_raises_the_margin(world, loss_type: str):
    store, path, parent = world
    config = dpo_config(
        path / f"runs-{loss_type}", loss_type=loss_type, label_smoothing=0.1 if loss_type == "robust" else 0.0,
        round_prefix=loss_type,
    )  # fmt: skip
    assert dpo_round(store, "syn", 0, parent, config).metrics["eval_rewards/margins"] > 0


def test_the_reference_model_stays_frozen_and_unchanged(world):
    store, path, parent = world
    build_preference_pairs(store, "syn", 0, PairConfig(), SPEC)
    dataset = PairDataset(store, select_pairs(store, "syn", 0, ["expert_vs_policy"], SPEC), cache_clips=4)
    loader = DataLoader(dataset, batch_size=4, shuffle=False, collate_fn=collate_pairs)
    seed_everything(0)
    model, _, _ = load_checkpoint(parent)
    reference = freeze(copy.deepcopy(model))
    before = {k: v.clone() for k, v in reference.state_dict().items()}
    trainer = DPOTrainer(model, reference, dpo_config(path / "unused"), CPU)
    # When the policy is optimised
    trainer.fit(loader, MetricLogger(None))
    # Then the reference is byte-identical, without gradients, in eval mode; the policy moved
    after = reference.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad and p.grad is None for p in reference.parameters())
    assert not reference.training
    assert any(not torch.equal(before[k], model.state_dict()[k]) for k in before)


def test_a_trainable_reference_is_refused(world):
    _, path, _ = world
    policy, reference = build_model(TINY_POLICY), build_model(TINY_POLICY)
    with pytest.raises(TrainingError, match="must be frozen"):
        DPOTrainer(policy, reference, dpo_config(path), CPU)
    with pytest.raises(TrainingError, match="two models"):
        DPOTrainer(policy, freeze(policy), dpo_config(path), CPU)
    with pytest.raises(TrainingError):
        assert_frozen(reference)


def test_two_dpo_rounds_with_one_seed_give_identical_weights(world):
    store, path, parent = world
    weights = []
    for name in ("a", "b"):
        result = dpo_round(
            store, "syn", 0, parent, dpo_config(path / f"runs-det-{name}", round_prefix=f"det{name}")
        )
        weights.append(torch.load(result.checkpoint_path, weights_only=True)["state_dict"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_pair_frames_stay_decoded_across_epochs_and_match_the_full_clips(world):
    store = world[0]
    build_preference_pairs(store, "syn", 0, PairConfig(), SPEC)
    index = select_pairs(store, "syn", 0, ["expert_vs_policy"], SPEC)
    clips = len(set(index.clip_id.tolist()))
    # Given a pair set read through a one-clip cache of whole clips and through the pair-row cache
    whole = PairDataset(store, index, cache_clips=1, cache_mib=0)
    rows = PairDataset(store, index, cache_clips=1, cache_mib=64)
    # When every pair is read twice (two epochs), the clips interleaved
    order = sorted(range(len(index)), key=lambda i: (i % 2, i)) * 2
    for i in order:
        a, b = whole[i], rows[i]
        assert torch.equal(a.features.bev, b.features.bev) and torch.equal(a.chosen_control, b.chosen_control)
    # Then the pair-row cache decoded each clip once and kept only the pairs' frames
    assert rows.cache.loads == clips < whole.cache.loads
    frame_bytes = SPEC.channels * SPEC.size_px**2
    assert rows.cache.nbytes < (len(set(zip(index.clip_id, index.row, strict=True))) + 1) * 2 * frame_bytes


def test_control_log_densities_count_only_where_asked(world):
    store = world[0]
    build_preference_pairs(store, "syn", 0, PairConfig(), SPEC)
    dataset = PairDataset(store, select_pairs(store, "syn", 0, ["expert_vs_policy"], SPEC), cache_clips=4)
    batch = collate_pairs([dataset[i] for i in range(len(dataset))])
    model = build_model(TINY_POLICY).eval()
    with torch.no_grad():
        traj_c, _ = pair_logps(model, batch, CPU, use_control=False)
        both_c, _ = pair_logps(model, batch, CPU, use_control=True)
        dist = model(batch.features)
    assert torch.allclose(traj_c, dist.trajectory_log_prob(batch.chosen_waypoints))
    assert torch.allclose(both_c - traj_c, dist.control_log_prob(batch.chosen_control))


def test_dpo_without_pairs_says_what_to_do(tmp_path: Path):
    store = open_store(tmp_path)
    parent = random_checkpoint(tmp_path / "p.pt")
    with pytest.raises(TrainingError, match="no preference pairs"):
        dpo_round(store, "none", 0, parent, dpo_config(tmp_path / "runs"))
    with Session(store.engine) as session:
        assert session.execute(select(TrainingRound.status)).scalar_one() == "failed"


def test_bad_dpo_settings_are_named(world):
    store, path, parent = world
    with pytest.raises(TrainingError, match=r"dpo\.beta"):
        dpo_round(store, "syn", 0, parent, dpo_config(path, beta=0.0))
    with pytest.raises(TrainingError, match=r"dpo\.loss_type"):
        dpo_round(store, "syn", 0, parent, dpo_config(path, loss_type="kto"))
