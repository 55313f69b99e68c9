"""ControlLoss: the ego loses grip for a moment, three times, past the trigger point.

scenario_runner control_loss.py (leaderboard 2.0): three spots along the ego's lane, at distances
drawn from SPOT_DISTANCE_RANGES_M past the trigger, each with a patch of dirt debris. As the ego
reaches a spot (within SPOT_TRIGGER_M), the control it applies is perturbed for NOISE_DURATION_S:

    throttle' = clip(throttle + u_t, 0, 1),  u_t ~ U(THROTTLE_NOISE_RANGE)
    steer'    = clip(steer + s u_s, -1, 1),  u_s ~ U(STEER_NOISE_RANGE), s = +-1

(one draw per spot from the episode Generator; friction loss pulls mostly sideways). The ego must
hold its lane and speed through it. Done ROUTE_END_M past the last spot.

The debris itself is not spawned: the embedded collision test counts any static prop the ego
touches as a layout collision, and the expert would steer around dirt it should drive over.

The perturbation acts through the world's control hook (`World.control_perturbation`), applied to
the ego's control inside `World.tick` before the bicycle step.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from carla_bridge.embedded.scenarios.base import DONE, RUNNING, Scenario, register
from carla_bridge.embedded.scenarios.placement import trigger_index
from carla_bridge.route import ScenarioSpec
from carla_bridge.snapshot import Control

if TYPE_CHECKING:
    from carla_bridge.embedded.world import World

SPOT_DISTANCE_RANGES_M = ((10.0, 20.0), (35.0, 50.0), (60.0, 75.0))
SPOT_TRIGGER_M = 2.0
NOISE_DURATION_S = 1.0
THROTTLE_NOISE_RANGE = (0.05, 0.1)
STEER_NOISE_RANGE = (0.02, 0.07)
ROUTE_END_M = 30.0


def perturbed(control: Control, throttle_noise: float, steer_noise: float) -> Control:
    """The control with the noise added and clipped to its range (module docstring)."""
    return Control(
        throttle=min(max(control.throttle + throttle_noise, 0.0), 1.0),
        steer=min(max(control.steer + steer_noise, -1.0), 1.0),
        brake=control.brake,
        hand_brake=control.hand_brake,
        reverse=control.reverse,
    )


@register("ControlLoss")
class ControlLoss(Scenario):
    trigger_distance_m = 5.0
    timeout_s = 60.0

    def setup(self, world: World, spec: ScenarioSpec) -> None:
        super().setup(world, spec)
        s_trig = float(world.dense.s[trigger_index(world, spec)])
        rng = world.rng
        self.spot_s = [s_trig + float(rng.uniform(lo, hi)) for lo, hi in SPOT_DISTANCE_RANGES_M]
        self.noise = [
            (
                float(rng.uniform(*THROTTLE_NOISE_RANGE)),
                float(rng.choice((-1.0, 1.0)) * rng.uniform(*STEER_NOISE_RANGE)),
            )
            for _ in self.spot_s
        ]
        self.spots_xy = [world.dense.xyz[world.route_index_at_s(s), :2].copy() for s in self.spot_s]
        self.next_spot = 0
        self.active_until = -math.inf
        self.active_noise = (0.0, 0.0)
        self.perturbed_ticks = 0  # ticks with a perturbed control (tests, reports)
        self._now = 0.0

    @property
    def active(self) -> bool:
        return self._now < self.active_until

    def on_trigger(self, world: World) -> None:
        self._now = world.time_s

    def tick(self, world: World) -> str:
        self._now = world.time_s
        self.perturbed_ticks += int(self.active)
        if self.next_spot < len(self.spot_s):
            reached = world.route_s() >= self.spot_s[self.next_spot] - SPOT_TRIGGER_M
            if reached:
                self.active_noise = self.noise[self.next_spot]
                self.active_until = world.time_s + NOISE_DURATION_S
                self.next_spot += 1
        self._apply_hook(world)
        if (
            self.next_spot >= len(self.spot_s)
            and not self.active
            and world.route_s() > self.spot_s[-1] + ROUTE_END_M
        ):
            return DONE
        return RUNNING

    def cleanup(self, world: World) -> None:
        self.active_until = -math.inf
        self._apply_hook(world)

    # ------------------------------------------------------------------ the perturbation
    def _apply_hook(self, world: World) -> None:
        """Install (or clear) the perturbation of the ego's next controls."""
        if self.active:
            thr, st = self.active_noise
            world.control_perturbation = lambda c: perturbed(c, thr, st)
        else:
            world.control_perturbation = None
