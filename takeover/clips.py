"""Clip arrays: the frames the episode runner kept (snapshots, both plans, who drove) -> numpy arrays.

Keys are exactly storage/clip_format.py's (what `takeover db export-clip` renders) plus the training
keys the DAgger / DPO data sets read:

  frame                (T,)        int64   episode tick of each frame (demonstration clips are strided)
  phase                (T,)        int8    ClipPhase: 0 before the takeover, 1 expert driving, 2 after
                                           the hand-back, 3 demonstration
  actor_id             (A,)        int64   simulator id of each actor slot
  light_id             (L,)        int64   traffic light of each stop line in light_xy_state
  applied_control      (T, 3)      float32 throttle, steer, brake sent to the simulator
  feat_bev             (T, C, H, W) uint8  the policy's BEV input (FeatureBuilder.arrays)
  feat_speed           (T,)        float32 ego speed input, m/s
  feat_target          (T, 2)      float32 target point, ego frame m (x forward, y right)
  feat_command         (T,)        int8    navigation command, index in takeover.policy.features.COMMANDS
  expert_waypoints_ego (T, K, 2)   float32 expert plan at the policy's K waypoint times, ego frame m
  expert_speeds        (T, K)      float32 expert planned speed at those times, m/s
  expert_control       (T, 3)      float32 expert throttle, steer, brake
  policy_waypoints_ego (T, K, 2)   float32 policy plan, ego frame m      (absent in demonstrations)
  policy_control       (T, 3)      float32 policy's fused control        (absent in demonstrations)

Plans in clips are sampled at the policy's waypoint times (`plan_times_s`, K = P): the expert's own
plan is resampled linearly in time (it starts at the ego at t = 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

import numpy as np

from carla_bridge.geometry import world_to_ego
from carla_bridge.snapshot import Control, TrafficLightState
from storage.clip_format import DRIVER_EXPERT, DRIVER_POLICY
from takeover.monitor import Driver, plan_positions

if TYPE_CHECKING:
    from carla_bridge.route import DenseRoute
    from carla_bridge.snapshot import WorldSnapshot
    from experts.expert import ExpertPlan
    from takeover.policy.features import FeatureArrays
    from takeover.policy.protocol import PolicyPlan


class ClipPhase(IntEnum):
    PRE_TAKEOVER = 0  # the policy drove, before the trigger
    TAKEOVER = 1  # from the trigger to the hand-back
    AFTER_HANDBACK = 2  # the policy drives again
    DEMONSTRATION = 3  # expert-only episode


class FeatureSource(Protocol):
    """Anything that turns a snapshot into the policy's stored inputs (takeover.policy.FeatureBuilder)."""

    def arrays(self, snapshot: WorldSnapshot) -> FeatureArrays: ...


@dataclass(frozen=True)
class TickRecord:
    """What happened on one tick of an episode, as the clip builder needs it."""

    tick: int  # episode tick (0 = the reset snapshot)
    snapshot: WorldSnapshot
    driver: Driver
    control: Control  # applied to the simulator
    policy_plan: PolicyPlan | None
    expert_plan: ExpertPlan | None


@dataclass(frozen=True)
class ClipLayout:
    """How frames become arrays (from EpisodeConfig)."""

    plan_times_s: np.ndarray  # (K,) waypoint times of both stored plans, s
    max_actors: int  # actor slots A (nearest actors over the clip win)
    actor_radius_m: float  # actors farther than this from the ego on every frame are left out
    route_margin_m: float  # route points this far before the first and after the last frame's progress


def _control_row(control: Control) -> tuple[float, float, float]:
    return (float(control.throttle), float(control.steer), float(control.brake))


