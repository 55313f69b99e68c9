"""A DPO round: prefer the expert's plan over the policy's at and before the takeovers (TRL's DPOTrainer).

For a pair (state x, chosen y_w, rejected y_l) and the frozen reference pi_ref (the round's parent):
    rho_w = log pi(y_w|x) - log pi_ref(y_w|x),  rho_l likewise,  Delta = rho_w - rho_l
    loss = sum_i s_i l(Delta_i) / sum_i s_i     (pair weights s; l: sigmoid / ipo / hinge / robust,
                                                  + rpo_alpha * -log pi(y_w|x), see takeover.losses)
log pi(y|x) is the Laplace log-density of the plan's K ego-frame waypoints under the policy's
PlanDistribution, plus (use_control, expert-vs-policy pairs) the Beta log-density of the control.
Logged with TRL's names: loss, rewards/chosen (mean beta rho_w), rewards/rejected, rewards/margins,
rewards/accuracies, logps/chosen, logps/rejected; evaluation over all pairs with the "eval_" prefix.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader

from storage.store import Store
from takeover.datasets import (
    DatasetError,
    FeatureSpec,
    PairBatch,
    PairDataset,
    clip_block_loader,
    collate_pairs,
    select_pairs,
)
from takeover.losses import DPO_LOSS_TYPES, dpo_loss, dpo_metrics
from takeover.preferences import PairConfig, build_preference_pairs, validate_pair_config
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
    load_parent,
    make_optimisation,
    resolve_precision,
    round_spec,
    seed_everything,
    total_steps,
    tracked_round,
    validate_loop_config,
)


@dataclass
class DPOConfig:
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=3, lr=5e-5, batch_size=32))
    beta: float = 0.1  # KL strength: larger keeps the policy closer to the reference (TRL default 0.1)
    loss_type: str = "sigmoid"  # sigmoid | ipo | hinge | robust
    label_smoothing: float = 0.0  # conservative DPO / robust DPO noise rate, in [0, 0.5)
    rpo_alpha: float = 0.0  # weight of the NLL on the chosen plan (RPO); 0 = off
    use_control: bool = True  # add the control log-density where the pair has both controls
    build_pairs: bool = True  # build (idempotently) the pairs of the round's takeovers before training
    only_current_iteration: bool = False  # train on this iteration's pairs only (else iterations <= k)
    pairs: PairConfig = field(default_factory=PairConfig)
    cache_clips: int = 16  # decoded clips kept in memory when cache_mib is 0
    cache_mib: float = 2048.0  # memory for the pairs' frames (a clip keeps only those); 0 = cache_clips
    block_clips: int = 8  # clips shuffled together (see datasets.BlockShuffleSampler)
    num_workers: int = 0  # DataLoader worker processes
    round_prefix: str = "dpo"  # round name and checkpoint runs/<run>/ckpt/<round_prefix>-<k>.pt


def validate_dpo_config(config: DPOConfig, where: str = "dpo") -> None:
    validate_loop_config(config.loop, f"{where}.loop")
    validate_pair_config(config.pairs, f"{where}.pairs")
    if not config.beta > 0:
        raise TrainingError(f"{where}.beta={config.beta} must be > 0 (TRL's default is 0.1)")
    if config.loss_type not in DPO_LOSS_TYPES:
        raise TrainingError(f"{where}.loss_type={config.loss_type!r}; use one of {', '.join(DPO_LOSS_TYPES)}")
    if not 0.0 <= config.label_smoothing < 0.5:
        raise TrainingError(f"{where}.label_smoothing={config.label_smoothing} must be in [0, 0.5)")
    if config.rpo_alpha < 0:
        raise TrainingError(f"{where}.rpo_alpha={config.rpo_alpha} must be >= 0")
    if config.cache_clips < 1 or config.block_clips < 1 or config.num_workers < 0 or config.cache_mib < 0:
        raise TrainingError(
            f"{where}: cache_clips and block_clips must be >= 1, num_workers and cache_mib >= 0"
        )
    if not config.round_prefix or "/" in config.round_prefix:
        raise TrainingError(
            f"{where}.round_prefix={config.round_prefix!r} must be a non-empty name without '/'"
        )


def freeze(model: nn.Module) -> nn.Module:
    """The model in eval mode with requires_grad False on every parameter (a DPO reference)."""
    model.eval()
    model.requires_grad_(False)
    return model


def assert_frozen(model: nn.Module) -> None:
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    if trainable or model.training:
        raise TrainingError(
            f"the DPO reference model must be frozen (eval mode, no gradients); trainable: {trainable[:3]}, "
            f"training mode: {model.training}"
        )


def pair_logps(
    model: nn.Module, batch: PairBatch, precision: Precision, use_control: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(y_w|x), log pi(y_l|x)), each (B,): trajectory log-density + control log-density where
    the pair has controls and `use_control`."""
    with precision.autocast():
        dist = model(batch.features)
    dist = float32_plan(dist)
    chosen = dist.trajectory_log_prob(batch.chosen_waypoints)
    rejected = dist.trajectory_log_prob(batch.rejected_waypoints)
    if use_control and bool(batch.has_control.any()):
        mask = batch.has_control.to(chosen.dtype)
        chosen = chosen + mask * dist.control_log_prob(batch.chosen_control)
        rejected = rejected + mask * dist.control_log_prob(batch.rejected_control)
    return chosen, rejected


