"""Top-down rendering of clips (takeover.clip_video): geometry of the ego-up view and what gets drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from postgres import make_clip_arrays

from storage.config import ClipVideoConfig
from storage.errors import RecordError
from takeover.clip_video import (
    EGO_EXPERT_BGR,
    EGO_POLICY_BGR,
    EXPERT_PLAN_BGR,
    LIGHT_BGR,
    box_corners,
    render_clip_video,
    render_frame,
    world_to_pixels,
)

CONFIG = ClipVideoConfig(width_px=200, height_px=200, px_per_m=4.0, ahead_m=0.0)


def _bare(n_frames: int = 3, yaw: float = 0.0) -> dict[str, np.ndarray]:
    return {
        "time_s": np.arange(n_frames) * 0.05,
        "ego_speed": np.full(n_frames, 5.0),
        "driver": np.zeros(n_frames, np.int8),
        "ego_pose": np.tile([10.0, 20.0, 0.0, yaw], (n_frames, 1)),
    }


def test_heading_points_up_and_carla_plus_y_is_to_the_right() -> None:
    centre = np.array([10.0, 20.0])
    # given an ego at (10, 20) heading along +x, when points ahead and at +y are projected
    pixels = world_to_pixels(np.array([[15.0, 20.0], [10.0, 25.0], [10.0, 20.0]]), centre, 0.0, CONFIG)
    # then ahead is up (smaller row), +y (right in CARLA's left-handed frame) is to the right
    assert pixels.tolist() == [[100, 80], [120, 100], [100, 100]]
    # and turning the ego by +90 deg (towards +y) makes +y the new "up"
    turned = world_to_pixels(np.array([[10.0, 25.0]]), centre, np.pi / 2, CONFIG)
    assert turned.tolist() == [[100, 80]]


def test_look_ahead_shifts_the_ego_down() -> None:
    config = ClipVideoConfig(width_px=200, height_px=200, px_per_m=4.0, ahead_m=10.0)
    assert world_to_pixels(np.array([[0.0, 0.0]]), np.zeros(2), 0.0, config).tolist() == [[100, 140]]


def test_box_corners_follow_yaw() -> None:
    corners = box_corners(0.0, 0.0, np.pi / 2, 2.0, 1.0)
    np.testing.assert_allclose(np.sort(corners[:, 0]), [-1, -1, 1, 1], atol=1e-12)
    np.testing.assert_allclose(np.sort(corners[:, 1]), [-2, -2, 2, 2], atol=1e-12)


def test_ego_colour_tells_who_drives() -> None:
    arrays = _bare()
    arrays["driver"] = np.array([0, 1, 1], np.int8)
    assert tuple(render_frame(arrays, 0, CONFIG)[100, 100]) == EGO_POLICY_BGR
    assert tuple(render_frame(arrays, 1, CONFIG)[100, 100]) == EGO_EXPERT_BGR


def test_actors_plans_and_lights_are_drawn_where_they_are() -> None:
    arrays = _bare(n_frames=1)
    arrays["actor_pose"] = np.array([[[20.0, 20.0, 0.0, 0.0]]])  # 10 m ahead
    arrays["actor_kind"] = np.array([[0]])
    arrays["actor_valid"] = np.array([[True]])
    arrays["expert_plan"] = np.array([[[10.0, 30.0], [18.0, 30.0]]])  # 10 m to the right
    arrays["light_xy_state"] = np.array([[[10.0, 10.0, 0.0]]])  # red light 10 m to the left
    image = render_frame(arrays, 0, CONFIG)
    assert tuple(image[60, 100]) != tuple(image[5, 5])  # the vehicle 40 px above the ego
    assert tuple(image[90, 140]) == EXPERT_PLAN_BGR
    assert tuple(image[100, 60]) == LIGHT_BGR[0]
    # an invalid actor slot is not drawn
    arrays["actor_valid"] = np.array([[False]])
    assert tuple(render_frame(arrays, 0, CONFIG)[60, 100]) == tuple(image[5, 5])


def test_full_clip_renders_to_a_video(tmp_path: Path) -> None:
    arrays = make_clip_arrays(0, 8, 4, seed=2)
    assert render_clip_video(arrays, tmp_path / "clip.mp4", CONFIG) == 8
    assert (tmp_path / "clip.mp4").stat().st_size > 0


def test_clip_without_ego_pose_cannot_be_rendered(tmp_path: Path) -> None:
    arrays = _bare()
    del arrays["ego_pose"]
    with pytest.raises(RecordError, match="ego_pose"):
        render_clip_video(arrays, tmp_path / "x.mp4", CONFIG)
