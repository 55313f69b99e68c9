"""Training data from storage: expert-labelled frames (BC, DAgger) and preference pairs (DPO).

Clips written by the episode runner hold, per frame, the policy's inputs (feat_bev (T,C,H,W) uint8,
feat_speed (T,), feat_target (T,2), feat_command (T,) index into takeover.policy.features.COMMANDS)
and the expert's labels (expert_waypoints_ego (T,K,2), expert_control (T,3) throttle/steer/brake);
rollout clips add the policy's own plan (policy_waypoints_ego, policy_control).

Frames are selected through Store's read API (storage.Store.list_clips / list_frames / list_takeovers /
list_preference_pairs: the `frames` table says who drove, when) and weighted by their role:
  demo          every frame of a demonstration episode (phase "expert"): the base data set
  takeover      the expert drove (driver = 1) or a takeover triggered on the tick
  pre_takeover  the policy drove, within `pre_takeover_window_s` before a trigger of the same episode
  policy        any other policy-driven frame of a rollout (after a hand-back)
Only the arrays a sample needs are read, lazily, one clip at a time, kept in a small LRU cache;
`BlockShuffleSampler` shuffles clips in blocks so that the cache serves whole blocks. Pairs keep only
their own frames of each clip, so a pair set usually stays decoded for the whole round.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from storage.clip_format import DRIVER_EXPERT
from storage.records import FrameTable, PreferencePairInfo
from storage.store import Store
from takeover.policy.config import PolicyConfig
from takeover.policy.features import NUM_COMMANDS, FeatureArrays, PolicyFeatures, collate_features
from takeover.training import TrainingError
from takeover.verdict_weights import UNJUDGED, validate_verdict_weights, verdict_factors

log = logging.getLogger(__name__)

FEATURE_KEYS = ("feat_bev", "feat_speed", "feat_target", "feat_command")
EXPERT_KEYS = ("expert_waypoints_ego", "expert_control")
POLICY_KEYS = ("policy_waypoints_ego", "policy_control")
FRAME_SAMPLE_KEYS = FEATURE_KEYS + EXPERT_KEYS
PAIR_SAMPLE_KEYS = FEATURE_KEYS + EXPERT_KEYS + POLICY_KEYS
CONTROL_DIM = 3  # throttle, steer, brake
BEV_DTYPE = "|u1"  # numpy dtype string of uint8
TIME_EPS_S = 1e-6  # frame times are float: compare with a tolerance well below one tick (0.05 s)
BYTES_PER_MIB = 1024**2


class DatasetError(TrainingError):
    """The requested training data is not in storage, or its clips do not fit the policy."""


class FrameRole(IntEnum):
    DEMO = 0
    TAKEOVER = 1
    PRE_TAKEOVER = 2
    POLICY = 3


class PairSource(StrEnum):
    """How a preference pair was made (the `source` column of preference_pairs)."""

    EXPERT_VS_POLICY = "expert_vs_policy"  # chosen = the expert's plan, rejected = the policy's (TakeAD)
    SAMPLED_SAFETY = "sampled_safety"  # best vs worst of K plans sampled from the policy, by a safety cost


@dataclass
class DataConfig:
    """Which frames a BC / DAgger round trains on and how much each counts."""

    demo_run: str = ""  # run whose demonstrations are the base data; "" = the run being trained
    demo_phases: list[str] = field(default_factory=lambda: ["expert"])  # episode phases of demonstrations
    rollout_phases: list[str] = field(default_factory=lambda: ["rollout"])  # phases of takeover collection
    demo_weight: float = 1.0  # sample weight of a demonstration frame
    takeover_weight: float = 2.0  # ... of a frame the expert drove after a takeover
    pre_takeover_weight: float = 1.0  # ... of a policy frame shortly before a takeover
    pre_takeover_window_s: float = 3.0  # how far before a trigger a policy frame counts as pre-takeover
    # HG-DAgger aggregates only the expert's segments (0 here); > 0 adds every other visited policy frame.
    policy_weight: float = 0.0
    # Factor on the takeover and pre-takeover frames of a trigger by its reason, e.g. {stuck: 0.0,
    # plan_deviation: 0.5}: which interventions to imitate (a reason not named keeps 1.0).
    reason_weights: dict[str, float] = field(default_factory=dict)
    # Factor on the takeover and pre-takeover frames of a trigger by its counterfactual verdict
    # (takeover/verdict_weights.py), e.g. {necessary: 3.0}: imitate most where the policy would have
    # failed. Needs the collection's takeovers replayed (the loop's collect_counterfactuals) under
    # conf/counterfactual.yaml + verdict_overrides (the loop sets those to its counterfactual_overrides).
    verdict_weights: dict[str, float] = field(default_factory=dict)
    verdict_overrides: list[str] = field(default_factory=list)
    # Keyframe focus (Wen et al., 2021): frames whose expert plan departs from holding the current
    # speed weigh more, so that a policy cannot fit the data by copying its own speed. Braking (the
    # onset of slowing for a scenario) and speeding up (driving off) have their own gains; 0 = off.
    keyframe_brake_gain: float = 0.0  # a plan short of holding speed by keyframe_scale_m weighs 1 + this
    keyframe_accel_gain: float = 0.0  # ... one beyond it by keyframe_scale_m
    keyframe_scale_m: float = 6.0  # departure at the plan's horizon that earns the full gain, m
    cache_clips: int = 16  # clips kept decoded in memory per data set (and per loader worker)
    block_clips: int = 8  # clips whose frames are shuffled together; <= cache_clips keeps the cache warm
    num_workers: int = 0  # DataLoader worker processes (each reopens the store)


def validate_data_config(config: DataConfig, where: str) -> None:
    non_negative = (
        "demo_weight",
        "takeover_weight",
        "pre_takeover_weight",
        "policy_weight",
        "keyframe_brake_gain",
        "keyframe_accel_gain",
    )
    for name in non_negative:
        if getattr(config, name) < 0:
            raise DatasetError(f"{where}.{name}={getattr(config, name)} must be >= 0")
    if config.pre_takeover_window_s < 0:
        raise DatasetError(f"{where}.pre_takeover_window_s must be >= 0 s")
    if config.keyframe_scale_m <= 0:
        raise DatasetError(f"{where}.keyframe_scale_m must be > 0 m")
    from takeover.monitor import TakeoverReason  # the monitor's reason codes (imported late: heavy module)

    known = {r.value for r in TakeoverReason}
    for reason, factor in config.reason_weights.items():
        if reason not in known:
            raise DatasetError(
                f"{where}.reason_weights has an unknown reason {reason!r}; use one of {', '.join(sorted(known))}"
            )
        if factor < 0:
            raise DatasetError(f"{where}.reason_weights.{reason}={factor} must be >= 0")
    validate_verdict_weights(config.verdict_weights, config.verdict_overrides, where)
    if config.cache_clips < 1 or config.block_clips < 1:
        raise DatasetError(f"{where}.cache_clips and {where}.block_clips must be >= 1")
    if config.num_workers < 0:
        raise DatasetError(f"{where}.num_workers must be >= 0")
    if not config.demo_phases or not config.rollout_phases:
        raise DatasetError(f"{where}.demo_phases and {where}.rollout_phases must name at least one phase")


@dataclass(frozen=True)
class FeatureSpec:
    """Array shapes a policy network expects (from its PolicyConfig)."""

    channels: int
    size_px: int
    num_waypoints: int
    waypoint_dt_s: float  # time between waypoints, s

    @classmethod
    def of(cls, config: PolicyConfig) -> FeatureSpec:
        m = config.model
        return cls(len(config.bev.channels), config.bev.size_px, m.num_waypoints, m.waypoint_dt_s)

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-frame shapes (after the leading T) of the training keys."""
        k = self.num_waypoints
        return {
            "feat_bev": (self.channels, self.size_px, self.size_px),
            "feat_speed": (),
            "feat_target": (2,),
            "feat_command": (),
            "expert_waypoints_ego": (k, 2),
            "expert_control": (CONTROL_DIM,),
            "policy_waypoints_ego": (k, 2),
            "policy_control": (CONTROL_DIM,),
        }