@dataclass(frozen=True)
class DPOFit:
    steps: int
    samples_per_s: float
    train_metrics: dict[str, float]  # means over the last epoch


class DPOTrainer:
    """Optimises `policy` against a frozen `reference` on preference pairs."""

    def __init__(
        self, policy: nn.Module, reference: nn.Module, config: DPOConfig, precision: Precision
    ) -> None:
        if policy is reference:
            raise TrainingError("the DPO policy and reference must be two models (copy the parent first)")
        assert_frozen(reference)
        self.policy = policy
        self.reference = reference
        self.config = config
        self.precision = precision

    def batch_loss(self, batch: PairBatch) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        policy_c, policy_r = pair_logps(self.policy, batch, self.precision, c.use_control)
        with torch.no_grad():
            ref_c, ref_r = pair_logps(self.reference, batch, self.precision, c.use_control)
        losses, rewards_c, rewards_r = dpo_loss(
            policy_c, policy_r, ref_c, ref_r, c.beta, c.loss_type, c.label_smoothing, c.rpo_alpha
        )
        loss = (losses * batch.weight).sum() / batch.weight.sum().clamp(min=torch.finfo(losses.dtype).tiny)
        metrics = dpo_metrics(rewards_c, rewards_r, policy_c, policy_r)
        metrics["loss"] = float(loss.detach())
        return loss, metrics

    def fit(self, loader: DataLoader, logger: MetricLogger) -> DPOFit:
        loop = self.config.loop
        steps = total_steps(loop, len(loader))
        optim = make_optimisation(self.policy, loop, steps, self.precision)
        throughput = Throughput()
        self.policy.train()
        step = 0
        last: dict[str, float] = {}
        for epoch in range(loop.epochs):
            if step >= steps:
                break
            acc = MeanAccumulator()
            throughput.start()
            seen = 0
            for batch in loader:
                batch = batch.to(self.precision.device)
                loss, metrics = self.batch_loss(batch)
                lr = optim.lr
                grad_norm = optim.step(loss)
                step += 1
                seen += len(batch)
                acc.add(metrics, float(len(batch)))
                if step % loop.log_every_steps == 0 or step == steps:
                    logger.log({**metrics, "grad_norm": grad_norm, "learning_rate": lr, "epoch": epoch}, step)
                if step >= steps:
                    break
            throughput.stop(seen, self.precision.device)
            last = acc.means()
        assert_frozen(self.reference)
        return DPOFit(step, throughput.samples_per_s, last)

    @torch.no_grad()
    def evaluate(self, loader: DataLoader, prefix: str = "eval_") -> dict[str, float]:
        """TRL metrics over every pair of `loader` (batch means weighted by batch size)."""
        was_training = self.policy.training
        self.policy.eval()
        acc = MeanAccumulator()
        try:
            for batch in loader:
                batch = batch.to(self.precision.device)
                _, metrics = self.batch_loss(batch)
                acc.add(metrics, float(len(batch)))
        finally:
            self.policy.train(was_training)
        return acc.means(prefix)


