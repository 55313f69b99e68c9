"""Where the ego is along its dense route, every tick (monotone index + lateral distance).

Same maths as carla_bridge.route_planner.locate_on_route, with the window given in metres: project xy
on each piece p_i -> p_{i+1} of the window, t = clamp((x - p_i).(p_{i+1} - p_i) / |p_{i+1} - p_i|^2, 0, 1);
the answer is the dense point nearest the closest projection (i + [t >= 0.5]) and the distance to it.
A compiled twin runs when numba is installed (this is on every tick's path).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from carla_bridge.embedded import traffic_kernel
from carla_bridge.embedded.traffic_kernel import njit
from carla_bridge.route import DenseRoute


def locate_on_dense(dense: DenseRoute, xy: np.ndarray, start: int, window_m: float) -> tuple[int, float]:
    """(index, lateral distance) of `xy` on the dense route within `window_m` metres after `start`."""
    s = dense.s
    n = s.shape[0]
    stop = min(int(np.searchsorted(s, s[start] + window_m, side="right")) + 1, n)
    if stop - start < 2:
        d = dense.xyz[start, :2] - xy
        return start, math.hypot(d[0], d[1])
    p = dense.xyz[start:stop, :2]
    a = p[:-1]
    ab = p[1:] - a
    ax = xy[0] - a[:, 0]
    ay = xy[1] - a[:, 1]
    l2 = ab[:, 0] * ab[:, 0] + ab[:, 1] * ab[:, 1]
    t = np.minimum(np.maximum((ax * ab[:, 0] + ay * ab[:, 1]) / np.maximum(l2, 1e-12), 0.0), 1.0)
    dx = ax - t * ab[:, 0]
    dy = ay - t * ab[:, 1]
    d2 = dx * dx + dy * dy
    k = int(d2.argmin())
    return start + k + int(t[k] >= 0.5), math.sqrt(float(d2[k]))


@njit(cache=True)
def _locate_compiled(xyz, s, x, y, start, window_m):  # pragma: no cover - compiled
    n = s.shape[0]
    limit = s[start] + window_m
    best = 1e300
    best_i = start
    best_t = 0.0
    i = start
    while i + 1 < n:
        ax, ay = xyz[i, 0], xyz[i, 1]
        bx, by = xyz[i + 1, 0] - ax, xyz[i + 1, 1] - ay
        l2 = max(bx * bx + by * by, 1e-12)
        t = min(max(((x - ax) * bx + (y - ay) * by) / l2, 0.0), 1.0)
        dx = x - ax - t * bx
        dy = y - ay - t * by
        d2 = dx * dx + dy * dy
        if d2 < best:
            best, best_i, best_t = d2, i, t
        if s[i + 1] > limit:
            break
        i += 1
    if start + 1 >= n:
        dx, dy = x - xyz[start, 0], y - xyz[start, 1]
        return start, math.sqrt(dx * dx + dy * dy)
    return best_i + (1 if best_t >= 0.5 else 0), math.sqrt(best)


def locate_compiled(dense: DenseRoute, xy: np.ndarray, start: int, window_m: float) -> tuple[int, float]:
    i, d = _locate_compiled(dense.xyz, dense.s, float(xy[0]), float(xy[1]), int(start), float(window_m))
    return int(i), float(d)


def route_locator() -> Callable[[DenseRoute, np.ndarray, int, float], tuple[int, float]]:
    """The compiled locator when numba is available, else the numpy one (equal results, see tests)."""
    return locate_compiled if traffic_kernel.AVAILABLE else locate_on_dense
