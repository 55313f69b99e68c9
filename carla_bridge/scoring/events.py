"""Building `InfractionEvent`s stamped with a snapshot's frame and time."""

from __future__ import annotations

from carla_bridge.scoring.leaderboard import location_text
from carla_bridge.snapshot import InfractionEvent, InfractionKind, WorldSnapshot


def ego_location(snapshot: WorldSnapshot) -> str:
    """Leaderboard location suffix of the ego: ``(x=..., y=..., z=...)``."""
    pose = snapshot.ego.pose
    return location_text(pose.x, pose.y, pose.z)


def make_event(
    kind: InfractionKind,
    snapshot: WorldSnapshot,
    message: str,
    *,
    actor_id: int = -1,
    value: float = 0.0,
    xy: tuple[float, float] | None = None,
) -> InfractionEvent:
    """An event on `snapshot`'s tick, located at `xy` (the ego's position when omitted)."""
    x, y = xy if xy is not None else (snapshot.ego.pose.x, snapshot.ego.pose.y)
    return InfractionEvent(
        kind=kind,
        frame=snapshot.frame,
        time_s=snapshot.time_s,
        x=float(x),
        y=float(y),
        message=message,
        actor_id=int(actor_id),
        value=float(value),
    )
