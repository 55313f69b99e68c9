"""Shared training-loop utilities of the BC, DAgger and DPO rounds.

Seeding and deterministic flags, the device (CUDA when present) and mixed precision (autocast + a
GradScaler for fp16, CUDA only), the optimiser step with gradient clipping, constant or cosine
learning-rate schedules, metric logging to TensorBoard and to the database, and the bookkeeping of a
round: its checkpoint at runs/<run>/ckpt/<round>.pt with a parent link, and its row in training_rounds.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from carla_bridge.errors import TakeoverError
from storage.errors import RecordError
from storage.records import CheckpointRecord, MetricPoint, TrainingRoundRecord
from storage.store import Store
from takeover.policy.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from takeover.policy.config import PolicyConfig, PolicyConfigError, resolve_device
from takeover.policy.distributions import PlanDistribution
from takeover.policy.model import HybridPlanner

LR_SCHEDULES = ("constant", "cosine")
AMP_MODES = ("off", "bf16", "fp16")
# cuBLAS needs a fixed workspace to be deterministic (CUDA docs, "Reproducibility").
CUBLAS_WORKSPACE = ":4096:8"
CKPT_DIR = "ckpt"
TB_DIR = "tb"
CKPT_SUFFIX = ".pt"


class TrainingError(TakeoverError):
    """A training round cannot run: bad configuration, no data, an unusable parent checkpoint."""


@dataclass
class LoopConfig:
    """The training loop shared by every round (CleanRL-style: one flat set of knobs)."""

    seed: int = 0
    deterministic: bool = True  # deterministic kernels: two runs with one seed give identical weights
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    amp: str = "bf16"  # "off" | "bf16" | "fp16"; autocast on CUDA only, CPU always runs float32
    epochs: int = 10  # passes over the training set
    max_steps: int = 0  # cap on optimiser steps; 0 = no cap
    batch_size: int = 64  # samples per optimiser step
    lr: float = 3e-4  # peak learning rate
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    grad_clip_norm: float = 1.0  # clip the global gradient L2 norm to this; 0 = no clipping
    lr_schedule: str = "cosine"  # "constant" | "cosine" (decays to min_lr_ratio * lr at the last step)
    warmup_steps: int = 0  # linear warm-up from lr / warmup_steps to lr
    min_lr_ratio: float = 0.0  # floor of the cosine schedule as a fraction of lr
    log_every_steps: int = 10  # training metrics go to TensorBoard and the DB every this many steps
    tensorboard: bool = True  # write runs/<run>/tb/<round>
    runs_dir: str = "runs"  # checkpoints at <runs_dir>/<run>/ckpt/<round>.pt


def validate_loop_config(config: LoopConfig, where: str) -> None:
    """Raise TrainingError naming the first out-of-range field of `where` (e.g. "dpo.loop")."""
    if config.epochs < 1:
        raise TrainingError(f"{where}.epochs={config.epochs} must be >= 1")
    if config.max_steps < 0:
        raise TrainingError(f"{where}.max_steps={config.max_steps} must be >= 0 (0 = no cap)")
    if config.batch_size < 1:
        raise TrainingError(f"{where}.batch_size={config.batch_size} must be >= 1")
    if not config.lr > 0:
        raise TrainingError(f"{where}.lr={config.lr} must be > 0")
    if config.weight_decay < 0 or config.grad_clip_norm < 0:
        raise TrainingError(f"{where}.weight_decay and {where}.grad_clip_norm must be >= 0")
    if config.lr_schedule not in LR_SCHEDULES:
        raise TrainingError(
            f"{where}.lr_schedule={config.lr_schedule!r}; use one of {', '.join(LR_SCHEDULES)}"
        )
    if config.amp not in AMP_MODES:
        raise TrainingError(f"{where}.amp={config.amp!r}; use one of {', '.join(AMP_MODES)}")
    if config.warmup_steps < 0 or not 0.0 <= config.min_lr_ratio <= 1.0:
        raise TrainingError(f"{where}.warmup_steps must be >= 0 and {where}.min_lr_ratio in [0, 1]")
    if config.log_every_steps < 1:
        raise TrainingError(f"{where}.log_every_steps={config.log_every_steps} must be >= 1")
    try:
        resolve_device(config.device)
    except PolicyConfigError as exc:
        raise TrainingError(f"{where}.device: {exc}") from None


def config_dict(config: Any) -> dict[str, Any]:
    """A structured config as a plain dict (stored with checkpoints and training rounds)."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True, enum_to_str=True)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ seeding


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (every CUDA device too); returns a CPU generator for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Deterministic torch kernels inside the block, the previous global flags restored after it.

    warn_only keeps an op without a deterministic implementation from aborting a long GPU run.
    """
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic = before[2]
        torch.backends.cudnn.benchmark = before[3]


# ------------------------------------------------------------------------------------------ device / AMP


@dataclass(frozen=True)
class Precision:
    """Where and in which precision a round computes. dtype None = float32 (always on CPU)."""

    device: torch.device
    dtype: torch.dtype | None

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling only for fp16 (bf16 has float32's exponent range and needs none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype is torch.float16)


def resolve_precision(device_name: str, amp: str) -> Precision:
    """Device from `device_name` ("auto" = CUDA when present); autocast dtype from `amp`, CUDA only.

    bf16 falls back to fp16 on GPUs without bfloat16 support.
    """
    device = resolve_device(device_name)
    if device.type != "cuda" or amp == "off":
        return Precision(device, None)
    if amp == "bf16" and torch.cuda.is_bf16_supported():
        return Precision(device, torch.bfloat16)
    return Precision(device, torch.float16)


def float32_plan(dist: PlanDistribution) -> PlanDistribution:
    """The distribution's tensors in float32: log-densities (Beta's lgamma above all) lose too much in
    half precision, so autocast covers the network and the losses run in float32."""
    return PlanDistribution(
        dist.traj_loc.float(),
        dist.traj_log_scale.float(),
        dist.control_alpha.float(),
        dist.control_beta.float(),
        dist.speed.float(),
    )


# ------------------------------------------------------------------------------------------ optimisation


def lr_factor(step: int, total_steps: int, schedule: str, warmup_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimiser step `step` (0-based).

    warm-up (step < W):  (step + 1) / W
    constant:            1
    cosine:              r + (1 - r) * (1 + cos(pi * p)) / 2,  p = (step - W) / max(1, N - 1 - W) in [0, 1]
    with N = total_steps, W = warmup_steps, r = min_lr_ratio.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def total_steps(config: LoopConfig, batches_per_epoch: int) -> int:
    """Optimiser steps of a round: epochs x batches, capped by max_steps when set."""
    steps = config.epochs * batches_per_epoch
    return min(steps, config.max_steps) if config.max_steps > 0 else steps


@dataclass
class Optimisation:
    """AdamW + LambdaLR schedule + GradScaler, stepped together by `step(loss)`."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    params: list[nn.Parameter]
    grad_clip_norm: float

    def step(self, loss: torch.Tensor) -> float:
        """Backward, unscale, clip, step, schedule; returns the global gradient norm before clipping."""
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        max_norm = self.grad_clip_norm if self.grad_clip_norm > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return grad_norm

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def make_optimisation(model: nn.Module, config: LoopConfig, steps: int, precision: Precision) -> Optimisation:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters (all requires_grad=False)")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, steps, config.lr_schedule, config.warmup_steps, config.min_lr_ratio),
    )
    return Optimisation(optimizer, scheduler, precision.grad_scaler(), params, config.grad_clip_norm)


