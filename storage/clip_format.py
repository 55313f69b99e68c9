"""The arrays of a clip: keys, shapes and meaning (what the episode runner writes and export-clip renders).

A clip is a `dict[str, np.ndarray]` over T consecutive simulator ticks (20 Hz). Symbolic sizes:
T frames, A actor slots, P plan points, R route points, L traffic lights. Conventions follow the
WorldSnapshot contract: CARLA world frame, metres, seconds, m/s, yaw in radians, boxes as half extents.

Keys needed by every clip (they fill the `frames` table):
  time_s        (T,)      episode time of each tick, s
  ego_speed     (T,)      ego speed along its heading, m/s
  driver        (T,)      who drove the tick: 0 policy, 1 expert
Optional frame numbering (clips stored with a stride, e.g. demonstrations every 5th tick):
  frame         (T,)      simulator tick of each clip frame (default: start_frame + 0..T-1)
Keys the top-down renderer understands (ego_pose is required to render, the rest is drawn when present):
  ego_pose      (T, 4)    ego x, y, z, yaw (rad)
  ego_extent    (T, 3)    ego half extents, m
  actor_pose    (T, A, 4) other actors' x, y, z, yaw (rad); a slot keeps one actor for the whole clip
  actor_extent  (T, A, 3) their half extents, m
  actor_kind    (T, A)    0 vehicle, 1 walker, 2 bicycle, 3 static (values of carla_bridge ActorKind)
  actor_valid   (T, A)    1 where the slot holds an actor on that tick
  route_xy      (R, 2)    the route's dense points near the clip, world x, y
  policy_plan   (T, P, 2) the policy's planned trajectory, world x, y
  expert_plan   (T, P, 2) the expert's planned trajectory, world x, y
  light_xy_state (T, L, 3) traffic lights: stop-line x, y and state (0 red, 1 yellow, 2 green, 3 off, 4 unknown)
Any other key (features, camera images, snapshot fields) is stored as it is; object arrays are refused
because the store loads with allow_pickle=False.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from storage.errors import RecordError

DRIVER_POLICY = 0
DRIVER_EXPERT = 1


@dataclass(frozen=True)
class ArraySpec:
    shape: tuple[str | int, ...]  # symbolic dims (T, A, P, R, L) or fixed sizes
    meaning: str


CLIP_KEYS: dict[str, ArraySpec] = {
    "time_s": ArraySpec(("T",), "episode time of each tick, s"),
    "ego_speed": ArraySpec(("T",), "ego speed along its heading, m/s"),
    "driver": ArraySpec(("T",), "0 policy, 1 expert"),
    "frame": ArraySpec(("T",), "simulator tick of each frame (optional)"),
    "ego_pose": ArraySpec(("T", 4), "ego x, y, z, yaw (rad)"),
    "ego_extent": ArraySpec(("T", 3), "ego half extents, m"),
    "actor_pose": ArraySpec(("T", "A", 4), "actors' x, y, z, yaw (rad)"),
    "actor_extent": ArraySpec(("T", "A", 3), "actors' half extents, m"),
    "actor_kind": ArraySpec(("T", "A"), "0 vehicle, 1 walker, 2 bicycle, 3 static"),
    "actor_valid": ArraySpec(("T", "A"), "1 where the slot holds an actor"),
    "route_xy": ArraySpec(("R", 2), "route points, world x, y"),
    "policy_plan": ArraySpec(("T", "P", 2), "policy plan, world x, y"),
    "expert_plan": ArraySpec(("T", "P", 2), "expert plan, world x, y"),
    "light_xy_state": ArraySpec(("T", "L", 3), "stop-line x, y and light state"),
}
FRAME_KEYS: tuple[str, ...] = ("time_s", "ego_speed", "driver")


def clip_frame_numbers(arrays: Mapping[str, np.ndarray], start_frame: int, n_frames: int) -> np.ndarray:
    """Tick number of each clip frame: the `frame` key when present, else consecutive from `start_frame`."""
    if "frame" in arrays:
        frames = np.asarray(arrays["frame"]).astype(np.int64)
        if frames.shape != (n_frames,):
            raise RecordError(f"clip key 'frame' has shape {frames.shape}, expected ({n_frames},)")
        return frames
    return np.arange(n_frames, dtype=np.int64) + int(start_frame)


RENDER_KEYS: tuple[str, ...] = ("ego_pose",)


def clip_length(arrays: Mapping[str, np.ndarray]) -> int:
    """T, the number of ticks of a clip (length of its `time_s`)."""
    if "time_s" not in arrays:
        raise RecordError("clip arrays lack 'time_s' (T,); every clip needs time_s, ego_speed and driver")
    return int(np.asarray(arrays["time_s"]).shape[0])


def validate_clip_arrays(arrays: Mapping[str, np.ndarray], required: tuple[str, ...] = FRAME_KEYS) -> int:
    """Check keys, dtypes and the documented shapes (sizes consistent across keys); returns T."""
    missing = [key for key in required if key not in arrays]
    if missing:
        raise RecordError(f"clip arrays lack {missing}; see storage/clip_format.py for the keys")
    n_frames = clip_length(arrays)
    sizes: dict[str, int] = {"T": n_frames}
    for key, value in arrays.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise RecordError(f"clip array key {key!r} must be a non-empty string without '/'")
        if not isinstance(value, np.ndarray):
            raise RecordError(f"clip array {key!r} is a {type(value).__name__}, expected numpy.ndarray")
        if value.dtype.hasobject:
            raise RecordError(f"clip array {key!r} has dtype object; store numbers or fixed-width strings")
        spec = CLIP_KEYS.get(key)
        if spec is None:
            continue
        if value.ndim != len(spec.shape):
            raise RecordError(f"clip array {key!r} has shape {value.shape}, expected {spec.shape}")
        for dim, size in zip(spec.shape, value.shape, strict=True):
            expected = sizes.setdefault(dim, size) if isinstance(dim, str) else dim
            if size != expected:
                raise RecordError(
                    f"clip array {key!r} has shape {value.shape}, expected {spec.shape} with {dim}={expected}"
                )
    driver = np.asarray(arrays["driver"]) if "driver" in arrays else None
    if driver is not None and driver.size and not np.isin(driver, (DRIVER_POLICY, DRIVER_EXPERT)).all():
        raise RecordError("clip array 'driver' must hold only 0 (policy) or 1 (expert)")
    if "frame" in arrays and np.any(np.diff(np.asarray(arrays["frame"]).astype(np.int64)) <= 0):
        raise RecordError("clip array 'frame' must be strictly increasing (simulator ticks in order)")
    return n_frames
