"""Shared training utilities: LR schedules, precision, seeding flags, metric logging, round bookkeeping."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session
from test_train_synthetic import TINY_POLICY, open_store, random_checkpoint  # noqa: F401

from storage.models import Checkpoint
from takeover.policy.checkpoint import file_sha256, save_checkpoint
from takeover.policy.model import build_model
from takeover.training import (
    LoopConfig,
    MeanAccumulator,
    MetricLogger,
    TrainingError,
    deterministic_mode,
    load_parent,
    lr_factor,
    resolve_precision,
    round_spec,
    seed_everything,
    tensorboard_tag,
    total_steps,
    validate_loop_config,
)


def test_lr_factor_warmup_cosine_and_constant():
    # Warm-up over 4 steps: 1/4, 2/4, 3/4, 4/4
    assert [lr_factor(s, 20, "cosine", 4, 0.0) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    # Cosine from 1 at the end of warm-up to the floor at the last step, 0.5 (+ floor share) half way
    assert lr_factor(4, 20, "cosine", 4, 0.1) == pytest.approx(1.0)
    assert lr_factor(19, 20, "cosine", 4, 0.1) == pytest.approx(0.1)
    mid = 4 + (20 - 1 - 4) / 2
    assert lr_factor(int(mid), 20, "cosine", 4, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 15)))
    assert lr_factor(10, 20, "constant", 0, 0.0) == 1.0


def test_total_steps_caps_at_max_steps():
    assert total_steps(LoopConfig(epochs=3), 10) == 30
    assert total_steps(LoopConfig(epochs=3, max_steps=7), 10) == 7


def test_cpu_runs_in_float32_whatever_amp_says():
    for amp in ("off", "bf16", "fp16"):
        precision = resolve_precision("cpu", amp)
        assert precision.dtype is None and precision.name == "fp32"
        assert not precision.grad_scaler().is_enabled()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_cuda_without_it_is_one_clear_error():
    with pytest.raises(TrainingError, match=r"dagger\.loop\.device.*CUDA is not available"):
        validate_loop_config(LoopConfig(device="cuda"), "dagger.loop")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("batch_size", 0),
        ("lr", 0.0),
        ("amp", "fp8"),
        ("lr_schedule", "step"),
        ("min_lr_ratio", 2.0),
    ],
)
def test_bad_loop_values_are_named(field: str, value: object):
    with pytest.raises(TrainingError, match=rf"bc\.loop\.{field}"):
        validate_loop_config(LoopConfig(**{field: value}), "bc.loop")


def test_seeding_repeats_random_draws_and_deterministic_mode_restores_flags():
    seed_everything(5)
    a = torch.rand(3)
    g = seed_everything(5)
    assert torch.equal(a, torch.rand(3)) and torch.equal(
        torch.randperm(10, generator=g), torch.randperm(10, generator=seed_everything(5))
    )
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic_mode(True):
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


def test_tensorboard_tags_follow_the_trainer_convention():
    assert tensorboard_tag("eval_rewards/margins") == "eval/rewards/margins"
    assert tensorboard_tag("loss") == "train/loss"


def test_metric_logger_writes_events_and_refuses_nan(tmp_path: Path):
    logger = MetricLogger(tmp_path / "tb")
    logger.log({"loss": 1.5, "rewards/chosen": 0.1}, step=3)
    with pytest.raises(TrainingError, match="diverged"):
        logger.log({"loss": float("nan")}, step=4)
    logger.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert [(p.name, p.step, p.value) for p in logger.history] == [
        ("loss", 3, 1.5),
        ("rewards/chosen", 3, 0.1),
    ]


def test_mean_accumulator_weights_batches():
    acc = MeanAccumulator()
    acc.add({"loss": 1.0}, 3.0)
    acc.add({"loss": 3.0}, 1.0)
    assert acc.means("eval_") == {"eval_loss": pytest.approx(1.5)}


def test_round_paths_and_bad_run_names(tmp_path: Path):
    spec = round_spec("town01", "dpo", "dpo-2", 2, str(tmp_path))
    assert spec.checkpoint_path == tmp_path / "town01" / "ckpt" / "dpo-2.pt"
    assert spec.tb_dir == tmp_path / "town01" / "tb" / "dpo-2"
    with pytest.raises(TrainingError, match="without slashes"):
        round_spec("../x", "bc", "bc", None, str(tmp_path))


def test_load_parent_records_a_foreign_checkpoint_once(tmp_path: Path):
    store = open_store(tmp_path)
    # Given a checkpoint trained elsewhere whose extras name a parent this database does not know
    path = tmp_path / "foreign.pt"
    save_checkpoint(
        path, build_model(TINY_POLICY), TINY_POLICY, {"kind": "dagger", "parent_sha256": "ab" * 32}
    )
    # When it is loaded as a round's parent (twice)
    first = load_parent(store, path)
    second = load_parent(store, path)
    # Then it is recorded once, by content, without the unknown parent
    assert first.sha256 == second.sha256 == file_sha256(path)
    with Session(store.engine) as session:
        (row,) = session.execute(select(Checkpoint)).scalars().all()
    assert row.sha256 == first.sha256 and row.parent_id is None and row.kind == "dagger"