# ------------------------------------------------------------------------------------------ metrics


def tensorboard_tag(name: str) -> str:
    """TRL/HF Trainer style tags: "eval_loss" -> "eval/loss", "rewards/chosen" -> "train/rewards/chosen"."""
    if name.startswith("eval_"):
        return "eval/" + name[len("eval_") :]
    return "train/" + name


class MetricLogger:
    """Scalars to TensorBoard (when a folder is given) and to a history kept for the training_rounds row."""

    def __init__(self, tb_dir: Path | None) -> None:
        self.history: list[MetricPoint] = []
        self._writer: Any = None
        if tb_dir is not None:
            # Imported here: tensorboard costs seconds to import and is not needed without a folder.
            from torch.utils.tensorboard import SummaryWriter

            tb_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(log_dir=str(tb_dir))

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for name, value in metrics.items():
            value = float(value)
            if not math.isfinite(value):
                raise TrainingError(
                    f"metric {name} is {value} at step {step}: training diverged; lower the learning rate "
                    "or enable gradient clipping (loop.grad_clip_norm)"
                )
            self.history.append(MetricPoint(name, int(step), value))
            if self._writer is not None:
                self._writer.add_scalar(tensorboard_tag(name), value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


class MeanAccumulator:
    """Weighted means of metric dictionaries over many batches."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._weights: dict[str, float] = {}

    def add(self, metrics: Mapping[str, float], weight: float = 1.0) -> None:
        for name, value in metrics.items():
            self._sums[name] = self._sums.get(name, 0.0) + float(value) * weight
            self._weights[name] = self._weights.get(name, 0.0) + weight

    def means(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": self._sums[k] / self._weights[k] for k in self._sums if self._weights[k] > 0}


# ------------------------------------------------------------------------------------------ rounds


@dataclass(frozen=True)
class RoundSpec:
    """Which round this is: run, kind ("bc", "dagger", "dpo"), name (unique in the iteration)."""

    run: str
    kind: str
    name: str
    iteration: int | None
    runs_dir: Path

    @property
    def checkpoint_path(self) -> Path:
        return self.runs_dir / self.run / CKPT_DIR / f"{self.name}{CKPT_SUFFIX}"

    @property
    def tb_dir(self) -> Path:
        return self.runs_dir / self.run / TB_DIR / self.name


def round_spec(run: str, kind: str, name: str, iteration: int | None, runs_dir: str) -> RoundSpec:
    if not run or any(c in run for c in "/\\") or run in (".", ".."):
        raise TrainingError(f"run name {run!r} must be a non-empty name without slashes, e.g. 'town01-v1'")
    if iteration is not None and iteration < 0:
        raise TrainingError(f"iteration {iteration} must be >= 0")
    return RoundSpec(run, kind, name, iteration, Path(runs_dir))


@dataclass(frozen=True)
class TrainResult:
    """What a round produced: its checkpoint (path, sha256, parent), final metrics and throughput."""

    run: str
    kind: str
    name: str
    iteration: int | None
    checkpoint_path: Path
    sha256: str
    parent_sha256: str | None
    metrics: dict[str, float]
    n_samples: int  # training samples (frames or pairs) in the round's data set
    steps: int  # optimiser steps taken
    samples_per_s: float  # training samples processed per wall second (forward + backward + step)
    wall_s: float
    round_id: int
    history: Sequence[MetricPoint] = field(default_factory=tuple)


@dataclass(frozen=True)
class ParentCheckpoint:
    """A checkpoint a round starts from, registered in the database."""

    path: Path
    sha256: str
    model: HybridPlanner
    policy_config: PolicyConfig
    extra: dict[str, Any]


def load_parent(store: Store, path: str | os.PathLike[str]) -> ParentCheckpoint:
    """Load a checkpoint (CheckpointError if unusable) and make sure the database knows it.

    A checkpoint trained elsewhere is recorded with the parent named in its extras when that parent is
    known here, else without a parent.
    """
    path = Path(path)
    model, policy_config, extra = load_checkpoint(path, map_location="cpu")
    sha = file_sha256(path)
    kind = str(extra.get("kind", "policy"))
    parent = extra.get("parent_sha256")
    record = CheckpointRecord(
        str(path.resolve()), sha, kind, config=dict(extra.get("train_config", {})), parent_sha256=parent
    )
    try:
        store.record_checkpoint(record)
    except RecordError:
        if parent is None:
            raise
        store.record_checkpoint(CheckpointRecord(record.path, sha, kind, config=record.config))
    return ParentCheckpoint(path, sha, model, policy_config, extra)


class RoundTracker:
    """The training_rounds row of one round: "running" at start, "completed" with metrics, or "failed"."""

    def __init__(self, store: Store, spec: RoundSpec, config: dict[str, Any], parent_sha256: str | None):
        self.store = store
        self.spec = spec
        self.config = config
        self.parent_sha256 = parent_sha256
        self.started_at = datetime.now(UTC)
        self._start = time.perf_counter()

    def _record(self, status: str, **values: Any) -> int:
        return self.store.record_training_round(
            TrainingRoundRecord(
                run=self.spec.run,
                kind=self.spec.kind,
                name=self.spec.name,
                iteration=self.spec.iteration,
                input_checkpoint_sha256=self.parent_sha256,
                status=status,
                config=self.config,
                started_at=self.started_at,
                **values,
            )
        )

    def start(self) -> int:
        return self._record("running")

    def fail(self) -> None:
        self._record("failed", finished_at=datetime.now(UTC))

    def save_and_finish(
        self,
        model: nn.Module,
        policy_config: PolicyConfig,
        metrics: dict[str, float],
        logger: MetricLogger,
        n_samples: int,
        steps: int,
        samples_per_s: float,
    ) -> TrainResult:
        """Save the checkpoint atomically, record it (with its parent) and complete the round row."""
        path = self.spec.checkpoint_path
        extra = {
            "kind": self.spec.kind,
            "run": self.spec.run,
            "round": self.spec.name,
            "iteration": self.spec.iteration,
            "parent_sha256": self.parent_sha256,
            "metrics": dict(metrics),
            "train_config": self.config,
        }
        sha = save_checkpoint(path, model, policy_config, extra)
        self.store.record_checkpoint(
            CheckpointRecord(
                str(path.resolve()), sha, self.spec.kind, config=self.config, parent_sha256=self.parent_sha256
            )
        )
        round_id = self._record(
            "completed",
            output_checkpoint_sha256=sha,
            metrics=metrics,
            history=logger.history,
            n_samples=n_samples,
            finished_at=datetime.now(UTC),
        )
        return TrainResult(
            run=self.spec.run,
            kind=self.spec.kind,
            name=self.spec.name,
            iteration=self.spec.iteration,
            checkpoint_path=path,
            sha256=sha,
            parent_sha256=self.parent_sha256,
            metrics=dict(metrics),
            n_samples=n_samples,
            steps=steps,
            samples_per_s=samples_per_s,
            wall_s=time.perf_counter() - self._start,
            round_id=round_id,
            history=tuple(logger.history),
        )


@contextlib.contextmanager
def tracked_round(tracker: RoundTracker) -> Iterator[RoundTracker]:
    """Record the round as running; mark it failed if the block raises."""
    tracker.start()
    try:
        yield tracker
    except BaseException:
        with contextlib.suppress(Exception):  # the original error matters more than the bookkeeping
            tracker.fail()
        raise


class Throughput:
    """Samples per second of the optimisation loop alone (data loading included, evaluation excluded)."""

    def __init__(self) -> None:
        self.samples = 0
        self.seconds = 0.0
        self._t0: float | None = None

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self, samples: int, device: torch.device) -> None:
        assert self._t0 is not None, "Throughput.stop() without start()"
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # kernels run asynchronously: wait before reading the clock
        self.seconds += time.perf_counter() - self._t0
        self.samples += samples
        self._t0 = None

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0
