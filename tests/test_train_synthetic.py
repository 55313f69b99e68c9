"""Synthetic training clips in a SQLite Store (used by the other tests/test_train_*.py and the DPO benchmark),
and checks that they are what the episode runner writes: valid clips, the documented training keys.

The synthetic world: the ego drives along world x at speed v towards a target point (20 m, y_t).
Without an obstacle the expert keeps going (x_k = v t_k, y_k = y_t (t_k / T)^2) with throttle; with an
obstacle (a vehicle box in the BEV's "vehicles" channel and in the actor arrays, 12 m ahead) it brakes to
a stop. Demonstrations never show the obstacle; rollouts do, and the policy (whose plan is stored) keeps
going through it, so takeovers happen there: the distribution shift DAgger and DPO exist to fix.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from carla_bridge.bev import BevConfig
from storage import ClipRecord, EpisodeRecord, RouteRecord, Store, TakeoverRecord
from storage.clip_format import DRIVER_EXPERT, DRIVER_POLICY, validate_clip_arrays
from takeover.policy.checkpoint import save_checkpoint
from takeover.policy.config import ModelConfig, PolicyConfig
from takeover.policy.features import COMMANDS
from takeover.policy.model import build_model
from takeover.training import LoopConfig

DT_S = 0.05  # 20 Hz ticks
K = 8  # waypoints
WAYPOINT_DT_S = 0.5
TIMES_S = WAYPOINT_DT_S * np.arange(1, K + 1)
SIZE_PX = 16
CHANNELS = ["drivable", "vehicles"]
BRAKE_MPS2 = 4.0
OBSTACLE_AHEAD_M = 12.0
LANEFOLLOW = COMMANDS.index(next(c for c in COMMANDS if c.name == "LANEFOLLOW"))

TINY_POLICY = PolicyConfig(
    bev=BevConfig(size_px=SIZE_PX, ego_forward_offset_m=2.0, channels=list(CHANNELS)),
    model=ModelConfig(
        num_waypoints=K,
        encoder_channels=[8, 16],
        feature_dim=32,
        measurement_dim=16,
        fused_dim=32,
        gru_hidden=16,
    ),
    device="cpu",
)

# Rollout episode layout (ticks): the policy drives, the obstacle appears at OBSTACLE_FROM, the monitor
# triggers at TRIGGER, the expert hands back at HANDBACK.
ROLLOUT_FRAMES = 64
PRE_START, OBSTACLE_FROM, TRIGGER, HANDBACK, TAKEOVER_END = 20, 30, 40, 52, 56


def tiny_loop(runs_dir: Path, **overrides: object) -> LoopConfig:
    """A loop for seconds-long CPU tests: no TensorBoard, every step logged, constant LR."""
    settings: dict[str, object] = {
        "epochs": 2, "lr": 3e-3, "batch_size": 16, "device": "cpu", "tensorboard": False,
        "runs_dir": str(runs_dir), "log_every_steps": 1, "lr_schedule": "constant",
    }  # fmt: skip
    return LoopConfig(**{**settings, **overrides})  # type: ignore[arg-type]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny networks on a shared 2-core machine run several times faster on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def open_store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'takeover.db'}", str(tmp_path / "clips"))


def expert_plan(v: float, y_target: float, obstacle: bool) -> tuple[np.ndarray, np.ndarray]:
    """(waypoints (K, 2) ego frame, control (3,)) of the synthetic expert."""
    if obstacle:
        stop_s = v / BRAKE_MPS2
        x = np.where(stop_s >= TIMES_S, v * TIMES_S - 0.5 * BRAKE_MPS2 * TIMES_S**2, v**2 / (2 * BRAKE_MPS2))
        return np.stack([x, np.zeros(K)], -1), np.array([0.0, 0.0, 1.0])
    wp = np.stack([v * TIMES_S, y_target * (TIMES_S / TIMES_S[-1]) ** 2], -1)
    return wp, np.array([0.5, float(np.clip(y_target / 20.0, -1, 1)), 0.0])


BEV_SHAPE = (len(CHANNELS), SIZE_PX, SIZE_PX)


def bev(rng: np.random.Generator, obstacle: bool, shape: tuple[int, int, int] = BEV_SHAPE) -> np.ndarray:
    """Channel 0 a textured road along the image's vertical axis, channel 1 the obstacle's box ahead."""
    c, h, w = shape
    raster = np.zeros(shape, np.uint8)
    raster[0, :, 5 * w // 16 : 11 * w // 16] = 255  # the road
    raster[0] |= rng.integers(0, 32, (h, w), dtype=np.uint8)  # texture
    if obstacle and c > 1:
        raster[1, 2 * h // 16 : 5 * h // 16, 6 * w // 16 : 10 * w // 16] = 255
    return raster


def clip_arrays(
    rng: np.random.Generator,
    start: int,
    n: int,
    obstacle: np.ndarray,
    driver: np.ndarray,
    v: float,
    y_target: float,
    with_policy: bool,
    bev_shape: tuple[int, int, int] = BEV_SHAPE,
) -> dict[str, np.ndarray]:
    """Arrays of a clip of `n` ticks from episode tick `start` (clip_format keys + training keys)."""
    frames = start + np.arange(n)
    time_s = frames * DT_S
    ego_x = v * time_s
    arrays: dict[str, np.ndarray] = {
        "time_s": time_s,
        "ego_speed": np.full(n, v, np.float32),
        "driver": driver.astype(np.int8),
        "ego_pose": np.stack([ego_x, np.zeros(n), np.zeros(n), np.zeros(n)], -1),
        "ego_extent": np.tile([2.4, 1.0, 0.8], (n, 1)),
        # One parked vehicle 12 m ahead of where the ego is at the trigger, in the ego's lane.
        "actor_pose": np.tile([v * TRIGGER * DT_S + OBSTACLE_AHEAD_M, 0.0, 0.0, 0.0], (n, 1, 1)),
        "actor_extent": np.tile([2.4, 1.0, 0.8], (n, 1, 1)),
        "actor_kind": np.zeros((n, 1), np.int8),
        "actor_valid": obstacle.astype(np.int8)[:, None],
        "route_xy": np.stack([np.arange(-20.0, 200.0, 2.0), np.zeros(110)], -1),
        "feat_bev": np.stack([bev(rng, bool(o), bev_shape) for o in obstacle]),
        "feat_speed": np.full(n, v, np.float32),
        "feat_target": np.tile([20.0, y_target], (n, 1)).astype(np.float32),
        "feat_command": np.full(n, LANEFOLLOW, np.int8),
    }
    plans = [expert_plan(v, y_target, bool(o)) for o in obstacle]
    arrays["expert_waypoints_ego"] = np.stack([p[0] for p in plans]).astype(np.float32)
    arrays["expert_control"] = np.stack([p[1] for p in plans]).astype(np.float32)
    arrays["expert_speeds"] = (
        np.diff(arrays["expert_waypoints_ego"][..., 0], axis=1, prepend=0) / WAYPOINT_DT_S
    )
    if with_policy:
        go_wp, go_control = expert_plan(v, y_target, False)  # the policy never sees the obstacle
        arrays["policy_waypoints_ego"] = np.tile(go_wp, (n, 1, 1)).astype(np.float32)
        arrays["policy_control"] = np.tile(go_control, (n, 1)).astype(np.float32)
    world_plan = arrays["expert_waypoints_ego"] + np.stack([ego_x, np.zeros(n)], -1)[:, None, :]
    arrays["expert_plan"] = world_plan.astype(np.float64)
    return arrays


def route(route_id: str) -> RouteRecord:
    return RouteRecord(route_id, "Synthetic01", "synthetic", ("ParkedObstacle",), 200.0)


def write_demo_episode(
    store: Store, run: str, seed: int, n: int = 32, bev_shape: tuple[int, int, int] = BEV_SHAPE
) -> int:
    rng = np.random.default_rng(seed)
    v, y_target = float(rng.uniform(3, 8)), float(rng.uniform(-4, 4))
    arrays = clip_arrays(
        rng, 0, n, np.zeros(n, bool), np.full(n, DRIVER_EXPERT), v, y_target, False, bev_shape
    )
    episode = EpisodeRecord(
        run, route(f"demo-{seed}"), "embedded", seed, v * n * DT_S, n * DT_S, n, phase="expert"
    )
    return store.ingest_episode(episode, [], [ClipRecord("demo", 0, arrays)])


def write_rollout_episode(
    store: Store, run: str, iteration: int, seed: int, bev_shape: tuple[int, int, int] = BEV_SHAPE
) -> int:
    """One takeover: obstacle from tick 30, trigger at 40, hand-back at 52; clips pre_takeover (20..39)
    and takeover (40..55)."""
    rng = np.random.default_rng(1000 + seed)
    v, y_target = float(rng.uniform(4, 8)), float(rng.uniform(-2, 2))
    ticks = np.arange(ROLLOUT_FRAMES)
    obstacle = (ticks >= OBSTACLE_FROM) & (ticks < HANDBACK)
    driver = np.where((ticks >= TRIGGER) & (ticks < HANDBACK), DRIVER_EXPERT, DRIVER_POLICY)
    pre = clip_arrays(
        rng,
        PRE_START,
        TRIGGER - PRE_START,
        obstacle[PRE_START:TRIGGER],
        driver[PRE_START:TRIGGER],
        v,
        y_target,
        True,
        bev_shape,
    )
    take = clip_arrays(
        rng,
        TRIGGER,
        TAKEOVER_END - TRIGGER,
        obstacle[TRIGGER:TAKEOVER_END],
        driver[TRIGGER:TAKEOVER_END],
        v,
        y_target,
        True,
        bev_shape,
    )
    go = expert_plan(v, y_target, False)[0]
    stop = expert_plan(v, y_target, True)[0]
    takeover = TakeoverRecord(
        TRIGGER, TRIGGER * DT_S, v * TRIGGER * DT_S, 0.0, v, "predicted_collision", {"ttc_s": 1.5},
        policy_plan=go, expert_plan=stop, handback_frame=HANDBACK, handback_time_s=HANDBACK * DT_S,
    )  # fmt: skip
    episode = EpisodeRecord(
        run, route(f"roll-{seed}"), "embedded", seed, v * ROLLOUT_FRAMES * DT_S, ROLLOUT_FRAMES * DT_S,
        ROLLOUT_FRAMES, iteration=iteration, phase="rollout",
    )  # fmt: skip
    clips = [ClipRecord("pre_takeover", PRE_START, pre, 0), ClipRecord("takeover", TRIGGER, take, 0)]
    return store.ingest_episode(episode, [takeover], clips)


def write_synthetic_run(
    store: Store,
    run: str,
    demos: int = 3,
    rollouts: int = 2,
    iterations: int = 1,
    demo_frames: int = 32,
    bev_shape: tuple[int, int, int] = BEV_SHAPE,
) -> None:
    for seed in range(demos):
        write_demo_episode(store, run, seed, demo_frames, bev_shape)
    for iteration in range(iterations):
        for seed in range(rollouts):
            write_rollout_episode(store, run, iteration, 1000 * iteration + seed, bev_shape)


def random_checkpoint(path: Path, seed: int = 0, config: PolicyConfig = TINY_POLICY) -> Path:
    torch.manual_seed(seed)
    save_checkpoint(path, build_model(config), replace(config))
    return path


# ------------------------------------------------------------------------------------------ tests


def test_synthetic_clips_are_valid_runner_clips(tmp_path: Path):
    # Given a synthetic run in a fresh store
    store = open_store(tmp_path)
    write_synthetic_run(store, "syn", demos=1, rollouts=1)
    # When its clips are read back
    stats = store.stats()
    # Then it holds 2 episodes, 1 takeover and 3 clips whose arrays pass the clip-format checks
    assert stats.rows["episodes"] == 2 and stats.rows["takeovers"] == 1 and stats.rows["clips"] == 3
    for clip_id in (1, 2, 3):
        arrays = store.load_clip(clip_id)
        t = validate_clip_arrays(arrays)
        assert (
            arrays["feat_bev"].shape == (t, len(CHANNELS), SIZE_PX, SIZE_PX)
            and arrays["feat_bev"].dtype == np.uint8
        )
        assert arrays["expert_waypoints_ego"].shape == (t, K, 2)


def test_expert_stops_for_the_obstacle_and_the_policy_does_not():
    stop, brake = expert_plan(6.0, 0.0, obstacle=True)
    go, throttle = expert_plan(6.0, 0.0, obstacle=False)
    assert stop[-1, 0] == np.float64(6.0**2 / (2 * BRAKE_MPS2)) and brake[2] == 1.0
    assert go[-1, 0] == 6.0 * TIMES_S[-1] and throttle[0] > 0
