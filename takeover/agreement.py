"""Plan agreement: how far the policy's plan is from the expert's in the stored clips of a run.

Every stored tick holds both plans on the policy's waypoint times, in the ego frame (x forward, metres).
Per tick, with policy waypoints p_k and expert waypoints e_k, k = 1..K:
    ADE  = (1/K) sum_k |p_k - e_k|            FDE = |p_K - e_K|
    lead = p_K.x - e_K.x                      (> 0: the policy plans to be ahead of the expert: faster)
A tick *agrees* when the monitor's `plans_agree` holds (ADE <= handback_ade_m and FDE <= handback_fde_m:
what the hand-back waits for, `agree_s` without interruption) and *deviates* when its `plans_deviate`
holds (ADE > deviation_ade_m or FDE > deviation_fde_m: what `plan_deviation` counts, `deviation_min_s`
long). Ticks are grouped by who drove: where the expert
drives, agreement decides how soon the policy gets the wheel back (the expert's share of the driving);
where the policy drives, deviation is what takes it away. A tick stored in two overlapping clips
counts once.

`handback_summary` reads how the takeovers ended: how many were handed back before the episode ended,
how many of those while the expert's own plan stood (its target speeds below the monitor's
`stuck_expert_speed_mps`: the expert waited out a hazard, and two standing plans agree trivially), and
how many were taken back within `retake_s` of the hand-back. Standing and quickly retaken together is
the monitor handing the wheel to and fro at one hazard (`handback_expert_speed_mps` is the remedy).

`takeover_onsets` reads how early the plans parted before each takeover: walking back from the trigger
over the policy's stored ticks, the *onset* is the first tick after the last one whose plans agreed.
Where the walk reaches the first stored tick without meeting agreement, the onset lies before the
stored window (`episode.pre_window_s` is too short to hold it, and DAgger never sees the states where the
policy first went its own way); where it reaches the policy getting the wheel (the episode start or a
hand-back), the plans never agreed since.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from storage.clip_format import DRIVER_EXPERT, clip_frame_numbers
from takeover.monitor import MonitorConfig, plans_agree, plans_deviate

if TYPE_CHECKING:
    from storage.records import TakeoverInfo
    from storage.store import Store

# takeover/clips.py's keys: both plans on the policy's waypoint times, ego frame (what the monitor compares)
POLICY_PLAN = "policy_waypoints_ego"
EXPERT_PLAN = "expert_waypoints_ego"
EXPERT_SPEEDS = "expert_speeds"  # (T, K) target speeds of the expert's plan, m/s
UPPER_PERCENTILE = 75.0
TICK_KEY_STRIDE = 1 << 32  # (episode, tick) -> one sortable int64: ticks per episode stay below this


@dataclass(frozen=True)
class PlanGaps:
    """Per-tick plan gaps of a set of stored ticks (metres) and who drove each tick."""

    ade_m: np.ndarray  # (N,)
    fde_m: np.ndarray  # (N,)
    lead_m: np.ndarray  # (N,)
    expert_drove: np.ndarray  # (N,) bool


def plan_gaps(policy_plan: np.ndarray, expert_plan: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ADE, FDE and lead (module docstring) of (N, K, 2) policy and expert waypoints in the ego frame."""
    if policy_plan.shape != expert_plan.shape or policy_plan.ndim != 3 or policy_plan.shape[-1] != 2:
        raise ValueError(
            f"plans must both be (N, K, 2) waypoints, got {policy_plan.shape} and {expert_plan.shape}"
        )
    dist = np.linalg.norm(policy_plan - expert_plan, axis=-1)
    return dist.mean(axis=-1), dist[:, -1], policy_plan[:, -1, 0] - expert_plan[:, -1, 0]


@dataclass(frozen=True)
class AgreementRow:
    """Summary of the plan gaps of the ticks one driver drove."""

    driver: str  # "policy", "expert" or "all"
    ticks: int
    ade_median_m: float
    ade_p75_m: float
    fde_median_m: float
    fde_p75_m: float
    lead_median_m: float
    agree_share: float  # ticks within the hand-back thresholds
    deviate_share: float  # ticks beyond the plan_deviation thresholds


def summarize(gaps: PlanGaps, config: MonitorConfig) -> list[AgreementRow]:
    """One row per driver that drove any tick, then "all"."""
    groups = [
        ("policy", ~gaps.expert_drove),
        ("expert", gaps.expert_drove),
        ("all", np.ones_like(gaps.expert_drove)),
    ]
    rows = []
    for name, mask in groups:
        if not mask.any():
            continue
        ade, fde = gaps.ade_m[mask], gaps.fde_m[mask]
        rows.append(
            AgreementRow(
                driver=name,
                ticks=int(mask.sum()),
                ade_median_m=float(np.median(ade)),
                ade_p75_m=float(np.percentile(ade, UPPER_PERCENTILE)),
                fde_median_m=float(np.median(fde)),
                fde_p75_m=float(np.percentile(fde, UPPER_PERCENTILE)),
                lead_median_m=float(np.median(gaps.lead_m[mask])),
                agree_share=float(np.mean(plans_agree(ade, fde, config))),
                deviate_share=float(np.mean(plans_deviate(ade, fde, config))),
            )
        )
    return rows


