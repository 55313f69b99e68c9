"""Run `takeover.episode.run_episode` when someone else owns the loop (the leaderboard's evaluator).

run_episode drives a Simulator: it calls reset, then step(control) per tick. Inside Bench2Drive's
evaluator the loop is inverted: the evaluator calls the agent's run_step(input_data) per tick and
wants a control back. `EpisodeBridge` turns one into the other without duplicating the episode's
per-tick logic (expert plan, policy act, monitor update, clips): run_episode runs on a worker thread
against `BridgeSimulator`, whose reset()/step() wait for the snapshots that `exchange(snapshot)`
hands over from the evaluator's thread and return the controls run_episode chose. `finish()` ends
the route (the evaluator decided it is over): the worker's pending step() gets the last snapshot
back, the route's criteria report done, and run_episode returns its EpisodeResult as usual.

Exactly one thread runs at a time (the handover is synchronous), so the policy, expert and monitor
never run concurrently with the evaluator's tick.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable
from typing import Any

import carla

from carla_bridge.errors import SimulatorError
from carla_bridge.route import Route
from carla_bridge.scoring.criteria import RouteCriteria
from carla_bridge.simulator import FIXED_DELTA_S
from carla_bridge.snapshot import Control, InfractionEvent, WorldSnapshot


class EpisodeEndedError(SimulatorError):
    """The route ended before the episode's first tick: nothing to record."""


class ExternallyEndedCriteria(RouteCriteria):
    """RouteCriteria whose route ends when its owner says so (the evaluator), not by its own rules.

    Every criterion still runs and scores; only `done` waits for `end()`.
    """

    def __init__(self, route: Route, cmap: carla.Map, **kwargs: Any) -> None:
        super().__init__(route, cmap, **kwargs)
        self.ended = False

    @property
    def done(self) -> bool:
        return self.ended

    @property
    def own_rules_done(self) -> bool:
        """The leaderboard rules (as this package applies them) have ended the route."""
        return super().done

    def end(self) -> None:
        self.ended = True


_END = object()  # finish() marker on the snapshot queue
_DONE = object()  # the worker's marker on the control queue: run_episode returned or raised


class BridgeSimulator:
    """The Simulator run_episode sees; fed by EpisodeBridge.exchange from another thread."""

    dt: float = FIXED_DELTA_S

    def __init__(self, cmap: carla.Map, criteria: ExternallyEndedCriteria, timeout_s: float) -> None:
        self._cmap = cmap
        self.criteria = criteria
        self._timeout_s = timeout_s
        self._snapshots: queue.Queue = queue.Queue(maxsize=1)
        self._controls: queue.Queue = queue.Queue(maxsize=1)
        self._events: list[InfractionEvent] = []
        self._last: WorldSnapshot | None = None

    @property
    def map(self) -> carla.Map:
        return self._cmap

    def reset(self, route: Route, seed: int) -> WorldSnapshot:
        return self._next()

    def step(self, control: Control) -> WorldSnapshot:
        self._controls.put(control)
        return self._next()

    def infractions(self) -> list[InfractionEvent]:
        return list(self._events)

    def close(self) -> None:
        return None

    def _next(self) -> WorldSnapshot:
        item = self._snapshots.get()
        if item is _END:
            self.criteria.end()
            if self._last is None:
                raise EpisodeEndedError("the route ended before its first tick")
            return self._last
        snap: WorldSnapshot = item
        events = self.criteria.update(snap)
        if events:
            self._events.extend(events)
            snap = dataclasses.replace(snap, events=(*snap.events, *events))
        self._last = snap
        return snap


class EpisodeBridge:
    """run_episode on a worker thread, stepped by `exchange` (see the module docstring)."""

    def __init__(
        self,
        cmap: carla.Map,
        route: Route,
        run: Callable[[BridgeSimulator], Any],
        timeout_s: float,
        scoring_config: Any = None,
    ) -> None:
        kwargs = {} if scoring_config is None else {"config": scoring_config}
        self.sim = BridgeSimulator(cmap, ExternallyEndedCriteria(route, cmap, **kwargs), timeout_s)
        self._run = run
        self._timeout_s = timeout_s
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="episode", daemon=True)
        self._started = False
        self._finished = False

    def _work(self) -> None:
        try:
            self._result = self._run(self.sim)
        except BaseException as exc:  # handed to the evaluator's thread
            self._error = exc
        finally:
            self.sim._controls.put(_DONE)

    def exchange(self, snapshot: WorldSnapshot) -> Control:
        """Hand one tick's snapshot to the episode; the control it decided (raises what the episode raised)."""
        if self._finished:
            raise SimulatorError("the episode has finished; start a new EpisodeBridge for the next route")
        if not self._started:
            self._thread.start()
            self._started = True
        if self._error is None and self._thread.is_alive():
            self.sim._snapshots.put(snapshot)
        try:
            item = self.sim._controls.get(timeout=self._timeout_s)
        except queue.Empty:
            raise SimulatorError(
                f"the episode did not decide a control within {self._timeout_s:g} s (agent.tick_timeout_s); "
                "the policy or expert hangs"
            ) from None
        if item is _DONE:
            self._finished = True
            if self._error is not None:
                raise self._error
            raise SimulatorError("the episode stopped by itself before the evaluator ended the route")
        return item

    def finish(self) -> Any:
        """End the route and return run_episode's result (re-raising its error)."""
        if self._finished:
            if self._error is not None:
                raise self._error
            return self._result
        self._finished = True
        if not self._started:
            raise EpisodeEndedError("the route ended before its first tick")
        self.sim._snapshots.put(_END)
        self._thread.join(self._timeout_s)
        if self._thread.is_alive():
            raise SimulatorError(
                f"the episode did not finish within {self._timeout_s:g} s after the route ended"
            )
        if self._error is not None:
            raise self._error
        return self._result
