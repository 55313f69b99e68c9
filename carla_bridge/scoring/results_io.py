"""Results JSON in the leaderboard / Bench2Drive layout: build, write, read.

The file has the leaderboard checkpoint layout (``_checkpoint`` with ``global_record``, ``progress``
and ``records``; ``entry_status``, ``eligible``, ``sensors``, ``values``, ``labels``) plus the keys of
Bench2Drive's ``merge_route_json.py`` (``driving score``, ``success rate``, ``eval num``) and of its
ability / efficiency / comfortness tools (``ability``, ``efficiency``, ``comfortness``). Records keep
their order (the merge tool sorts by route_id; order carries no meaning).

Reading recomputes the global statistics from the records (they are a pure function of them), so files
written by the leaderboard, by Bench2Drive's merge tool and by this package read alike.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carla_bridge.scoring.errors import ResultsFileError
from carla_bridge.scoring.leaderboard import ELIGIBLE_VALUES, GLOBAL_VALUE_LABELS
from carla_bridge.scoring.record import RouteRecord
from carla_bridge.scoring.summary import GlobalRecord, summarise


@dataclass
class Results:
    """A results file read back."""

    records: list[RouteRecord]
    global_record: GlobalRecord
    progress: tuple[int, int]  # (routes with records, routes of the run)
    entry_status: str
    eligible: bool
    sensors: list[str]


def _values(global_record: GlobalRecord) -> list[str]:
    scores = global_record.scores_mean
    values = []
    for _, source in GLOBAL_VALUE_LABELS:
        value = (
            getattr(scores, source.split(":", 1)[1])
            if source.startswith("score:")
            else global_record.infractions[source]
        )
        values.append(f"{value:.3f}")
    return values


def results_json(
    records: Sequence[RouteRecord],
    *,
    total_routes: int | None = None,
    route_types: Mapping[str, Sequence[str]] | None = None,
    sensors: Sequence[str] = (),
    entry_status: str | None = None,
) -> dict[str, Any]:
    """The results dict of a run: `records` out of `total_routes` (default: all of them).

    entry_status defaults to "Finished" when every route has a record, else "Started".
    """
    global_record = summarise(records, total_routes, route_types)
    total = global_record.total_routes
    status = entry_status or ("Finished" if len(records) >= total else "Started")
    if status not in ELIGIBLE_VALUES:
        raise ResultsFileError(f"entry_status {status!r} is not one of {sorted(ELIGIBLE_VALUES)}")
    abilities: dict[str, float | None] = dict(global_record.abilities)
    abilities["mean"] = global_record.ability_mean
    return {
        "_checkpoint": {
            "global_record": global_record.to_dict(),
            "progress": [len(records), total],
            "records": [r.to_dict() for r in records],
        },
        "entry_status": status,
        "eligible": ELIGIBLE_VALUES[status],
        "sensors": list(sensors),
        "values": _values(global_record),
        "labels": [label for label, _ in GLOBAL_VALUE_LABELS],
        "driving score": global_record.driving_score,
        "success rate": global_record.success_rate,
        "eval num": global_record.eval_num,
        "ability": abilities,
        "efficiency": global_record.efficiency,
        "comfortness": global_record.comfort,
    }


def write_results(
    path: str | os.PathLike[str],
    records: Sequence[RouteRecord],
    *,
    total_routes: int | None = None,
    route_types: Mapping[str, Sequence[str]] | None = None,
    sensors: Sequence[str] = (),
    entry_status: str | None = None,
) -> Path:
    """Write `results_json(...)` to `path` atomically (temporary file, then rename); the path back."""
    data = results_json(
        records,
        total_routes=total_routes,
        route_types=route_types,
        sensors=sensors,
        entry_status=entry_status,
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=4)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_results(
    path: str | os.PathLike[str],
    *,
    total_routes: int | None = None,
    route_types: Mapping[str, Sequence[str]] | None = None,
) -> Results:
    """Read a results file (this package's, the leaderboard's, or Bench2Drive's merged.json).

    total_routes defaults to the file's ``progress`` total, else to its number of records.
    """
    source = Path(path)
    try:
        data = json.loads(source.read_text())
    except FileNotFoundError as exc:
        raise ResultsFileError(f"results file {source} does not exist; check the path") from exc
    except json.JSONDecodeError as exc:
        raise ResultsFileError(
            f"results file {source} is not valid JSON ({exc}); re-run or re-merge it"
        ) from exc
    checkpoint = data.get("_checkpoint") if isinstance(data, dict) else None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("records"), list):
        raise ResultsFileError(
            f"results file {source} has no _checkpoint.records list; expected a leaderboard or Bench2Drive results JSON"
        )
    records = [RouteRecord.from_dict(rd, index=i) for i, rd in enumerate(checkpoint["records"])]
    progress = checkpoint.get("progress") or [len(records), len(records)]
    total = total_routes if total_routes is not None else max(int(progress[1]), len(records))
    entry_status = str(data.get("entry_status", "Finished" if len(records) >= total else "Started"))
    return Results(
        records=records,
        global_record=summarise(records, total, route_types),
        progress=(len(records), total),
        entry_status=entry_status,
        eligible=bool(data.get("eligible", ELIGIBLE_VALUES.get(entry_status, False))),
        sensors=[str(s) for s in data.get("sensors", [])],
    )


def merge_results(paths: Iterable[str | os.PathLike[str]]) -> list[RouteRecord]:
    """Records of several results files (e.g. one per route or per GPU), in file order, re-indexed 0..n-1.

    As Bench2Drive's merge_route_json.py; a route that appears in two files is an error (a resumed run
    that was not cleaned up), since counting it twice would skew every mean.
    """
    merged: list[RouteRecord] = []
    seen: dict[str, Path] = {}
    for path in paths:
        for rec in read_results(path).records:
            if rec.route_id in seen:
                raise ResultsFileError(
                    f"{rec.route_id} is in both {seen[rec.route_id]} and {path}; remove the stale file and merge again"
                )
            seen[rec.route_id] = Path(path)
            rec.index = len(merged)
            merged.append(rec)
    return merged