def tick_key(episode_id: np.ndarray | int, frame: np.ndarray | int) -> np.ndarray:
    """(episode, tick) as one sortable int64."""
    return np.asarray(episode_id, np.int64) * TICK_KEY_STRIDE + np.asarray(frame, np.int64)


@dataclass(frozen=True)
class StoredTicks:
    """One row per stored tick of a set of episodes, read from their clips in one pass (a tick stored in
    two overlapping clips once). Values a clip does not store are NaN."""

    episode_id: np.ndarray  # (N,) int64
    frame: np.ndarray  # (N,) int64 episode tick
    time_s: np.ndarray  # (N,) simulated time of the tick
    expert_drove: np.ndarray  # (N,) bool
    ade_m: np.ndarray  # (N,) plan gaps (module docstring)
    fde_m: np.ndarray  # (N,)
    lead_m: np.ndarray  # (N,)
    expert_max_speed_mps: np.ndarray  # (N,) the highest target speed of the expert's plan

    def plan_gaps(self) -> PlanGaps:
        """The gaps of the ticks whose clip holds both plans."""
        both = ~np.isnan(self.ade_m)
        return PlanGaps(self.ade_m[both], self.fde_m[both], self.lead_m[both], self.expert_drove[both])

    @cached_property
    def by_tick(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted (episode, tick) keys, the row order that sorts them): ticks found by binary search."""
        key = tick_key(self.episode_id, self.frame)
        order = np.argsort(key, kind="stable")
        return key[order], order

    def sorted_position(self, episode_id: int, frame: int) -> int | None:
        """Where this tick is in `by_tick`'s order, None where no clip holds it."""
        keys, _ = self.by_tick
        key = tick_key(episode_id, frame)
        i = int(np.searchsorted(keys, key))
        return i if i < len(keys) and keys[i] == key else None

    def find(self, episode_id: int, frame: int) -> int | None:
        """The row of this tick, None where no clip holds it."""
        i = self.sorted_position(episode_id, frame)
        return None if i is None else int(self.by_tick[1][i])

    def expert_stood(self, episode_id: int, frame: int, config: MonitorConfig) -> bool:
        """The expert's plan stood at this tick (its target speeds below `stuck_expert_speed_mps`);
        False where no clip holds the tick or its speeds."""
        row = self.find(episode_id, frame)
        return row is not None and bool(self.expert_max_speed_mps[row] < config.stuck_expert_speed_mps)


def stored_ticks(store: Store, run: str, phases: Sequence[str], iteration: int | None = None) -> StoredTicks:
    """The ticks of `run`'s episodes in `phases` (of one iteration when given) whose clips hold both plans
    or the expert's target speeds (demonstrations, stored without the policy's plan, hold neither)."""
    seen: set[tuple[int, int]] = set()
    parts: list[tuple[np.ndarray, ...]] = []
    for clip in store.list_clips(run=run, phases=phases, iteration=iteration):
        has_plans = POLICY_PLAN in clip.arrays and EXPERT_PLAN in clip.arrays
        if not has_plans and EXPERT_SPEEDS not in clip.arrays:
            continue
        arrays = store.load_clip(clip.id)
        n = len(arrays["driver"])
        ticks = clip_frame_numbers(arrays, clip.start_frame, n)
        fresh = np.array([(clip.episode_id, int(t)) not in seen for t in ticks], bool)
        seen.update((clip.episode_id, int(t)) for t in ticks)
        count = int(fresh.sum())
        ade = fde = lead = np.full(count, np.nan)
        if has_plans:
            ade, fde, lead = plan_gaps(arrays[POLICY_PLAN][fresh], arrays[EXPERT_PLAN][fresh])
        speeds = arrays.get(EXPERT_SPEEDS)
        top = np.max(speeds[fresh], axis=1, initial=-np.inf) if speeds is not None else np.full(count, np.nan)
        episode = np.full(count, clip.episode_id, np.int64)
        expert_drove = arrays["driver"][fresh] == DRIVER_EXPERT
        parts.append((episode, ticks[fresh], arrays["time_s"][fresh], expert_drove, ade, fde, lead, top))
    if not parts:
        z = np.zeros(0)
        return StoredTicks(np.zeros(0, np.int64), np.zeros(0, np.int64), z, np.zeros(0, bool), z, z, z, z)
    return StoredTicks(*(np.concatenate(column) for column in zip(*parts, strict=True)))


@dataclass(frozen=True)
class HandbackSummary:
    """How a set of takeovers ended (module docstring)."""

    takeovers: int
    handed_back: int  # the policy got the wheel back before the episode ended
    standing: int  # ... while the expert's own plan stood (counted where a stored clip holds the tick)
    retaken: int  # ... and lost it again within retake_s
    standing_retaken: int  # both
    retake_s: float


