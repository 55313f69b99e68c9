"""Typed records that cross the storage boundary, both ways.

Into storage: what an episode runner, trainer or flow hands to `Store`. Natural keys make writes
idempotent: an episode is identified by run, iteration, route (set + id), checkpoint, seed, backend,
phase and repetition; a training round by run, iteration, kind and name. Validation here is pure (no
database): a bad record fails before anything is written.

Out of storage: what Store's read methods return (`ClipInfo`, `FrameTable`, `TakeoverInfo`,
`PreferencePairInfo`), so that callers select training data without SQL of their own.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any
from urllib.parse import quote

import numpy as np

from storage.clip_format import validate_clip_arrays
from storage.errors import RecordError

NO_SCENARIO = "none"
PLAN_FRAMES = ("ego", "world")
PLAN_POINT_WIDTHS = (2, 3)  # [x, y] or [x, y, speed]
SHA256_HEX_LEN = 64

EXPERT_DISTANCE_KEY = (
    "expert_distance_m"  # in EpisodeRecord.scores: metres driven with the expert at the wheel
)


def _text(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RecordError(f"{what} must be a non-empty string, got {value!r}")
    return value


def _finite(value: float, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RecordError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise RecordError(f"{what} must be finite, got {value!r}")
    return number


def _key_part(value: object) -> str:
    """One natural-key component; quoting keeps '|' and '=' inside names from forging other keys."""
    return "-" if value is None else quote(str(value), safe="")


def check_sha256(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if len(value) != SHA256_HEX_LEN or any(c not in "0123456789abcdef" for c in value):
        raise RecordError(f"{what} must be a lowercase sha256 hex digest (64 chars), got {value!r}")
    return value


def plan_to_json(plan: Sequence[Sequence[float]] | np.ndarray, what: str) -> list[list[float]]:
    """A plan as a JSON-able list of [x, y] or [x, y, speed] points (all finite)."""
    points = np.asarray(plan, dtype=float)
    if points.size == 0:
        return []
    if points.ndim != 2 or points.shape[1] not in PLAN_POINT_WIDTHS:
        raise RecordError(
            f"{what} must be a list of [x, y] or [x, y, speed] points, got shape {points.shape}"
        )
    if not np.isfinite(points).all():
        raise RecordError(f"{what} holds NaN or infinite values")
    return points.tolist()


def jsonable(value: Any, what: str) -> Any:
    """`value` after a JSON round trip (numpy scalars become Python numbers); a clear error if impossible."""
    try:
        return json.loads(json.dumps(value, default=_json_default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{what} is not JSON-serialisable: {exc}") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


@dataclass(frozen=True)
class RouteRecord:
    route_id: str
    town: str
    route_set: str = "default"  # the route file / set, e.g. "routes_dev" or "bench2drive220"
    scenario_types: tuple[str, ...] = ()  # in route order
    length_m: float | None = None

    @property
    def scenario_type(self) -> str:
        return self.scenario_types[0] if self.scenario_types else NO_SCENARIO

    def validate(self) -> None:
        _text(self.route_id, "route.route_id")
        _text(self.town, "route.town")
        _text(self.route_set, "route.route_set")
        for scenario in self.scenario_types:
            _text(scenario, "route.scenario_types entry")
        if self.length_m is not None and _finite(self.length_m, "route.length_m") < 0:
            raise RecordError(f"route.length_m must be >= 0, got {self.length_m}")


@dataclass(frozen=True)
class EpisodeRecord:
    run: str  # experiment name
    route: RouteRecord
    backend: str  # "embedded", "carla", ...
    seed: int
    distance_m: float  # distance the ego drove
    duration_s: float  # simulated time
    n_frames: int  # ticks of the episode
    status: str = "Completed"  # leaderboard-like status, e.g. Completed, Failed - Agent blocked
    iteration: int | None = None  # iteration number within the run
    checkpoint_sha256: str | None = None  # the policy that drove (recorded with Store.record_checkpoint)
    phase: str = "rollout"  # why it ran: rollout (data collection), eval, expert, ...
    repetition: int = 0
    driving_score: float | None = None  # 0-100
    route_completion: float | None = None  # percent
    infraction_penalty: float | None = None  # 0-1
    success: bool | None = None
    # other scores: efficiency, comfort, expert_share, EXPERT_DISTANCE_KEY, ...
    scores: Mapping[str, float] = field(default_factory=dict)
    infractions: Sequence[Mapping[str, Any]] = ()  # e.g. {"kind": "red_light", "frame": 812, ...}
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def natural_key(self) -> str:
        parts = {
            "run": self.run,
            "iteration": self.iteration,
            "route": f"{self.route.route_set}/{self.route.route_id}",
            "checkpoint": self.checkpoint_sha256,
            "seed": self.seed,
            "backend": self.backend,
            "phase": self.phase,
            "rep": self.repetition,
        }
        return "|".join(f"{name}={_key_part(value)}" for name, value in parts.items())

    def validate(self) -> None:
        _text(self.run, "episode.run")
        _text(self.backend, "episode.backend")
        _text(self.phase, "episode.phase")
        _text(self.status, "episode.status")
        self.route.validate()
        check_sha256(self.checkpoint_sha256, "episode.checkpoint_sha256")
        for name in ("distance_m", "duration_s"):
            if _finite(getattr(self, name), f"episode.{name}") < 0:
                raise RecordError(f"episode.{name} must be >= 0, got {getattr(self, name)}")
        if int(self.n_frames) != self.n_frames or self.n_frames < 0:
            raise RecordError(f"episode.n_frames must be a non-negative integer, got {self.n_frames}")
        for name in ("driving_score", "route_completion", "infraction_penalty"):
            if getattr(self, name) is not None:
                _finite(getattr(self, name), f"episode.{name}")


@dataclass(frozen=True)
class TakeoverRecord:
    frame: int  # tick of the trigger
    time_s: float
    x_m: float  # ego position at the trigger, world
    y_m: float
    speed_mps: float  # ego speed at the trigger
    reason: str  # reason code of the monitor, e.g. "predicted_collision", "red_light", "off_route"
    severity: Mapping[str, float] = field(default_factory=dict)  # e.g. {"ttc_s": 1.2}
    policy_plan: Sequence[Sequence[float]] | np.ndarray = ()  # [[x, y, speed], ...]
    expert_plan: Sequence[Sequence[float]] | np.ndarray = ()
    plan_frame: str = "ego"  # frame of the plans: "ego" or "world"
    yaw_rad: float | None = None
    scenario_type: str | None = None  # scenario active at the trigger, when known
    handback_frame: int | None = None
    handback_time_s: float | None = None

    @property
    def ttc_s(self) -> float | None:
        value = self.severity.get("ttc_s")
        return None if value is None or not math.isfinite(float(value)) else float(value)

    def validate(self, index: int, n_frames: int) -> None:
        what = f"takeover {index}"
        if not 0 <= int(self.frame) < max(n_frames, 1):
            raise RecordError(f"{what}: frame {self.frame} is outside the episode's 0..{n_frames - 1}")
        for name in ("time_s", "x_m", "y_m", "speed_mps"):
            _finite(getattr(self, name), f"{what}.{name}")
        _text(self.reason, f"{what}.reason")
        if self.plan_frame not in PLAN_FRAMES:
            raise RecordError(f"{what}.plan_frame must be one of {PLAN_FRAMES}, got {self.plan_frame!r}")
        if self.handback_frame is not None and self.handback_frame < self.frame:
            raise RecordError(f"{what}: handback_frame {self.handback_frame} precedes frame {self.frame}")


@dataclass(frozen=True)
class ClipRecord:
    kind: str  # "pre_takeover", "takeover", "handback", "episode", ...
    start_frame: int  # episode tick of the clip's first frame
    arrays: Mapping[str, np.ndarray]  # see storage/clip_format.py
    takeover_index: int | None = None  # index into the takeovers passed with the same episode

    def validate(self, index: int, n_frames: int, n_takeovers: int) -> int:
        what = f"clip {index} ({self.kind})"
        _text(self.kind, f"{what}.kind")
        length = validate_clip_arrays(self.arrays)
        if self.start_frame < 0 or self.start_frame + length > n_frames:
            raise RecordError(
                f"{what}: frames {self.start_frame}..{self.start_frame + length - 1} are outside the "
                f"episode's 0..{n_frames - 1}"
            )
        if self.takeover_index is not None and not 0 <= self.takeover_index < n_takeovers:
            raise RecordError(f"{what}: takeover_index {self.takeover_index} but {n_takeovers} takeover(s)")
        return length


@dataclass(frozen=True)
class CheckpointRecord:
    path: str  # where the weights are (local path or fsspec URL)
    sha256: str | None = None  # computed from the file when None
    kind: str = "policy"  # "policy", "bc", "dagger", "dpo", ...
    config: Mapping[str, Any] = field(default_factory=dict)
    parent_sha256: str | None = None  # the checkpoint it was trained from


@dataclass(frozen=True)
class PreferencePairRecord:
    episode_id: int
    frame: int
    time_s: float
    chosen: Sequence[Sequence[float]] | np.ndarray  # preferred plan, e.g. the expert's
    rejected: Sequence[Sequence[float]] | np.ndarray  # dispreferred plan, e.g. the policy's
    source: str = "expert_vs_policy"
    takeover_id: int | None = None
    clip_id: int | None = None  # the clip that holds the state's features
    weight: float = 1.0


@dataclass(frozen=True)
class MetricPoint:
    name: str
    step: int
    value: float


@dataclass(frozen=True)
class TrainingRoundRecord:
    run: str
    kind: str  # "bc", "dagger", "dpo"
    name: str  # unique within the iteration, e.g. "dagger-0"
    iteration: int | None = None
    input_checkpoint_sha256: str | None = None
    output_checkpoint_sha256: str | None = None
    status: str = "completed"
    config: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)  # final values
    history: Sequence[MetricPoint] = ()  # training curves
    n_samples: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def natural_key(self) -> str:
        parts = {"run": self.run, "iteration": self.iteration, "kind": self.kind, "name": self.name}
        return "|".join(f"{name}={_key_part(value)}" for name, value in parts.items())


def content_digest(
    episode: EpisodeRecord, takeovers: Sequence[TakeoverRecord], clips: Sequence[ClipRecord]
) -> str:
    """sha256 over everything an ingest would store: tells a repeated episode from a different one."""
    digest = hashlib.sha256()
    scalar = {
        "episode": {k: v for k, v in episode.__dict__.items() if k != "route"},
        "route": episode.route.__dict__,
        "takeovers": [t.__dict__ for t in takeovers],
        "clips": [{"kind": c.kind, "start": c.start_frame, "takeover": c.takeover_index} for c in clips],
    }
    digest.update(json.dumps(scalar, default=_json_default, sort_keys=True).encode())
    for clip in clips:
        for key in sorted(clip.arrays):
            array = np.ascontiguousarray(clip.arrays[key])
            digest.update(f"{key}:{array.dtype.str}:{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------- read side


@dataclass(frozen=True)
class ClipInfo:
    """A stored clip's row (its arrays live in the clip store at `uri`)."""

    id: int
    episode_id: int
    takeover_id: int | None
    kind: str
    start_frame: int
    end_frame: int  # exclusive: one past the last frame's tick
    uri: str  # relative to the clip root
    sha256: str
    size_bytes: int
    arrays: dict[str, Any]  # name -> {"shape": [...], "dtype": str}


