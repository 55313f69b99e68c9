"""Behaviour cloning and DAgger rounds on synthetic clips: losses fall, checkpoints and rounds are recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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

from storage.models import Checkpoint, TrainingMetric, TrainingRound
from takeover.bc import BCConfig, train_bc, validate_bc_config
from takeover.dagger import DAggerConfig, dagger_round, validate_dagger_config
from takeover.datasets import DataConfig, DatasetError
from takeover.policy.checkpoint import file_sha256, load_checkpoint
from takeover.training import TrainingError


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """A synthetic run and its BC policy v0 (trained once for the module)."""
    path = tmp_path_factory.mktemp("bc")
    store = open_store(path)
    write_synthetic_run(store, "syn", demos=3, rollouts=2, iterations=2)
    bc = train_bc(store, "syn", BCConfig(loop=tiny_loop(path / "runs", epochs=6)), TINY_POLICY)
    yield store, path, bc
    store.close()


def rows(store, model, **where):
    with Session(store.engine) as session:
        return session.execute(select(model).filter_by(**where)).scalars().all()


def test_bc_from_demonstrations_reduces_the_imitation_loss(world):
    bc = world[2]
    losses = [p.value for p in bc.history if p.name == "loss"]
    # Then the last steps' loss is well below the first step's (an untrained network)
    assert len(losses) == bc.steps and np.mean(losses[-3:]) < 0.5 * losses[0]
    assert bc.metrics["eval_loss"] < losses[0]  # held-out episodes improve too
    assert bc.metrics["train_frames"] + bc.metrics["val_frames"] == 3 * 32


def test_bc_checkpoint_is_saved_and_recorded_without_parent(world):
    store, path, bc = world
    assert bc.checkpoint_path == path / "runs" / "syn" / "ckpt" / "bc.pt"
    assert file_sha256(bc.checkpoint_path) == bc.sha256 and bc.parent_sha256 is None
    (ckpt,) = rows(store, Checkpoint, sha256=bc.sha256)
    assert ckpt.parent_id is None and ckpt.kind == "bc"
    (round_,) = rows(store, TrainingRound, kind="bc")
    assert round_.status == "completed" and round_.output_checkpoint_id == ckpt.id
    assert round_.metrics["loss"] == pytest.approx(bc.metrics["loss"]) and round_.n_samples == bc.n_samples
    assert len(rows(store, TrainingMetric, round_id=round_.id, name="loss")) == bc.steps
    _, config, extra = load_checkpoint(bc.checkpoint_path)
    assert config.bev.size_px == 16 and extra["kind"] == "bc" and extra["parent_sha256"] is None


def test_dagger_round_lowers_the_loss_on_takeover_frames(world):
    store, path, bc = world
    # Given policy v0 that never saw the obstacle; when one DAgger round runs on iteration 0's takeovers
    result = dagger_round(
        store, "syn", 0, bc.checkpoint_path, DAggerConfig(loop=tiny_loop(path / "runs", epochs=4))
    )
    m = result.metrics
    # Then the imitation loss on the frames the expert drove falls, and on the pre-takeover window too
    assert m["takeover_loss_after"] < 0.5 * m["takeover_loss_before"]
    assert m["pre_takeover_loss_after"] < m["pre_takeover_loss_before"]
    # And the aggregate is the base demos plus iteration 0's takeover and pre-takeover frames
    assert m["base_frames"] == 96 and m["takeover_frames"] == 24 and m["pre_takeover_frames"] == 40
    assert result.checkpoint_path.name == "dagger-0.pt" and result.parent_sha256 == bc.sha256
    (child,) = rows(store, Checkpoint, sha256=result.sha256)
    (parent,) = rows(store, Checkpoint, sha256=bc.sha256)
    assert child.parent_id == parent.id


def test_dagger_base_fraction_keeps_part_of_the_demonstrations(world):
    store, path, bc = world
    config = DAggerConfig(
        loop=tiny_loop(path / "runs-frac", epochs=1), base_fraction=0.2, round_prefix="darb"
    )
    result = dagger_round(store, "syn", 1, bc.checkpoint_path, config)
    assert result.metrics["base_frames"] == round(0.2 * 96)
    assert result.metrics["takeover_frames"] == 48  # iterations 0 and 1


def test_two_rounds_with_one_seed_give_identical_weights(world):
    store, path, bc = world
    states = []
    for name in ("a", "b"):
        config = DAggerConfig(
            loop=tiny_loop(path / f"runs-{name}", epochs=2, seed=7), round_prefix=f"det-{name}"
        )
        result = dagger_round(store, "syn", 0, bc.checkpoint_path, config)
        states.append(torch.load(result.checkpoint_path, weights_only=True)["state_dict"])
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    different = DAggerConfig(loop=tiny_loop(path / "runs-c", epochs=2, seed=8), round_prefix="det-c")
    other = torch.load(
        dagger_round(store, "syn", 0, bc.checkpoint_path, different).checkpoint_path, weights_only=True
    )
    assert any(not torch.equal(states[0][k], other["state_dict"][k]) for k in states[0])


def test_bc_without_demonstrations_says_how_to_collect_them(tmp_path: Path):
    store = open_store(tmp_path)
    with pytest.raises(DatasetError, match="takeover collect demos --run empty"):
        train_bc(store, "empty", BCConfig(loop=tiny_loop(tmp_path / "runs")), TINY_POLICY)


def test_dagger_without_takeovers_says_how_to_collect_them(tmp_path: Path):
    store = open_store(tmp_path)
    parent = random_checkpoint(tmp_path / "p.pt")
    with pytest.raises(DatasetError, match="takeover collect takeovers --run x --iteration 2"):
        dagger_round(store, "x", 2, parent, DAggerConfig(loop=tiny_loop(tmp_path / "runs")))


def test_bad_settings_are_named():
    with pytest.raises(TrainingError, match=r"bc\.loop\.lr_schedule"):
        validate_bc_config(BCConfig(loop=tiny_loop(Path("."), lr_schedule="linear")))
    with pytest.raises(TrainingError, match=r"dagger\.base_fraction"):
        validate_dagger_config(DAggerConfig(base_fraction=1.5))
    with pytest.raises(TrainingError, match=r"bc\.data\.pre_takeover_weight"):
        validate_bc_config(BCConfig(data=DataConfig(pre_takeover_weight=-1)))
