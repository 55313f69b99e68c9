"""Render a stored clip's arrays (storage/clip_format.py keys) as a top-down mp4 with OpenCV.

The view follows the ego with its heading pointing up. CARLA's world frame is left-handed (y down the
map), so an image with rows growing downwards shows it without a mirror: a point at offset d from the
view centre lies f = d·(cos ψ, sin ψ) ahead of the ego and r = d·(−sin ψ, cos ψ) to its right, and is
drawn at pixel (u, v) = (W/2 + r·k, H/2 − (f − a)·k) for heading ψ, scale k px/m and look-ahead a.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from carla_bridge.geometry import box_corners, to_local
from carla_bridge.snapshot import ActorKind, TrafficLightState
from carla_bridge.units import KMH_PER_MPS
from storage.clip_format import DRIVER_EXPERT, RENDER_KEYS, validate_clip_arrays
from storage.config import ClipVideoConfig
from storage.errors import RecordError

# Colours are BGR (OpenCV).
BACKGROUND_BGR = (40, 40, 40)
ROUTE_BGR = (110, 110, 110)
EGO_POLICY_BGR = (80, 200, 80)  # green: the policy drives
EGO_EXPERT_BGR = (0, 140, 255)  # orange: the expert drives (takeover)
POLICY_PLAN_BGR = (120, 255, 120)
EXPERT_PLAN_BGR = (255, 80, 255)
TEXT_BGR = (235, 235, 235)
ACTOR_BGR: dict[int, tuple[int, int, int]] = {
    ActorKind.VEHICLE: (220, 140, 60),
    ActorKind.WALKER: (60, 60, 230),
    ActorKind.BICYCLE: (60, 220, 230),
    ActorKind.STATIC: (150, 150, 150),
}
LIGHT_BGR: dict[int, tuple[int, int, int]] = {
    TrafficLightState.RED: (0, 0, 255),
    TrafficLightState.YELLOW: (0, 220, 255),
    TrafficLightState.GREEN: (0, 255, 0),
}
LIGHT_OFF_BGR = (90, 90, 90)
DEFAULT_EGO_HALF_EXTENT_M = (2.45, 1.06)  # Lincoln MKZ 2020, CARLA's leaderboard ego
DEFAULT_ACTOR_HALF_EXTENT_M = (2.0, 0.9)
LIGHT_RADIUS_PX = 5
ROUTE_LINE_PX = 1
FONT_SCALE = 0.5
TEXT_ORIGIN_PX = (10, 22)


def world_to_pixels(
    points_xy: np.ndarray, centre_xy: np.ndarray, yaw_rad: float, config: ClipVideoConfig
) -> np.ndarray:
    """World points (N, 2) -> integer pixels (N, 2); equation in the module docstring."""
    d = np.asarray(points_xy, dtype=float).reshape(-1, 2) - centre_xy
    ahead, right = to_local(d[:, 0], d[:, 1], yaw_rad)
    u = config.width_px / 2 + right * config.px_per_m
    v = config.height_px / 2 - (ahead - config.ahead_m) * config.px_per_m
    return np.round(np.stack([u, v], axis=1)).astype(np.int32)


def _polyline(image: np.ndarray, pixels: np.ndarray, colour: tuple[int, int, int], thickness: int) -> None:
    if len(pixels) >= 2:
        cv2.polylines(image, [pixels.reshape(-1, 1, 2)], isClosed=False, color=colour, thickness=thickness)


def render_frame(arrays: Mapping[str, np.ndarray], t: int, config: ClipVideoConfig) -> np.ndarray:
    """Tick `t` of a clip as an (H, W, 3) uint8 BGR image."""
    pose = np.asarray(arrays["ego_pose"], dtype=float)[t]
    ego_xy, yaw = pose[:2], float(pose[3])
    image = np.full((config.height_px, config.width_px, 3), BACKGROUND_BGR, dtype=np.uint8)

    def to_px(points: np.ndarray) -> np.ndarray:
        return world_to_pixels(points, ego_xy, yaw, config)

    if "route_xy" in arrays:
        _polyline(image, to_px(np.asarray(arrays["route_xy"])[:, :2]), ROUTE_BGR, ROUTE_LINE_PX)
    if "light_xy_state" in arrays:
        for x, y, state in np.asarray(arrays["light_xy_state"], dtype=float)[t]:
            centre = tuple(int(c) for c in to_px(np.array([[x, y]]))[0])
            cv2.circle(image, centre, LIGHT_RADIUS_PX, LIGHT_BGR.get(int(state), LIGHT_OFF_BGR), thickness=-1)
    if "actor_pose" in arrays:
        poses = np.asarray(arrays["actor_pose"], dtype=float)[t]
        n_actors = poses.shape[0]
        extents = (
            np.asarray(arrays["actor_extent"], dtype=float)[t]
            if "actor_extent" in arrays
            else np.tile([*DEFAULT_ACTOR_HALF_EXTENT_M, 1.0], (n_actors, 1))
        )
        kinds = np.asarray(arrays["actor_kind"])[t] if "actor_kind" in arrays else np.zeros(n_actors, int)
        valid = np.asarray(arrays["actor_valid"])[t] if "actor_valid" in arrays else np.ones(n_actors, bool)
        for i in np.flatnonzero(valid):
            corners = box_corners(poses[i, 0], poses[i, 1], poses[i, 3], extents[i, 0], extents[i, 1])
            cv2.fillPoly(image, [to_px(corners)], ACTOR_BGR.get(int(kinds[i]), ACTOR_BGR[ActorKind.STATIC]))
    for key, colour in (("policy_plan", POLICY_PLAN_BGR), ("expert_plan", EXPERT_PLAN_BGR)):
        if key in arrays:
            _polyline(
                image, to_px(np.asarray(arrays[key], dtype=float)[t][:, :2]), colour, config.plan_line_px
            )
    half = (
        np.asarray(arrays["ego_extent"], dtype=float)[t][:2]
        if "ego_extent" in arrays
        else np.array(DEFAULT_EGO_HALF_EXTENT_M)
    )
    expert = "driver" in arrays and int(np.asarray(arrays["driver"])[t]) == DRIVER_EXPERT
    ego_colour = EGO_EXPERT_BGR if expert else EGO_POLICY_BGR
    cv2.fillPoly(image, [to_px(box_corners(ego_xy[0], ego_xy[1], yaw, half[0], half[1]))], ego_colour)
    label = [f"t {float(np.asarray(arrays['time_s'])[t]):6.2f} s"] if "time_s" in arrays else []
    if "ego_speed" in arrays:
        label.append(f"{float(np.asarray(arrays['ego_speed'])[t]) * KMH_PER_MPS:5.1f} km/h")
    label.append("EXPERT" if expert else "policy")
    cv2.putText(image, "  ".join(label), TEXT_ORIGIN_PX, cv2.FONT_HERSHEY_SIMPLEX, FONT_SCALE, TEXT_BGR, 1,
                cv2.LINE_AA)  # fmt: skip
    return image


def render_clip_video(arrays: Mapping[str, np.ndarray], path: Path, config: ClipVideoConfig) -> int:
    """Write the clip as a video at `path`; returns the number of frames written."""
    n_frames = validate_clip_arrays(arrays, required=RENDER_KEYS)
    if n_frames == 0:
        raise RecordError("the clip has no frames to render")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter.fourcc(*config.codec), config.fps, (config.width_px, config.height_px)
    )
    if not writer.isOpened():
        raise RecordError(
            f"OpenCV cannot write {path} with codec {config.codec!r}; use a .mp4 path or set video.codec"
        )
    try:
        for t in range(n_frames):
            writer.write(render_frame(arrays, t, config))
    finally:
        writer.release()
    return n_frames
