"""A DAgger round: aggregate the expert's labels of the takeover states with the base data, fine-tune.

Data of round k (HG-DAgger style, extended with the pre-takeover window):
    D_k = sample(base demonstrations, base_fraction)
        + expert-labelled frames of every takeover clip of iterations 0..k
          (takeover frames x takeover_weight, pre-takeover frames x pre_takeover_weight)
DA-RB keeps about 20% of the base data per iteration (base_fraction = 0.2); 1.0 keeps all of it.
Training continues from the current checkpoint (its parent), with a smaller learning rate than BC.
Reported besides the training curves: the imitation loss on the takeover frames (unweighted) before
and after the round, the number DAgger exists to lower.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from storage.store import Store
from takeover.bc import evaluate_imitation, fit_imitation, frame_loader
from takeover.datasets import (
    DataConfig,
    DatasetError,
    FeatureSpec,
    FrameDataset,
    FrameIndex,
    FrameRole,
    KeyframeWeighting,
    select_demo_frames,
    select_takeover_frames,
    subsample,
    validate_data_config,
)
from takeover.losses import ImitationWeights
from takeover.training import (
    LoopConfig,
    MetricLogger,
    RoundTracker,
    TrainingError,
    TrainResult,
    config_dict,
    deterministic_mode,
    load_parent,
    resolve_precision,
    round_spec,
    seed_everything,
    tracked_round,
    validate_loop_config,
)


@dataclass
class DAggerConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=5, lr=1e-4))
    loss: ImitationWeights = field(default_factory=ImitationWeights)
    data: DataConfig = field(default_factory=DataConfig)
    base_fraction: float = 1.0  # share of the base demonstrations mixed in each round (DA-RB: ~0.2)
    round_prefix: str = "dagger"  # round name and checkpoint runs/<run>/ckpt/<round_prefix>-<k>.pt


def validate_dagger_config(config: DAggerConfig, where: str = "dagger") -> None:
    validate_loop_config(config.loop, f"{where}.loop")
    validate_data_config(config.data, f"{where}.data")
    if not 0.0 <= config.base_fraction <= 1.0:
        raise TrainingError(f"{where}.base_fraction={config.base_fraction} must be in [0, 1]")
    if not config.round_prefix or "/" in config.round_prefix:
        raise TrainingError(
            f"{where}.round_prefix={config.round_prefix!r} must be a non-empty name without '/'"
        )


def dagger_data(
    store: Store, run: str, iteration: int, config: DAggerConfig, spec: FeatureSpec
) -> tuple[FrameIndex, FrameIndex]:
    """(aggregate, takeover frames of iterations <= `iteration`) of a round."""
    takeovers = select_takeover_frames(store, run, iteration, config.data, spec)
    if len(takeovers) == 0:
        raise DatasetError(
            f"no expert-labelled takeover frames for run {run!r} up to iteration {iteration} "
            f"(episode phases {list(config.data.rollout_phases)}); collect them first: "
            f"takeover collect takeovers --run {run} --iteration {iteration}"
        )
    base = subsample(
        select_demo_frames(store, run, config.data, spec), config.base_fraction, config.loop.seed + iteration
    )
    return FrameIndex.concat([base, takeovers]), takeovers


def dagger_round(
    store: Store,
    run: str,
    iteration: int,
    parent_checkpoint: str | os.PathLike[str],
    config: DAggerConfig | None = None,
) -> TrainResult:
    """Fine-tune `parent_checkpoint` on the aggregate of iteration `iteration`; returns the new policy.

    Metrics include takeover_loss_before / takeover_loss_after (imitation loss on the frames the
    expert drove, unweighted) and, when present, pre_takeover_loss_before / _after.
    """
    config = config or DAggerConfig()
    validate_dagger_config(config)
    loop = config.loop
    rspec = round_spec(run, "dagger", f"{config.round_prefix}-{iteration}", iteration, loop.runs_dir)
    parent = load_parent(store, parent_checkpoint)
    spec = FeatureSpec.of(parent.policy_config)
    aggregate, takeover_frames = dagger_data(store, run, iteration, config, spec)
    precision = resolve_precision(loop.device, loop.amp)
    tracker = RoundTracker(store, rspec, config_dict(config), parent_sha256=parent.sha256)
    with deterministic_mode(loop.deterministic), tracked_round(tracker):
        generator = seed_everything(loop.seed + iteration)
        model = parent.model.to(precision.device)
        data = config.data
        train_loader = frame_loader(
            FrameDataset(store, aggregate, data.cache_clips, KeyframeWeighting.of(data, spec)),
            loop.batch_size,
            data,
            precision,
            generator,
        )
        probes = {
            "takeover": takeover_frames.subset(takeover_frames.role == FrameRole.TAKEOVER),
            "pre_takeover": takeover_frames.subset(takeover_frames.role == FrameRole.PRE_TAKEOVER),
        }
        probe_loaders = {
            name: frame_loader(
                FrameDataset(store, idx, data.cache_clips), loop.batch_size, data, precision, None
            )
            for name, idx in probes.items()
            if len(idx)
        }

        def probe_losses(when: str) -> dict[str, float]:
            return {
                f"{name}_loss_{when}": evaluate_imitation(
                    model, loader, config.loss, precision, "", weighted=False
                )["loss"]
                for name, loader in probe_loaders.items()
            }

        logger = MetricLogger(rspec.tb_dir if loop.tensorboard else None)
        try:
            before = probe_losses("before")
            logger.log({f"eval_{k}": v for k, v in before.items()}, 0)
            outcome = fit_imitation(model, train_loader, None, loop, config.loss, precision, logger)
            after = probe_losses("after")
            logger.log({f"eval_{k}": v for k, v in after.items()}, outcome.steps)
        finally:
            logger.close()
        metrics = {
            **outcome.train_metrics,
            **before,
            **after,
            "frames": float(len(aggregate)),
            "base_frames": float(aggregate.count(FrameRole.DEMO)),
            "takeover_frames": float(takeover_frames.count(FrameRole.TAKEOVER)),
            "pre_takeover_frames": float(takeover_frames.count(FrameRole.PRE_TAKEOVER)),
        }
        return tracker.save_and_finish(
            model, parent.policy_config, metrics, logger, len(aggregate), outcome.steps, outcome.samples_per_s
        )