@dataclass(frozen=True)
class FrameTable:
    """Stored frames as parallel arrays, one entry per (clip, tick), ordered by episode, tick, clip.

    `row` is the frame's index in its clip's arrays: a clip's frames are its ticks in increasing order,
    so in a strided clip (demonstrations keep every n-th tick) row is not frame - start_frame.
    """

    clip_id: np.ndarray  # (N,) int64
    episode_id: np.ndarray  # (N,) int64
    frame: np.ndarray  # (N,) int64 episode tick
    row: np.ndarray  # (N,) int64 index in the clip's arrays
    time_s: np.ndarray  # (N,) float64 episode time
    ego_speed_mps: np.ndarray  # (N,) float64
    driver: np.ndarray  # (N,) int8: 0 policy, 1 expert (storage.clip_format)
    is_takeover: np.ndarray  # (N,) bool: a takeover triggered on this tick

    def __len__(self) -> int:
        return int(self.clip_id.shape[0])

    @classmethod
    def empty(cls) -> FrameTable:
        z = np.zeros(0, np.int64)
        return cls(z, z, z, z, np.zeros(0), np.zeros(0), np.zeros(0, np.int8), np.zeros(0, bool))

    def subset(self, mask: np.ndarray) -> FrameTable:
        """The entries where `mask` (bool (N,) or an index array) selects, in its order."""
        return FrameTable(*(getattr(self, f.name)[mask] for f in fields(self)))