def expert_plan_at(
    plan: ExpertPlan, ego_xy: np.ndarray, ego_speed: float, times_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Expert waypoints (K, 2) world and speeds (K,) at `times_s`, linear in time from (ego, speed) at t = 0."""
    own = plan.dt_s * np.arange(1, len(plan.waypoints) + 1)
    xy = plan_positions(own, plan.waypoints, ego_xy, times_s)
    speeds = np.interp(
        times_s, np.concatenate([[0.0], own]), np.concatenate([[ego_speed], plan.target_speeds])
    )
    return xy, speeds


def policy_plan_at(plan: PolicyPlan, ego_xy: np.ndarray, times_s: np.ndarray) -> np.ndarray:
    """Policy waypoints (K, 2) world at `times_s` (the plan itself when its times are those)."""
    own = np.asarray(plan.times_s, dtype=float)
    if own.shape == times_s.shape and np.allclose(own, times_s):
        return np.asarray(plan.xy_world, dtype=float)
    return plan_positions(own, plan.xy_world, ego_xy, times_s)


def _actor_slots(frames: Sequence[TickRecord], max_actors: int, radius_m: float) -> np.ndarray:
    """Ids (A,) of the actors kept: those nearest to the ego over the clip, at most `max_actors`, sorted."""
    best: dict[int, float] = {}
    for f in frames:
        actors = f.snapshot.actors
        if not len(actors):
            continue
        pose = f.snapshot.ego.pose
        d = np.hypot(actors.xyz[:, 0] - pose.x, actors.xyz[:, 1] - pose.y)
        for actor_id, dist in zip(actors.id[d <= radius_m].tolist(), d[d <= radius_m].tolist(), strict=True):
            if dist < best.get(actor_id, np.inf):
                best[actor_id] = dist
    nearest = sorted(best, key=lambda i: (best[i], i))[:max_actors]
    return np.array(sorted(nearest), np.int64)


def _light_lines(frames: Sequence[TickRecord]) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, int], int]]:
    """Every stop line of a light seen in the clip: ids (L,), positions (L, 2), (light id, line) -> slot."""
    slots: dict[tuple[int, int], int] = {}
    ids: list[int] = []
    xy: list[tuple[float, float]] = []
    for f in frames:
        for light in f.snapshot.traffic_lights:
            for k, line in enumerate(light.stop_lines):
                key = (int(light.id), k)
                if key not in slots:
                    slots[key] = len(ids)
                    ids.append(int(light.id))
                    xy.append((float(line.x), float(line.y)))
    return np.array(ids, np.int64), np.array(xy, np.float64).reshape(-1, 2), slots


def build_clip_arrays(
    frames: Sequence[TickRecord],
    phases: np.ndarray,
    dense: DenseRoute,
    layout: ClipLayout,
    features: FeatureSource | None,
) -> dict[str, np.ndarray]:
    """The arrays of one clip over `frames` (see the module docstring for every key)."""
    t_count = len(frames)
    if t_count == 0:
        raise ValueError("a clip needs at least one frame")
    times = np.asarray(layout.plan_times_s, dtype=float)
    k = len(times)
    snaps = [f.snapshot for f in frames]
    arrays: dict[str, np.ndarray] = {
        "frame": np.array([f.tick for f in frames], np.int64),
        "phase": np.asarray(phases, np.int8),
        "time_s": np.array([s.time_s for s in snaps], np.float64),
        "ego_speed": np.array([s.ego.speed for s in snaps], np.float32),
        "driver": np.array(
            [DRIVER_EXPERT if f.driver is Driver.EXPERT else DRIVER_POLICY for f in frames], np.int8
        ),
        "ego_pose": np.array([(s.ego.pose.x, s.ego.pose.y, s.ego.pose.z, s.ego.pose.yaw) for s in snaps]),
        "ego_extent": np.array([s.ego.extent for s in snaps], np.float32),
        "applied_control": np.array([_control_row(f.control) for f in frames], np.float32),
    }

    slot_ids = _actor_slots(frames, layout.max_actors, layout.actor_radius_m)
    a = len(slot_ids)
    actor_pose = np.zeros((t_count, a, 4))
    actor_extent = np.zeros((t_count, a, 3), np.float32)
    actor_kind = np.zeros((t_count, a), np.int8)
    actor_valid = np.zeros((t_count, a), np.uint8)
    if a:
        for t, s in enumerate(snaps):
            table = s.actors
            if not len(table):
                continue
            pos = np.searchsorted(slot_ids, table.id)
            pos = np.minimum(pos, a - 1)
            keep = slot_ids[pos] == table.id
            rows, slots = np.flatnonzero(keep), pos[keep]
            actor_pose[t, slots, :3] = table.xyz[rows]
            actor_pose[t, slots, 3] = table.yaw[rows]
            actor_extent[t, slots] = table.extent[rows]
            actor_kind[t, slots] = table.kind[rows]
            actor_valid[t, slots] = 1
    arrays.update(
        actor_id=slot_ids, actor_pose=actor_pose, actor_extent=actor_extent, actor_kind=actor_kind,
        actor_valid=actor_valid,
    )  # fmt: skip

    light_ids, light_xy, light_slots = _light_lines(frames)
    lights = np.zeros((t_count, len(light_ids), 3))
    lights[:, :, :2] = light_xy[None]
    lights[:, :, 2] = float(TrafficLightState.UNKNOWN)
    for t, s in enumerate(snaps):
        for light in s.traffic_lights:
            for j in range(len(light.stop_lines)):
                lights[t, light_slots[(int(light.id), j)], 2] = float(int(light.state))
    arrays["light_id"] = light_ids
    arrays["light_xy_state"] = lights

    indices = [int(np.clip(s.route.index, 0, len(dense) - 1)) for s in snaps]
    s_lo = float(dense.s[min(indices)]) - layout.route_margin_m
    s_hi = float(dense.s[max(indices)]) + layout.route_margin_m
    lo = int(np.searchsorted(dense.s, s_lo, side="left"))
    hi = int(np.searchsorted(dense.s, s_hi, side="right"))
    arrays["route_xy"] = dense.xyz[lo : max(hi, lo + 1), :2].astype(np.float64)

    experts = [f.expert_plan for f in frames]
    if all(p is not None for p in experts):
        world = np.zeros((t_count, k, 2))
        speeds = np.zeros((t_count, k), np.float32)
        for t, (s, p) in enumerate(zip(snaps, experts, strict=True)):
            assert p is not None
            world[t], speeds[t] = expert_plan_at(p, s.ego.pose.xy, float(s.ego.speed), times)
        arrays["expert_plan"] = world
        arrays["expert_waypoints_ego"] = np.stack(
            [world_to_ego(world[t], s.ego.pose) for t, s in enumerate(snaps)]
        ).astype(np.float32)
        arrays["expert_speeds"] = speeds
        arrays["expert_control"] = np.array(
            [_control_row(p.control) for p in experts if p is not None], np.float32
        )

    policies = [f.policy_plan for f in frames]
    if all(p is not None for p in policies):
        world = np.stack(
            [
                policy_plan_at(p, s.ego.pose.xy, times)
                for s, p in zip(snaps, policies, strict=True)
                if p is not None
            ]
        )
        arrays["policy_plan"] = world
        arrays["policy_waypoints_ego"] = np.stack(
            [world_to_ego(world[t], s.ego.pose) for t, s in enumerate(snaps)]
        ).astype(np.float32)
        arrays["policy_control"] = np.array(
            [_control_row(p.control) for p in policies if p is not None], np.float32
        )

    if features is not None:
        feats = [features.arrays(s) for s in snaps]
        arrays["feat_bev"] = np.stack([f.bev for f in feats]).astype(np.uint8, copy=False)
        arrays["feat_speed"] = np.array([f.speed_mps for f in feats], np.float32)
        arrays["feat_target"] = np.stack([f.target_point for f in feats]).astype(np.float32)
        arrays["feat_command"] = np.array([f.command for f in feats], np.int8)
    return arrays


__all__ = [
    "ClipLayout",
    "ClipPhase",
    "FeatureSource",
    "TickRecord",
    "build_clip_arrays",
    "expert_plan_at",
    "policy_plan_at",
]