def handback_summary(
    ticks: StoredTicks, takeovers: Sequence[TakeoverInfo], config: MonitorConfig, retake_s: float
) -> HandbackSummary:
    """How `takeovers` (of the episodes `ticks` were read from) ended: handed back, standing, retaken."""
    starts: dict[int, list[float]] = {}
    for t in takeovers:
        starts.setdefault(t.episode_id, []).append(float(t.time_s))
    handed = standing = retaken = both = 0
    for t in takeovers:
        if t.handback_frame is None or t.handback_time_s is None:
            continue
        back_s = float(t.handback_time_s)
        again = any(back_s <= s <= back_s + retake_s for s in starts[t.episode_id])
        stood = ticks.expert_stood(t.episode_id, int(t.handback_frame), config)
        handed += 1
        standing += stood
        retaken += again
        both += stood and again
    return HandbackSummary(len(takeovers), handed, standing, retaken, both, retake_s)


class OnsetKind(StrEnum):
    """Where the walk back from a trigger stopped (module docstring)."""

    IN_WINDOW = "in_window"  # at a stored tick whose plans agreed
    SINCE_WHEEL = "since_wheel"  # at the episode start or the expert's last tick: never agreed since
    BEFORE_WINDOW = "before_window"  # at the first stored tick: the onset lies earlier


@dataclass(frozen=True)
class Onset:
    """How early the plans parted before one takeover."""

    takeover_id: int
    reason: str
    lead_s: float  # trigger time - onset time (a lower bound for BEFORE_WINDOW)
    window_s: float  # trigger time - first tick of the stored policy ticks leading to it
    kind: OnsetKind


@dataclass(frozen=True)
class OnsetSummary:
    """The onsets of a set of takeovers (those whose policy tick just before the trigger is stored)."""

    takeovers: int
    in_window: int
    since_wheel: int
    before_window: int
    lead_median_s: float  # NaN without takeovers
    lead_p75_s: float
    window_median_s: float


def takeover_onsets(
    ticks: StoredTicks, takeovers: Sequence[TakeoverInfo], config: MonitorConfig
) -> list[Onset]:
    """The onset (module docstring) of each takeover whose policy tick just before the trigger is stored
    with both plans."""
    key, order = ticks.by_tick
    frame, time_s = ticks.frame[order], ticks.time_s[order]
    expert_drove, ade, fde = ticks.expert_drove[order], ticks.ade_m[order], ticks.fde_m[order]
    policy = ~expert_drove & ~np.isnan(ade)
    agree = np.zeros(len(order), bool)
    agree[policy] = plans_agree(ade[policy], fde[policy], config)
    # runs of consecutive stored policy ticks; run_start[i] = the first tick of i's run
    follows = np.zeros(len(order), bool)
    follows[1:] = (key[1:] == key[:-1] + 1) & policy[1:] & policy[:-1]
    run_start = np.maximum.accumulate(np.where(follows, 0, np.arange(len(order))))
    onsets = []
    for t in takeovers:
        i = ticks.sorted_position(t.episode_id, t.frame - 1)
        if i is None or not policy[i]:
            continue
        start = int(run_start[i])
        agreed = np.flatnonzero(agree[start : i + 1])
        if agreed.size:
            kind, onset = OnsetKind.IN_WINDOW, start + int(agreed[-1]) + 1
        else:
            after_expert = start > 0 and key[start - 1] == key[start] - 1 and bool(expert_drove[start - 1])
            kind = OnsetKind.SINCE_WHEEL if frame[start] == 0 or after_expert else OnsetKind.BEFORE_WINDOW
            onset = start
        onset_s = float(time_s[onset]) if onset <= i else float(t.time_s)
        onsets.append(Onset(t.id, t.reason, float(t.time_s) - onset_s, float(t.time_s - time_s[start]), kind))
    return onsets


def onset_summary(onsets: Sequence[Onset]) -> OnsetSummary:
    """Counts per kind and the spread of the lead and window times."""
    leads = np.asarray([o.lead_s for o in onsets])
    windows = np.asarray([o.window_s for o in onsets])
    count = {kind: sum(o.kind is kind for o in onsets) for kind in OnsetKind}
    nan = float("nan")
    return OnsetSummary(
        takeovers=len(onsets),
        in_window=count[OnsetKind.IN_WINDOW],
        since_wheel=count[OnsetKind.SINCE_WHEEL],
        before_window=count[OnsetKind.BEFORE_WINDOW],
        lead_median_s=float(np.median(leads)) if leads.size else nan,
        lead_p75_s=float(np.percentile(leads, UPPER_PERCENTILE)) if leads.size else nan,
        window_median_s=float(np.median(windows)) if windows.size else nan,
    )


__all__ = [
    "AgreementRow",
    "HandbackSummary",
    "Onset",
    "OnsetKind",
    "OnsetSummary",
    "PlanGaps",
    "StoredTicks",
    "handback_summary",
    "onset_summary",
    "plan_gaps",
    "stored_ticks",
    "summarize",
    "takeover_onsets",
]
