"""Behaviour cloning: policy v0 from the expert's demonstrations, and the imitation loop DAgger reuses.

The loop (CleanRL-style, one function): for each epoch, for each batch of expert-labelled frames,
loss = imitation_loss(policy(features), expert waypoints, expert control, ego speed; sample weights)
(see takeover.losses), AdamW step with gradient clipping and the LR schedule; training metrics every
`log_every_steps`, validation metrics (episodes held out) after every epoch, both to TensorBoard
(runs/<run>/tb/<round>) and to the training_rounds row of the round.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader

from storage.store import Store
from takeover.datasets import (
    DataConfig,
    DatasetError,
    FeatureSpec,
    FrameBatch,
    FrameDataset,
    FrameIndex,
    FrameRole,
    KeyframeWeighting,
    clip_block_loader,
    collate_frames,
    select_demo_frames,
    split_by_episode,
    validate_data_config,
)
from takeover.losses import ImitationWeights, imitation_loss
from takeover.policy.config import PolicyConfig, load_policy_config
from takeover.policy.model import build_model
from takeover.training import (
    LoopConfig,
    MeanAccumulator,
    MetricLogger,
    Precision,
    RoundTracker,
    Throughput,
    TrainingError,
    TrainResult,
    config_dict,
    deterministic_mode,
    float32_plan,
    make_optimisation,
    resolve_precision,
    round_spec,
    seed_everything,
    total_steps,
    tracked_round,
    validate_loop_config,
)


@dataclass
class BCConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=20, lr=3e-4))
    loss: ImitationWeights = field(default_factory=ImitationWeights)
    data: DataConfig = field(default_factory=DataConfig)
    val_fraction: float = 0.1  # share of demonstration episodes held out for validation
    round_name: str = "bc"  # checkpoint runs/<run>/ckpt/<round_name>.pt


def validate_bc_config(config: BCConfig, where: str = "bc") -> None:
    validate_loop_config(config.loop, f"{where}.loop")
    validate_data_config(config.data, f"{where}.data")
    if not 0.0 <= config.val_fraction < 1.0:
        raise TrainingError(f"{where}.val_fraction={config.val_fraction} must be in [0, 1)")
    if not config.round_name or "/" in config.round_name:
        raise TrainingError(f"{where}.round_name={config.round_name!r} must be a non-empty name without '/'")


def frame_loader(
    dataset: FrameDataset,
    batch_size: int,
    data: DataConfig,
    precision: Precision,
    generator: torch.Generator | None,
) -> DataLoader:
    """Batches of FrameBatch; shuffled in clip blocks when a generator is given, in order otherwise."""
    return clip_block_loader(
        dataset,
        batch_size,
        data.block_clips,
        data.num_workers,
        collate_frames,
        precision.device.type == "cuda",
        generator,
    )


def imitation_batch(
    model: nn.Module,
    batch: FrameBatch,
    weights: ImitationWeights,
    precision: Precision,
    weighted: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Imitation loss of one batch (network under autocast, the loss in float32)."""
    with precision.autocast():
        dist = model(batch.features)
    return imitation_loss(
        float32_plan(dist),
        batch.waypoints,
        batch.control,
        weights,
        target_speed=batch.speed,
        sample_weight=batch.weight if weighted else None,
    )


@torch.no_grad()
def evaluate_imitation(
    model: nn.Module,
    loader: DataLoader,
    weights: ImitationWeights,
    precision: Precision,
    prefix: str = "eval_",
    weighted: bool = True,
) -> dict[str, float]:
    """Imitation metrics over a whole loader: batch means weighted by the batch's total sample weight
    (its size when `weighted` is False), so the loss is the data set's weighted mean."""
    was_training = model.training
    model.eval()
    acc = MeanAccumulator()
    try:
        for batch in loader:
            batch = batch.to(precision.device)
            _, metrics = imitation_batch(model, batch, weights, precision, weighted)
            acc.add(metrics, float(batch.weight.sum()) if weighted else float(len(batch)))
    finally:
        model.train(was_training)
    return acc.means(prefix)


@dataclass(frozen=True)
class FitOutcome:
    steps: int
    samples_per_s: float
    train_metrics: dict[str, float]  # means over the last epoch
    eval_metrics: dict[str, float]  # after the last epoch (empty without validation data)