def check_clip_arrays(
    clip_id: int, arrays_meta: dict[str, Any], keys: Sequence[str], spec: FeatureSpec
) -> list[str]:
    """Problems of one clip's stored arrays (name -> {"shape", "dtype"}) against the policy's shapes."""
    expected = spec.expected_shapes()
    problems = []
    missing = [k for k in keys if k not in arrays_meta]
    if missing:
        problems.append(f"clip {clip_id} lacks {missing}")
    for key in keys:
        if key not in arrays_meta:
            continue
        shape = tuple(arrays_meta[key]["shape"])
        if shape[1:] != expected[key]:
            problems.append(
                f"clip {clip_id} {key} has per-frame shape {shape[1:]}, the policy needs {expected[key]}"
            )
        if key == "feat_bev" and arrays_meta[key]["dtype"] != BEV_DTYPE:
            problems.append(f"clip {clip_id} feat_bev has dtype {arrays_meta[key]['dtype']}, expected uint8")
    return problems


def training_clips(
    clips: Sequence[tuple[int, dict[str, Any]]], keys: Sequence[str], spec: FeatureSpec, what: str
) -> set[int]:
    """Ids of the clips that carry training arrays. Clips without any training key (e.g. video-only
    clips) are left out; a clip with some keys but wrong or missing others is an error."""
    usable: set[int] = set()
    problems: list[str] = []
    for clip_id, meta in clips:
        if not any(k in meta for k in keys):
            log.info("%s: clip %d has no training arrays; left out", what, clip_id)
            continue
        found = check_clip_arrays(clip_id, meta, keys, spec)
        if found:
            problems.extend(found)
        else:
            usable.add(clip_id)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise DatasetError(
            f"{what}: {shown}. The clips were written for another policy network (bev / model sections of "
            "conf/policy.yaml) or by a runner that stores no training keys; recollect them or train a matching policy"
        )
    return usable