@dataclass(frozen=True)
class TakeoverInfo:
    """A stored takeover's row."""

    id: int
    episode_id: int
    seq: int  # order within the episode, from 0
    frame: int  # tick of the trigger
    time_s: float
    x_m: float
    y_m: float
    yaw_rad: float | None
    speed_mps: float
    reason: str
    scenario_type: str | None
    ttc_s: float | None
    severity: dict[str, Any]
    plan_frame: str  # "ego" or "world"
    policy_plan: list[list[float]]  # [[x, y(, speed)], ...]
    expert_plan: list[list[float]]
    handback_frame: int | None
    handback_time_s: float | None


@dataclass(frozen=True)
class CounterfactualRecord:
    """A takeover's counterfactual (storage.models.Counterfactual): what the policy did without it."""

    takeover_id: int
    config_sha256: str  # sha256 of `config` as sorted JSON: one row per takeover and settings
    horizon_s: float
    outcome: str  # the first counted infraction's kind, "standing", "clear" or "diverged"
    necessary: bool | None  # None: the replay diverged before the trigger
    first_event_s: float | None  # seconds from the trigger to the first counted event
    progress_m: float
    events: tuple[Mapping[str, Any], ...] = ()  # every infraction in the window: kind, after_s
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def counts_as_necessary(self) -> bool:
        """Necessary, or diverged: a replay that never reached the trigger shows nothing otherwise."""
        return self.necessary is not False


@dataclass(frozen=True)
class PreferencePairInfo:
    """A stored DPO pair, with where its state's features are in its clip."""

    id: int
    episode_id: int
    takeover_id: int | None
    clip_id: int | None
    frame: int  # episode tick of the state
    time_s: float
    source: str
    chosen: list[list[float]]  # [[x, y(, speed)], ...]
    rejected: list[list[float]]
    weight: float
    clip_row: int | None  # index of `frame` in the clip's arrays; None without a clip holding that tick
