"""Per-step cost of the built-in policy: BEV rasters, features, network, act(), training steps.

    python benchmarks/policy_step.py [--town Town10HD] [--maps-dir ../shared/carla_maps] [--threads 1]

(with the project installed, `pip install -e .`, or `PYTHONPATH=.` from the repository root).

Builds a 150 m route on a real CARLA town, 40 vehicles and 10 walkers around the ego, a red light,
and prints the median time of each stage (ms) on the device the config resolves to.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import carla
import numpy as np
import torch

from carla_bridge.bev import ALL_CHANNELS, BevConfig, BevRasterizer, get_map_tile
from carla_bridge.config import load_config
from carla_bridge.route import DenseRoute, RoadOption, Route
from carla_bridge.snapshot import (
    ActorKind,
    ActorTable,
    Control,
    EgoState,
    Pose,
    RouteProgress,
    StopLine,
    TrafficLight,
    TrafficLightState,
    WorldSnapshot,
)
from takeover.losses import ImitationWeights, dpo_loss, imitation_loss
from takeover.policy import HybridPolicy, PolicyActions, collate_features, load_policy_config

REPO = Path(__file__).resolve().parents[1]
ROUTE_LENGTH_M = 150
NUM_VEHICLES, NUM_WALKERS = 40, 10
TRAIN_BATCH = 32


def build_scene(cmap: carla.Map, town: str, seed: int) -> tuple[Route, WorldSnapshot]:
    rng = np.random.default_rng(seed)
    wps = [cmap.generate_waypoints(50.0)[7]]
    for _ in range(ROUTE_LENGTH_M):
        wps.append(wps[-1].next(1.0)[0])
    xyz = np.array([[w.transform.location.x, w.transform.location.y, 0.0] for w in wps])
    yaw = np.radians([w.transform.rotation.yaw for w in wps])
    n = len(wps)
    dense = DenseRoute(
        xyz, yaw, np.full(n, int(RoadOption.LANEFOLLOW), np.int8),
        np.r_[0.0, np.cumsum(np.hypot(*np.diff(xyz[:, :2], axis=0).T))],
        np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, bool), np.full(n, 13.9, np.float32),
    )  # fmt: skip
    i = 20
    pose = Pose(xyz[i, 0], xyz[i, 1], 0.0, yaw[i])
    m = NUM_VEHICLES + NUM_WALKERS
    kinds = np.r_[np.full(NUM_VEHICLES, int(ActorKind.VEHICLE)), np.full(NUM_WALKERS, int(ActorKind.WALKER))]
    actors = ActorTable(
        id=np.arange(m, dtype=np.int64), kind=kinds.astype(np.int8), role=np.zeros(m, np.int8),
        xyz=np.c_[xyz[i, :2] + rng.uniform(-60, 60, (m, 2)), np.zeros(m)], yaw=rng.uniform(-np.pi, np.pi, m),
        velocity=np.zeros((m, 2)), speed=np.zeros(m), extent=np.tile([2.4, 1.0, 0.8], (m, 1)),
        control=np.full((m, 3), np.nan, np.float32),
    )  # fmt: skip
    light = TrafficLight(
        1, TrafficLightState.RED, pose, (StopLine(xyz[60, 0], xyz[60, 1], yaw[60], 0, 0, 3.5),)
    )
    ego = EgoState(pose, np.zeros(2), 5.0, np.zeros(2), 0.0, np.array([2.4, 1.0, 0.8]), Control())
    snap = WorldSnapshot(
        0, 0.0, town, ego, actors, (light,), (), RouteProgress(i, float(i), float(n), 0.0, 4)
    )
    return Route("bench", town, xyz[[0, -1]], dense=dense), snap


def median_ms(fn: Callable[[], object], iters: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--town", default="Town10HD")
    parser.add_argument("--maps-dir", type=Path, default=REPO.parent / "shared" / "carla_maps")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cmap = carla.Map(args.town, (args.maps_dir / f"{args.town}.xodr").read_text())
    route, snap = build_scene(cmap, args.town, seed=0)
    rows: list[tuple[str, float, str]] = []

    policy_bev = load_policy_config().bev
    video_bev = load_config(BevConfig, "bev")
    hist = route.dense.xyz[:21, :2]  # the ego's last 20 m
    for label, cfg in (("policy", policy_bev), ("video", video_bev)):
        t0 = time.perf_counter()
        get_map_tile(cmap, cfg)
        rows.append((f"map tile build ({label}, {cfg.resolution_m_per_px} m/px, once per map)",
                     (time.perf_counter() - t0) * 1e3, "1 call"))  # fmt: skip
        r = BevRasterizer(cfg, cmap)
        rows.append((f"BEV raster {cfg.size_px} px, {len(cfg.channels)} ch ({label})",
                     median_ms(lambda r=r: r.rasterize(snap, route.dense, hist), args.iters), "median"))  # fmt: skip
    video = BevRasterizer(BevConfig(size_px=512, resolution_m_per_px=0.25, channels=list(ALL_CHANNELS)), cmap)
    raster = video.rasterize(snap, route.dense)
    plans = {
        "policy": np.c_[np.arange(1, 9) * 2.0, np.zeros(8)],
        "expert": np.c_[np.arange(1, 9) * 2.0, np.ones(8)],
    }
    rows.append(
        (
            "render_rgb 512 px + 2 plans",
            median_ms(lambda: video.render_rgb(raster, plans, "x"), args.iters),
            "median",
        )
    )

    policy = HybridPolicy(load_policy_config())
    policy.reset(route, cmap)
    dev = policy.device
    rows.append(("features(snapshot)", median_ms(lambda: policy.features(snap), args.iters), "median"))
    f1 = collate_features([policy.features(snap)]).to(dev)
    with torch.inference_mode():
        rows.append(("network forward, batch 1", median_ms(lambda: policy.forward(f1), args.iters), "median"))
    rows.append(("act(snapshot) end to end", median_ms(lambda: policy.act(snap), args.iters), "median"))

    fb = collate_features([policy.features(snap)] * TRAIN_BATCH).to(dev)
    wp = torch.zeros(TRAIN_BATCH, 8, 2, device=dev)
    ctrl = torch.zeros(TRAIN_BATCH, 3, device=dev)
    opt = torch.optim.Adam(policy.module.parameters(), lr=1e-4)

    def bc_step() -> None:
        loss, _ = imitation_loss(policy.forward(fb), wp, ctrl, ImitationWeights(), target_speed=fb.speed)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def dpo_step() -> None:
        d = policy.forward(fb)
        pc = d.log_prob(PolicyActions(wp, ctrl))
        pr = d.log_prob(PolicyActions(wp + 1.0, ctrl))
        losses, _, _ = dpo_loss(pc, pr, pc.detach(), pr.detach())
        opt.zero_grad()
        losses.mean().backward()
        opt.step()

    iters = max(5, args.iters // 5)
    rows.append((f"imitation train step, batch {TRAIN_BATCH}", median_ms(bc_step, iters), "median"))
    rows.append((f"DPO train step, batch {TRAIN_BATCH} pairs", median_ms(dpo_step, iters), "median"))

    params = sum(p.numel() for p in policy.module.parameters())
    print(
        f"town {args.town}, device {dev}, torch threads {torch.get_num_threads()}, parameters {params / 1e6:.2f} M"
    )
    width = max(len(r[0]) for r in rows)
    print(f"{'stage':<{width}}  {'ms':>9}  note")
    print("-" * (width + 20))
    for name, ms, note in rows:
        print(f"{name:<{width}}  {ms:9.3f}  {note}")


if __name__ == "__main__":
    main()