def pair_loader(
    dataset: PairDataset, config: DPOConfig, precision: Precision, generator: torch.Generator | None
) -> DataLoader:
    return clip_block_loader(
        dataset,
        config.loop.batch_size,
        config.block_clips,
        config.num_workers,
        collate_pairs,
        precision.device.type == "cuda",
        generator,
    )


def dpo_round(
    store: Store,
    run: str,
    iteration: int,
    parent_checkpoint: str | os.PathLike[str],
    config: DPOConfig | None = None,
) -> TrainResult:
    """DPO on the preference pairs of `run` up to iteration `iteration`, from `parent_checkpoint`.

    The parent is both the starting point and the frozen reference. Pairs are built first (idempotent)
    when config.build_pairs. Metrics: the last epoch's TRL metrics, eval_* over all pairs after the
    round, eval_logps/*_before under the parent, and the pair counts.
    """
    config = config or DPOConfig()
    validate_dpo_config(config)
    loop = config.loop
    rspec = round_spec(run, "dpo", f"{config.round_prefix}-{iteration}", iteration, loop.runs_dir)
    parent = load_parent(store, parent_checkpoint)
    spec = FeatureSpec.of(parent.policy_config)
    precision = resolve_precision(loop.device, loop.amp)
    tracker = RoundTracker(store, rspec, config_dict(config), parent_sha256=parent.sha256)
    with deterministic_mode(loop.deterministic), tracked_round(tracker):
        generator = seed_everything(loop.seed + iteration)
        policy = parent.model.to(precision.device)
        reference = freeze(copy.deepcopy(policy))
        built = None
        if config.build_pairs:
            built = build_preference_pairs(
                store,
                run,
                iteration,
                config.pairs,
                spec,
                reference,
                precision.device,
                config.only_current_iteration,
            )
        index = select_pairs(
            store,
            run,
            iteration,
            config.pairs.sources,
            spec,
            config.only_current_iteration,
            config.pairs.rollout_phases,
            config.pairs.verdict_weights,
            config.pairs.verdict_overrides,
        )
        if len(index) == 0:
            raise DatasetError(
                f"no preference pairs of sources {list(config.pairs.sources)} for run {run!r} up to iteration "
                f"{iteration}: collect takeovers first (takeover collect takeovers --run {run} --iteration "
                f"{iteration}), or lower dpo.pairs.min_plan_margin_m if every pair was skipped as near-identical"
            )
        dataset = PairDataset(store, index, config.cache_clips, config.cache_mib)
        train_loader = pair_loader(dataset, config, precision, generator)
        eval_loader = pair_loader(dataset, config, precision, None)
        trainer = DPOTrainer(policy, reference, config, precision)
        logger = MetricLogger(rspec.tb_dir if loop.tensorboard else None)
        try:
            before = trainer.evaluate(eval_loader)
            logger.log(before, 0)
            fit = trainer.fit(train_loader, logger)
            after = trainer.evaluate(eval_loader)
            logger.log(after, fit.steps)
        finally:
            logger.close()
        metrics = {
            **fit.train_metrics,
            **after,
            "eval_logps/chosen_before": before["eval_logps/chosen"],
            "eval_logps/rejected_before": before["eval_logps/rejected"],
            "pairs": float(len(index)),
        }
        if built is not None:
            metrics["pairs_new"] = float(sum(built.new.values()))
            metrics["pairs_skipped_margin"] = float(sum(built.skipped_margin.values()))
        return tracker.save_and_finish(
            policy, parent.policy_config, metrics, logger, len(index), fit.steps, fit.samples_per_s
        )
