"""Drives the scenario plugins of a route: set-up at reset, trigger, tick, timeout, ScenarioInfo."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from carla_bridge.embedded.config import ScenarioConfig
from carla_bridge.embedded.scenarios.base import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    TIMED_OUT,
    Scenario,
    scenario_class,
)
from carla_bridge.route import ScenarioSpec
from carla_bridge.snapshot import ScenarioInfo

if TYPE_CHECKING:
    from carla_bridge.embedded.world import World

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # unimplemented types already reported (warn once per process)


class _Slot:
    def __init__(self, spec: ScenarioSpec, plugin: Scenario | None, status: str) -> None:
        self.spec = spec
        self.plugin = plugin
        self.status = status
        self.started_at = math.inf
        self.trigger_index = -1
        self.info: ScenarioInfo | None = None


class ScenarioRunner:
    def __init__(self, world: World, specs: list[ScenarioSpec], cfg: ScenarioConfig) -> None:
        self.world = world
        self.cfg = cfg
        self.slots: list[_Slot] = []
        for spec in specs:
            cls = scenario_class(spec.type) if cfg.enabled else None
            if cls is None:
                if cfg.enabled and spec.type not in _WARNED:
                    _WARNED.add(spec.type)
                    log.warning(
                        "scenario type %s is not implemented in the embedded simulator: skipped", spec.type
                    )
                self.slots.append(_Slot(spec, None, SKIPPED))
                continue
            plugin = cls()
            slot = _Slot(spec, plugin, PENDING)
            tp = spec.trigger_point
            slot.trigger_index = world.route_index_near((tp.x, tp.y))
            try:
                plugin.setup(world, spec)
            except Exception as exc:  # a broken scenario must not take the route down
                log.warning("scenario %s (%s) failed to set up: %s", spec.name, spec.type, exc)
                slot.status = FAILED
            self.slots.append(slot)

    def tick(self) -> None:
        w = self.world
        ego = w.ego_xy
        for slot in self.slots:
            if slot.status == PENDING:
                p = slot.plugin
                tp = slot.spec.trigger_point
                dist = math.hypot(ego[0] - tp.x, ego[1] - tp.y)
                trig = (
                    p.trigger_distance_m if p.trigger_distance_m > 0 else self.cfg.default_trigger_distance_m
                )
                if dist <= trig:
                    slot.status = RUNNING
                    slot.started_at = w.time_s
                    p.on_trigger(w)
                    slot.info = None
                elif w.route_s() - float(w.dense.s[slot.trigger_index]) > self.cfg.pending_skip_behind_m:
                    # the ego passed the trigger far off it (it never came within reach)
                    slot.status = SKIPPED
                    slot.info = None
            elif slot.status == RUNNING:
                p = slot.plugin
                status = p.tick(w)
                timeout = p.timeout_s if p.timeout_s > 0 else self.cfg.default_timeout_s
                if status == RUNNING and w.time_s - slot.started_at > timeout:
                    status = TIMED_OUT
                if status != RUNNING:
                    slot.status = status if status in (DONE, FAILED, TIMED_OUT) else DONE
                    p.cleanup(w)
                    slot.info = None

    def infos(self) -> tuple[ScenarioInfo, ...]:
        out = []
        for slot in self.slots:
            ids = tuple(slot.plugin.actor_ids) if slot.plugin is not None else ()
            info = slot.info
            if info is None or info.actor_ids != ids:
                tp = slot.spec.trigger_point
                info = ScenarioInfo(slot.spec.name, slot.spec.type, slot.status, (tp.x, tp.y), ids)
                slot.info = info
            out.append(info)
        return tuple(out)
