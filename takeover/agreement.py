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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from storage.clip_format import DRIVER_EXPERT, clip_frame_numbers
from takeover.monitor import MonitorConfig, plans_agree, plans_deviate

if TYPE_CHECKING:
    from storage.store import Store

# takeover/clips.py's keys: both plans on the policy's waypoint times, ego frame (what the monitor compares)
POLICY_PLAN = "policy_waypoints_ego"
EXPERT_PLAN = "expert_waypoints_ego"
EXPERT_SPEEDS = "expert_speeds"  # (T, K) target speeds of the expert's plan, m/s
UPPER_PERCENTILE = 75.0


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


def stored_plan_gaps(store: Store, run: str, phases: Sequence[str], iteration: int | None = None) -> PlanGaps:
    """The plan gaps of every stored tick of `run`'s episodes in `phases` (of one iteration when given)."""
    seen: set[tuple[int, int]] = set()
    parts: list[tuple[np.ndarray, ...]] = []
    for clip in store.list_clips(run=run, phases=phases, iteration=iteration):
        if POLICY_PLAN not in clip.arrays or EXPERT_PLAN not in clip.arrays:
            continue  # e.g. demonstrations stored without the policy's plan
        arrays = store.load_clip(clip.id)
        ticks = clip_frame_numbers(arrays, clip.start_frame, len(arrays[POLICY_PLAN]))
        fresh = np.array([(clip.episode_id, int(t)) not in seen for t in ticks], bool)
        seen.update((clip.episode_id, int(t)) for t in ticks)
        ade, fde, lead = plan_gaps(arrays[POLICY_PLAN][fresh], arrays[EXPERT_PLAN][fresh])
        parts.append((ade, fde, lead, arrays["driver"][fresh] == DRIVER_EXPERT))
    if not parts:
        empty = np.zeros(0)
        return PlanGaps(empty, empty, empty, np.zeros(0, bool))
    ade, fde, lead, expert = (np.concatenate(column) for column in zip(*parts, strict=True))
    return PlanGaps(ade, fde, lead, expert)


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
    store: Store,
    run: str,
    phases: Sequence[str],
    iteration: int | None,
    config: MonitorConfig,
    retake_s: float,
) -> HandbackSummary:
    """Hand-backs of `run`'s takeovers in `phases` (of one iteration when given): standing, retaken."""
    takeovers = store.list_takeovers(run=run, phases=phases, iteration=iteration)
    handed = [
        (t.episode_id, int(t.handback_frame), float(t.handback_time_s))
        for t in takeovers
        if t.handback_frame is not None and t.handback_time_s is not None
    ]
    frames_of: dict[int, list[int]] = {}
    for episode_id, frame, _ in handed:
        frames_of.setdefault(episode_id, []).append(frame)
    standing_at: set[tuple[int, int]] = set()
    clips = (
        store.list_clips(run=run, phases=phases, iteration=iteration, episode_ids=list(frames_of))
        if frames_of
        else []
    )
    for clip in clips:
        wanted = [f for f in frames_of[clip.episode_id] if clip.start_frame <= f < clip.end_frame]
        if EXPERT_SPEEDS not in clip.arrays or not wanted:
            continue
        arrays = store.load_clip(clip.id)
        ticks = clip_frame_numbers(arrays, clip.start_frame, len(arrays[EXPERT_SPEEDS]))
        stood = np.max(arrays[EXPERT_SPEEDS], axis=1) < config.stuck_expert_speed_mps
        standing_at.update((clip.episode_id, f) for f in wanted if stood[ticks == f].any())
    starts: dict[int, list[float]] = {}
    for t in takeovers:
        starts.setdefault(t.episode_id, []).append(float(t.time_s))
    standing = retaken = both = 0
    for episode_id, frame, back_s in handed:
        again = any(back_s <= s <= back_s + retake_s for s in starts[episode_id])
        stood_here = (episode_id, frame) in standing_at
        standing += stood_here
        retaken += again
        both += stood_here and again
    return HandbackSummary(len(takeovers), len(handed), standing, retaken, both, retake_s)


__all__ = [
    "AgreementRow",
    "HandbackSummary",
    "PlanGaps",
    "handback_summary",
    "plan_gaps",
    "stored_plan_gaps",
    "summarize",
]