def fit_imitation(
    model: nn.Module,
    train: DataLoader,
    val: DataLoader | None,
    loop: LoopConfig,
    weights: ImitationWeights,
    precision: Precision,
    logger: MetricLogger,
) -> FitOutcome:
    """The imitation training loop (BC and DAgger)."""
    steps = total_steps(loop, len(train))
    optim = make_optimisation(model, loop, steps, precision)
    throughput = Throughput()
    model.train()
    step = 0
    epoch_metrics: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}
    for epoch in range(loop.epochs):
        if step >= steps:
            break
        acc = MeanAccumulator()
        throughput.start()
        seen = 0
        for batch in train:
            batch = batch.to(precision.device)
            loss, metrics = imitation_batch(model, batch, weights, precision)
            lr = optim.lr
            grad_norm = optim.step(loss)
            step += 1
            seen += len(batch)
            acc.add(metrics, float(len(batch)))
            if step % loop.log_every_steps == 0 or step == steps:
                logger.log({**metrics, "grad_norm": grad_norm, "learning_rate": lr, "epoch": epoch}, step)
            if step >= steps:
                break
        throughput.stop(seen, precision.device)
        epoch_metrics = acc.means()
        if val is not None:
            eval_metrics = evaluate_imitation(model, val, weights, precision)
            logger.log(eval_metrics, step)
    return FitOutcome(step, throughput.samples_per_s, epoch_metrics, eval_metrics)


def train_bc(
    store: Store, run: str, config: BCConfig | None = None, policy_config: PolicyConfig | None = None
) -> TrainResult:
    """Policy v0 of `run` from its demonstrations (or those of config.data.demo_run).

    Episodes are split into train / validation; the checkpoint (parent None) is saved at
    runs/<run>/ckpt/<round_name>.pt and recorded with its sha256; metrics go to TensorBoard and the DB.
    """
    config = config or BCConfig()
    validate_bc_config(config)
    policy_config = policy_config or load_policy_config()
    spec = FeatureSpec.of(policy_config)
    loop = config.loop
    rspec = round_spec(run, "bc", config.round_name, None, loop.runs_dir)
    index = select_demo_frames(store, run, config.data, spec)
    if len(index) == 0:
        demo_run = config.data.demo_run or run
        raise DatasetError(
            f"no demonstration frames for run {demo_run!r} (episode phases {list(config.data.demo_phases)}); "
            f"collect them first: takeover collect demos --run {demo_run}"
        )
    train_index, val_index = split_by_episode(index, config.val_fraction, loop.seed)
    precision = resolve_precision(loop.device, loop.amp)
    tracker = RoundTracker(store, rspec, config_dict(config), parent_sha256=None)
    with deterministic_mode(loop.deterministic), tracked_round(tracker):
        generator = seed_everything(loop.seed)
        model = build_model(policy_config).to(precision.device)
        train_loader = frame_loader(
            FrameDataset(
                store, train_index, config.data.cache_clips, KeyframeWeighting.of(config.data, spec)
            ),
            loop.batch_size,
            config.data,
            precision,
            generator,
        )
        val_loader = (
            frame_loader(
                FrameDataset(store, val_index, config.data.cache_clips),
                loop.batch_size,
                config.data,
                precision,
                None,
            )
            if len(val_index)
            else None
        )
        logger = MetricLogger(rspec.tb_dir if loop.tensorboard else None)
        try:
            outcome = fit_imitation(model, train_loader, val_loader, loop, config.loss, precision, logger)
        finally:
            logger.close()
        metrics = {
            **outcome.train_metrics,
            **outcome.eval_metrics,
            "train_frames": float(len(train_index)),
            "val_frames": float(len(val_index)),
            "episodes": float(len(set(index.episode_id.tolist()))),
        }
        return tracker.save_and_finish(
            model, policy_config, metrics, logger, len(train_index), outcome.steps, outcome.samples_per_s
        )


def describe_index(index: FrameIndex) -> str:
    """One line on what a frame index holds, e.g. for logs: frames per role and episodes."""
    parts = [f"{role.name.lower()}={index.count(role)}" for role in FrameRole if index.count(role)]
    return f"{len(index)} frames ({', '.join(parts) or 'none'}) from {len(set(index.episode_id.tolist()))} episodes"