# ------------------------------------------------------------------------------------------ frame index


@dataclass(frozen=True)
class FrameIndex:
    """The samples of a frame data set: where each frame lives and how much it counts (parallel arrays)."""

    clip_id: np.ndarray  # (N,) int64
    row: np.ndarray  # (N,) int64: index inside the clip's arrays
    episode_id: np.ndarray  # (N,) int64
    frame: np.ndarray  # (N,) int64: episode tick
    role: np.ndarray  # (N,) int8 FrameRole
    weight: np.ndarray  # (N,) float32 sample weight

    def __len__(self) -> int:
        return int(self.clip_id.shape[0])

    @classmethod
    def empty(cls) -> FrameIndex:
        z = np.zeros(0, np.int64)
        return cls(z, z, z, z, np.zeros(0, np.int8), np.zeros(0, np.float32))

    def subset(self, mask: np.ndarray) -> FrameIndex:
        return FrameIndex(*(getattr(self, f)[mask] for f in self.__dataclass_fields__))

    @staticmethod
    def concat(parts: Sequence[FrameIndex]) -> FrameIndex:
        if not parts:
            return FrameIndex.empty()
        return FrameIndex(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in FrameIndex.__dataclass_fields__)
        )

    def count(self, role: FrameRole) -> int:
        return int((self.role == role).sum())


def frame_roles(
    driver: np.ndarray,
    is_takeover: np.ndarray,
    time_s: np.ndarray,
    trigger_times_s: np.ndarray,
    pre_window_s: float,
) -> np.ndarray:
    """FrameRole of each rollout frame of one episode.

    takeover      if driver = expert or a takeover triggered on the tick
    pre_takeover  else if some trigger time t_k has 0 < t_k - t <= pre_window_s
    policy        otherwise
    """
    roles = np.full(driver.shape, FrameRole.POLICY, np.int8)
    if trigger_times_s.size:
        lead = trigger_times_s[None, :] - time_s[:, None]
        pre = ((lead > TIME_EPS_S) & (lead <= pre_window_s + TIME_EPS_S)).any(axis=1)
        roles[pre] = FrameRole.PRE_TAKEOVER
    roles[(driver == DRIVER_EXPERT) | is_takeover] = FrameRole.TAKEOVER
    return roles


def trigger_of_frames(roles: np.ndarray, time_s: np.ndarray, trigger_times_s: np.ndarray) -> np.ndarray:
    """Index of the trigger each frame belongs to (-1: none), for trigger times sorted ascending.

    takeover frames belong to the latest trigger at or before them (the takeover in progress),
    pre-takeover frames to the first trigger after them (the one they lead to).
    """
    out = np.full(roles.shape, -1, np.int64)
    if not trigger_times_s.size:
        return out
    at_or_before = np.searchsorted(trigger_times_s, time_s + TIME_EPS_S, side="right") - 1
    take = roles == FrameRole.TAKEOVER
    pre = roles == FrameRole.PRE_TAKEOVER
    out[take] = at_or_before[take]
    out[pre] = np.minimum(at_or_before[pre] + 1, trigger_times_s.size - 1)
    return out


@dataclass(frozen=True)
class Triggers:
    """The takeovers of one episode, sorted by time (parallel arrays)."""

    time_s: np.ndarray  # (T,) float64
    reason: np.ndarray  # (T,) object: TakeoverReason values
    takeover_id: np.ndarray  # (T,) int64


def _query_frames(
    store: Store, run: str, phases: Sequence[str], max_iteration: int | None, spec: FeatureSpec, what: str
) -> tuple[FrameTable, dict[int, Triggers]]:
    """Frames (one per episode tick) of the usable clips, and the takeovers of their episodes."""
    episodes = {"run": run, "phases": list(phases), "max_iteration": max_iteration}
    clips = store.list_clips(**episodes)
    usable = training_clips([(c.id, c.arrays) for c in clips], FRAME_SAMPLE_KEYS, spec, what)
    if not usable:
        return FrameTable.empty(), {}
    table = store.list_frames(**episodes)
    table = table.subset(np.isin(table.clip_id, np.fromiter(usable, np.int64, len(usable))))
    # A tick stored in two overlapping clips (e.g. a pre-takeover window and the takeover clip) counts
    # once: the first of its clips (frames come ordered by episode, tick, clip).
    key = table.episode_id * (1 << 32) + table.frame
    _, first = np.unique(key, return_index=True)
    first.sort()
    table = table.subset(first)
    triggers: dict[int, list[tuple[float, str, int]]] = {int(e): [] for e in np.unique(table.episode_id)}
    if triggers:
        for takeover in store.list_takeovers(episode_ids=list(triggers)):
            triggers[takeover.episode_id].append((float(takeover.time_s), str(takeover.reason), takeover.id))
    out = {}
    for e, items in triggers.items():
        items.sort()
        out[e] = Triggers(
            np.array([t for t, _, _ in items], np.float64),
            np.array([r for _, r, _ in items], object),
            np.array([i for _, _, i in items], np.int64),
        )
    return table, out


def select_demo_frames(store: Store, run: str, config: DataConfig, spec: FeatureSpec) -> FrameIndex:
    """Every frame of the demonstration episodes of `config.demo_run` (or `run`), weight demo_weight."""
    demo_run = config.demo_run or run
    table, _ = _query_frames(
        store, demo_run, config.demo_phases, None, spec, f"demonstrations of run {demo_run!r}"
    )
    if not len(table) or config.demo_weight <= 0:
        return FrameIndex.empty()
    n = len(table)
    return FrameIndex(
        table.clip_id,
        table.row,
        table.episode_id,
        table.frame,
        np.full(n, FrameRole.DEMO, np.int8),
        np.full(n, config.demo_weight, np.float32),
    )


def select_takeover_frames(
    store: Store, run: str, max_iteration: int | None, config: DataConfig, spec: FeatureSpec
) -> FrameIndex:
    """Expert-labelled frames of the rollout episodes of `run` up to iteration `max_iteration`
    (takeover and pre-takeover frames, and other policy frames when policy_weight > 0)."""
    table, triggers = _query_frames(
        store, run, config.rollout_phases, max_iteration, spec, f"takeover clips of run {run!r}"
    )
    if not len(table):
        return FrameIndex.empty()
    roles = np.empty(len(table), np.int8)
    factor = np.ones(len(table), np.float32)  # reason and verdict weights of each frame's trigger
    verdicts = verdict_factors(
        store, (i for t in triggers.values() for i in t.takeover_id), config.verdict_weights,
        config.verdict_overrides,
    )  # fmt: skip
    for episode_id, found in triggers.items():
        mask = table.episode_id == episode_id
        roles[mask] = frame_roles(
            table.driver[mask], table.is_takeover[mask], table.time_s[mask], found.time_s,
            config.pre_takeover_window_s,
        )  # fmt: skip
        if (config.reason_weights or config.verdict_weights) and found.time_s.size:
            k = trigger_of_frames(roles[mask], table.time_s[mask], found.time_s)
            pairs = zip(found.reason, found.takeover_id, strict=True)
            by_trigger = np.array(
                [config.reason_weights.get(r, 1.0) * verdicts[int(i)] for r, i in pairs], np.float32
            )
            factor[mask] = np.where(k >= 0, by_trigger[np.maximum(k, 0)], 1.0)
    weight_of = {
        FrameRole.TAKEOVER: config.takeover_weight,
        FrameRole.PRE_TAKEOVER: config.pre_takeover_weight,
        FrameRole.POLICY: config.policy_weight,
    }
    weights = np.array([weight_of[FrameRole(r)] for r in roles], np.float32) * factor
    index = FrameIndex(table.clip_id, table.row, table.episode_id, table.frame, roles, weights)
    return index.subset(weights > 0)


def split_by_episode(index: FrameIndex, val_fraction: float, seed: int) -> tuple[FrameIndex, FrameIndex]:
    """(train, val): whole episodes go to validation, about `val_fraction` of them (at least one when
    there are two or more episodes and val_fraction > 0), chosen by a seeded permutation."""
    episodes = np.unique(index.episode_id)
    wanted = round(val_fraction * len(episodes))
    n_val = min(max(wanted, 1), len(episodes) - 1) if val_fraction > 0 and len(episodes) >= 2 else 0
    order = np.random.default_rng(seed).permutation(episodes)
    val = np.isin(index.episode_id, order[:n_val])
    return index.subset(~val), index.subset(val)


def subsample(index: FrameIndex, fraction: float, seed: int) -> FrameIndex:
    """A seeded random `fraction` of the samples (at least one when fraction > 0 and any exist)."""
    if fraction >= 1.0 or len(index) == 0:
        return index
    n = max(1, round(fraction * len(index))) if fraction > 0 else 0
    keep = np.zeros(len(index), bool)
    keep[np.random.default_rng(seed).choice(len(index), size=n, replace=False)] = True
    return index.subset(keep)


# ------------------------------------------------------------------------------------------ clip cache


class ClipCache:
    """Decoded arrays of the last `capacity` clips (only `keys`), read through Store.load_clip.

    With `rows` ({clip id: frame rows}) a clip keeps only those rows of its per-frame `keys`, so that a
    data set touching a few frames of each clip (DPO pairs) holds many clips in little memory; with
    `max_bytes` the cache is bounded by the bytes it keeps instead of by `capacity`.
    A DataLoader worker is another process: it opens its own Store (engines must not cross a fork).
    """

    def __init__(
        self,
        store: Store,
        keys: Sequence[str],
        capacity: int,
        rows: Mapping[int, np.ndarray] | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self._store = store
        self._pid = os.getpid()
        self._url = store.url
        self._clip_root = store.clip_store.root
        self._config = store.config
        self.keys = tuple(keys)
        self.capacity = capacity
        self.rows = rows
        self.max_bytes = max_bytes
        self._clips: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self.loads = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_store"] = None  # re-opened in the worker
        state["_clips"] = OrderedDict()
        state["_bytes"] = 0
        return state

    def _open(self) -> Store:
        if self._store is None or os.getpid() != self._pid:
            self._store = Store(self._url, self._clip_root, self._config, auto_upgrade=False)
            self._pid = os.getpid()
            self._clips.clear()
            self._bytes = 0
        return self._store

    def get(self, clip_id: int) -> dict[str, np.ndarray]:
        clips = self._clips
        if clip_id in clips:
            clips.move_to_end(clip_id)
            return clips[clip_id]
        arrays = self._open().load_clip(clip_id)
        self.loads += 1
        kept = {k: arrays[k] for k in self.keys if k in arrays}
        if self.rows is not None:  # copies: the full decoded arrays are freed
            kept = {k: v[self.rows[clip_id]] for k, v in kept.items()}
        clips[clip_id] = kept
        self._bytes += _nbytes(kept)
        while len(clips) > 1 and self._over_budget():
            self._bytes -= _nbytes(clips.popitem(last=False)[1])
        return kept

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays kept."""
        return self._bytes

    def _over_budget(self) -> bool:
        if self.max_bytes is not None:
            return self._bytes > self.max_bytes
        return len(self._clips) > self.capacity


def _nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    return sum(a.nbytes for a in arrays.values())


def frame_features(arrays: dict[str, np.ndarray], row: int) -> PolicyFeatures:
    command = int(arrays["feat_command"][row])
    if not 0 <= command < NUM_COMMANDS:
        raise DatasetError(
            f"feat_command {command} is not an index into the {NUM_COMMANDS} navigation commands"
        )
    return FeatureArrays(
        bev=np.ascontiguousarray(arrays["feat_bev"][row]),
        speed_mps=float(arrays["feat_speed"][row]),
        target_point=np.asarray(arrays["feat_target"][row], np.float32),
        command=command,
    ).to_features()


# ------------------------------------------------------------------------------------------ frame data set


def _pinned_features(f: PolicyFeatures) -> PolicyFeatures:
    return PolicyFeatures(
        f.bev.pin_memory(), f.speed.pin_memory(), f.target_point.pin_memory(), f.command.pin_memory()
    )


@dataclass
class FrameSample:
    features: PolicyFeatures  # one sample, no batch dimension
    waypoints: torch.Tensor  # (K, 2) expert waypoints, ego frame, m
    control: torch.Tensor  # (3,) expert throttle, steer, brake
    speed: torch.Tensor  # () ego speed, m/s (target of the anti-inertia speed head)
    weight: torch.Tensor  # () sample weight
    role: int  # FrameRole


@dataclass
class FrameBatch:
    features: PolicyFeatures
    waypoints: torch.Tensor  # (B, K, 2)
    control: torch.Tensor  # (B, 3)
    speed: torch.Tensor  # (B,)
    weight: torch.Tensor  # (B,)
    role: torch.Tensor  # (B,) int8

    def __len__(self) -> int:
        return int(self.waypoints.shape[0])

    def pin_memory(self) -> FrameBatch:
        """Page-locked copies (DataLoader pin_memory=True calls this) for asynchronous GPU copies."""
        return FrameBatch(
            _pinned_features(self.features),
            self.waypoints.pin_memory(),
            self.control.pin_memory(),
            self.speed.pin_memory(),
            self.weight.pin_memory(),
            self.role.pin_memory(),
        )

    def to(self, device: torch.device) -> FrameBatch:
        return FrameBatch(
            self.features.to(device),
            self.waypoints.to(device, non_blocking=True),
            self.control.to(device, non_blocking=True),
            self.speed.to(device, non_blocking=True),
            self.weight.to(device, non_blocking=True),
            self.role.to(device, non_blocking=True),
        )


def collate_frames(samples: Sequence[FrameSample]) -> FrameBatch:
    return FrameBatch(
        collate_features([s.features for s in samples]),
        torch.stack([s.waypoints for s in samples]),
        torch.stack([s.control for s in samples]),
        torch.stack([s.speed for s in samples]),
        torch.stack([s.weight for s in samples]),
        torch.tensor([s.role for s in samples], dtype=torch.int8),
    )


@dataclass(frozen=True)
class KeyframeWeighting:
    """Keyframe focus of a frame data set (DataConfig.keyframe_*)."""

    brake_gain: float
    accel_gain: float
    scale_m: float
    horizon_s: float  # time of the plan's last waypoint, s

    @classmethod
    def of(cls, config: DataConfig, spec: FeatureSpec) -> KeyframeWeighting | None:
        if config.keyframe_brake_gain <= 0 and config.keyframe_accel_gain <= 0:
            return None
        horizon_s = spec.num_waypoints * spec.waypoint_dt_s
        return cls(config.keyframe_brake_gain, config.keyframe_accel_gain, config.keyframe_scale_m, horizon_s)


def keyframe_factor(waypoints: np.ndarray, speed_mps: float, keyframes: KeyframeWeighting) -> float:
    """Sample-weight factor of a frame by how far its expert plan departs from holding the speed.

        s_K = sum_k |x_k - x_{k-1}|      (x_0 = ego: the plan's arc length to its last waypoint)
        d   = s_K - v T                  (T = the plan's horizon, v = the ego's speed now)
        f   = 1 + g_brake min(max(-d, 0) / scale, 1) + g_accel min(max(d, 0) / scale, 1)
    A cruising or a standing, waiting expert gives f = 1; one braking for something ahead up to
    1 + g_brake, one driving off up to 1 + g_accel.
    """
    steps = np.diff(np.vstack([np.zeros((1, 2)), np.asarray(waypoints, np.float64)]), axis=0)
    d = (float(np.linalg.norm(steps, axis=1).sum()) - speed_mps * keyframes.horizon_s) / keyframes.scale_m
    return 1.0 + keyframes.brake_gain * min(max(-d, 0.0), 1.0) + keyframes.accel_gain * min(max(d, 0.0), 1.0)


class FrameDataset(Dataset[FrameSample]):
    """Features + expert labels of the frames of a FrameIndex, read lazily from the clip store;
    `keyframes` (optional) scales each sample's weight by keyframe_factor."""

    def __init__(
        self, store: Store, index: FrameIndex, cache_clips: int, keyframes: KeyframeWeighting | None = None
    ) -> None:
        self.index = index
        self.cache = ClipCache(store, FRAME_SAMPLE_KEYS, cache_clips)
        self.keyframes = keyframes

    def __len__(self) -> int:
        return len(self.index)

    @property
    def sample_clips(self) -> np.ndarray:
        return self.index.clip_id

    def __getitem__(self, i: int) -> FrameSample:
        arrays = self.cache.get(int(self.index.clip_id[i]))
        row = int(self.index.row[i])
        waypoints = np.asarray(arrays["expert_waypoints_ego"][row], np.float32)
        speed = float(arrays["feat_speed"][row])
        weight = float(self.index.weight[i])
        if self.keyframes is not None:
            weight *= keyframe_factor(waypoints, speed, self.keyframes)
        return FrameSample(
            frame_features(arrays, row),
            torch.as_tensor(waypoints),
            torch.as_tensor(np.asarray(arrays["expert_control"][row], np.float32)),
            torch.tensor(speed, dtype=torch.float32),
            torch.tensor(weight, dtype=torch.float32),
            int(self.index.role[i]),
        )


# ------------------------------------------------------------------------------------------ pairs


@dataclass(frozen=True)
class PairIndex:
    """Preference pairs to train on (parallel arrays; plans in the ego frame of the pair's state)."""

    pair_id: np.ndarray  # (N,) int64
    clip_id: np.ndarray  # (N,) int64
    row: np.ndarray  # (N,) int64
    chosen: np.ndarray  # (N, K, 2) float32
    rejected: np.ndarray  # (N, K, 2) float32
    has_control: np.ndarray  # (N,) bool: the clip holds both controls of this pair (expert vs policy)
    weight: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return int(self.pair_id.shape[0])


def select_pairs(
    store: Store,
    run: str,
    iteration: int,
    sources: Sequence[str],
    spec: FeatureSpec,
    only_iteration: bool = False,
    rollout_phases: Sequence[str] = ("rollout",),
    verdict_weights: Mapping[str, float] | None = None,
    verdict_overrides: Sequence[str] = (),
) -> PairIndex:
    """Stored preference pairs of `run` from iterations <= `iteration` (== with only_iteration), each
    weighted by its stored weight x the `verdict_weights` factor of its takeover (verdict_weights.py)."""
    k = spec.num_waypoints
    iterations = {"iteration": iteration} if only_iteration else {"max_iteration": iteration}
    pairs = store.list_preference_pairs(
        run=run, phases=list(rollout_phases), sources=list(sources), **iterations
    )
    pairs = [p for p in pairs if p.clip_id is not None]  # a pair without a clip has no features
    weights = dict(verdict_weights or {})
    factors = verdict_factors(store, (p.takeover_id for p in pairs if p.takeover_id is not None), weights,
                              verdict_overrides)  # fmt: skip
    unjudged = float(weights.get(UNJUDGED, 1.0))

    def weight_of(pair: PreferencePairInfo) -> float:
        return pair.weight * (unjudged if pair.takeover_id is None else factors[pair.takeover_id])

    pairs = [p for p in pairs if weight_of(p) > 0]
    clips = {c.id: c.arrays for c in store.list_clips(ids=sorted({int(p.clip_id) for p in pairs}))}
    usable = training_clips(list(clips.items()), FEATURE_KEYS, spec, f"preference pairs of run {run!r}")
    kept, plans_c, plans_r, has_control = [], [], [], []
    for pair in pairs:
        if pair.clip_id not in usable:
            continue
        if pair.clip_row is None:
            raise DatasetError(
                f"preference pair {pair.id} names clip {pair.clip_id}, which does not hold its tick "
                f"{pair.frame}; rebuild the pairs (takeover train dpo)"
            )
        # Plans are stored as [x, y] or [x, y, speed] points; an empty plan becomes (0, 0) and fails below.
        chosen = np.asarray(pair.chosen, np.float32).reshape(len(pair.chosen), -1)[:, :2]
        rejected = np.asarray(pair.rejected, np.float32).reshape(len(pair.rejected), -1)[:, :2]
        if chosen.shape != (k, 2) or rejected.shape != (k, 2):
            raise DatasetError(
                f"preference pair {pair.id} has plans of {len(chosen)} and {len(rejected)} points; the policy "
                f"predicts {k} waypoints. Rebuild the pairs for this policy (takeover train dpo)"
            )
        kept.append(pair)
        plans_c.append(chosen)
        plans_r.append(rejected)
        meta = clips[pair.clip_id]
        has_control.append(
            pair.source == PairSource.EXPERT_VS_POLICY
            and all(key in meta for key in ("expert_control", "policy_control"))
        )
    if not kept:
        return PairIndex(
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
            np.zeros((0, k, 2), np.float32), np.zeros((0, k, 2), np.float32),
            np.zeros(0, bool), np.zeros(0, np.float32),
        )  # fmt: skip
    return PairIndex(
        np.array([p.id for p in kept], np.int64),
        np.array([p.clip_id for p in kept], np.int64),
        np.array([p.clip_row for p in kept], np.int64),
        np.stack(plans_c),
        np.stack(plans_r),
        np.array(has_control, bool),
        np.array([weight_of(p) for p in kept], np.float32),
    )


@dataclass
class PairSample:
    features: PolicyFeatures
    chosen_waypoints: torch.Tensor  # (K, 2)
    rejected_waypoints: torch.Tensor  # (K, 2)
    chosen_control: torch.Tensor  # (3,) expert control (zeros when has_control is False)
    rejected_control: torch.Tensor  # (3,) policy control
    has_control: torch.Tensor  # () bool
    weight: torch.Tensor  # ()


@dataclass
class PairBatch:
    features: PolicyFeatures
    chosen_waypoints: torch.Tensor  # (B, K, 2)
    rejected_waypoints: torch.Tensor
    chosen_control: torch.Tensor  # (B, 3)
    rejected_control: torch.Tensor
    has_control: torch.Tensor  # (B,) bool
    weight: torch.Tensor  # (B,)

    def __len__(self) -> int:
        return int(self.weight.shape[0])

    def pin_memory(self) -> PairBatch:
        return PairBatch(
            _pinned_features(self.features),
            self.chosen_waypoints.pin_memory(),
            self.rejected_waypoints.pin_memory(),
            self.chosen_control.pin_memory(),
            self.rejected_control.pin_memory(),
            self.has_control.pin_memory(),
            self.weight.pin_memory(),
        )

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(
            self.features.to(device),
            *(
                t.to(device, non_blocking=True)
                for t in (
                    self.chosen_waypoints,
                    self.rejected_waypoints,
                    self.chosen_control,
                    self.rejected_control,
                    self.has_control,
                    self.weight,
                )
            ),
        )


def collate_pairs(samples: Sequence[PairSample]) -> PairBatch:
    return PairBatch(
        collate_features([s.features for s in samples]),
        torch.stack([s.chosen_waypoints for s in samples]),
        torch.stack([s.rejected_waypoints for s in samples]),
        torch.stack([s.chosen_control for s in samples]),
        torch.stack([s.rejected_control for s in samples]),
        torch.stack([s.has_control for s in samples]),
        torch.stack([s.weight for s in samples]),
    )


class PairDataset(Dataset[PairSample]):
    """DPO pairs: same features, chosen = expert (or best sampled) plan, rejected = policy (or worst)."""

    def __init__(self, store: Store, index: PairIndex, cache_clips: int, cache_mib: float = 0.0) -> None:
        """Each clip keeps only the frames its pairs use; `cache_mib` > 0 bounds the cache by those
        frames' bytes (a pair set of a few thousand frames then stays decoded across epochs), else by
        `cache_clips` clips."""
        self.index = index
        rows = {int(c): np.unique(index.row[index.clip_id == c]) for c in np.unique(index.clip_id)}
        # A sample's frame within its clip's kept rows.
        self.local_row = np.array(
            [np.searchsorted(rows[int(c)], r) for c, r in zip(index.clip_id, index.row, strict=True)],
            np.int64,
        )
        max_bytes = int(cache_mib * BYTES_PER_MIB) if cache_mib > 0 else None
        self.cache = ClipCache(
            store, (*FEATURE_KEYS, "expert_control", "policy_control"), cache_clips, rows, max_bytes
        )

    def __len__(self) -> int:
        return len(self.index)

    @property
    def sample_clips(self) -> np.ndarray:
        return self.index.clip_id

    def __getitem__(self, i: int) -> PairSample:
        arrays = self.cache.get(int(self.index.clip_id[i]))
        row = int(self.local_row[i])
        has_control = bool(self.index.has_control[i])
        zeros = np.zeros(CONTROL_DIM, np.float32)
        chosen_c = arrays["expert_control"][row] if has_control else zeros
        rejected_c = arrays["policy_control"][row] if has_control else zeros
        return PairSample(
            frame_features(arrays, row),
            torch.from_numpy(self.index.chosen[i]),
            torch.from_numpy(self.index.rejected[i]),
            torch.as_tensor(np.asarray(chosen_c, np.float32)),
            torch.as_tensor(np.asarray(rejected_c, np.float32)),
            torch.tensor(has_control),
            torch.tensor(float(self.index.weight[i]), dtype=torch.float32),
        )


# ------------------------------------------------------------------------------------------ sampling


class BlockShuffleSampler(Sampler[int]):
    """Random order that visits clips in blocks: clips are shuffled, cut into blocks of `block_clips`,
    and the samples of each block are shuffled together. With block_clips <= the cache size each clip
    is decoded once per epoch; the order is a function of the generator's seed alone."""

    def __init__(self, sample_clips: np.ndarray, block_clips: int, generator: torch.Generator) -> None:
        self.sample_clips = np.asarray(sample_clips)
        self.block_clips = block_clips
        self.generator = generator
        self._by_clip: dict[int, np.ndarray] = {}
        for clip in np.unique(self.sample_clips):
            self._by_clip[int(clip)] = np.flatnonzero(self.sample_clips == clip)

    def __len__(self) -> int:
        return int(self.sample_clips.shape[0])

    def __iter__(self) -> Iterator[int]:
        clips = np.array(sorted(self._by_clip), np.int64)
        order = clips[torch.randperm(len(clips), generator=self.generator).numpy()]
        for start in range(0, len(order), self.block_clips):
            members = np.concatenate([self._by_clip[int(c)] for c in order[start : start + self.block_clips]])
            yield from members[torch.randperm(len(members), generator=self.generator).numpy()].tolist()


def clip_block_loader(
    dataset: FrameDataset | PairDataset,
    batch_size: int,
    block_clips: int,
    num_workers: int,
    collate: Callable[[Sequence[Any]], Any],
    pin_memory: bool,
    generator: torch.Generator | None,
) -> DataLoader:
    """Batches shuffled in clip blocks when a generator is given (training), in order otherwise.

    Workers persist across epochs: each keeps its own clip cache, which a new worker would decode again.
    """
    sampler = (
        BlockShuffleSampler(dataset.sample_clips, block_clips, generator) if generator is not None else None
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
