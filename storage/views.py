"""Documented SQL views over disengagements; the same SQL runs on SQLite and PostgreSQL.

`disengagements`       one row per takeover with where, why, how fast, and which route, town,
                       scenario type, iteration and checkpoint it happened under.
`disengagement_rates`  takeovers per km by run, iteration, phase, scenario type and reason.
`scenario_rates`       per run, iteration, phase and scenario type: episodes, km, takeovers (zeros
                       included), takeovers per km and mean driving score.

Views are part of the schema, so migrations create them. A migration must not change when this file
does: each version of the views is kept as its own frozen constant (`VIEWS_V1`, ...), the migration
that introduced it imports that constant, and a later change adds `VIEWS_V2` plus a migration that
drops V1's views and creates V2's (its downgrade does the reverse). `CURRENT_VIEWS` is the head's set.
Distances per scenario type come from the route's scenario type (a route's first scenario), so
numerator and denominator of a rate always count the same episodes.
"""

from __future__ import annotations

from dataclasses import dataclass

KMH_PER_MPS = 3.6
M_PER_KM = 1000.0


@dataclass(frozen=True)
class ViewDoc:
    name: str
    description: str
    columns: dict[str, str]  # column -> meaning (with units)
    sql: str  # the SELECT the view is defined as

    def create_sql(self) -> str:
        return f"CREATE VIEW {self.name} AS\n{self.sql}"

    def drop_sql(self) -> str:
        return f"DROP VIEW IF EXISTS {self.name}"


DISENGAGEMENTS_V1 = ViewDoc(
    name="disengagements",
    description="One row per takeover: where, why, how fast, and under which route/iteration/checkpoint.",
    columns={
        "takeover_id": "takeovers.id",
        "episode_id": "episodes.id",
        "run": "experiment name",
        "iteration": "iteration number within the run (NULL outside iterations)",
        "checkpoint_id": "checkpoints.id of the policy that was driving (NULL for expert-only episodes)",
        "checkpoint_path": "where that checkpoint's weights were saved",
        "backend": "simulator backend, e.g. embedded or carla",
        "phase": "why the episode ran, e.g. rollout or eval",
        "seed": "episode seed",
        "route_set": "route file / set, e.g. routes_dev",
        "route_id": "route id inside the set",
        "town": "CARLA town",
        "scenario_type": "scenario active at the trigger, else the route's scenario type",
        "takeover_seq": "0 for the episode's first takeover, 1 for the second, ...",
        "frame": "tick index of the trigger in the episode (20 Hz)",
        "time_s": "episode time of the trigger, s",
        "reason": "reason code of the takeover monitor",
        "speed_mps": "ego speed at the trigger, m/s",
        "speed_kmh": "ego speed at the trigger, km/h",
        "x_m": "ego x at the trigger, CARLA world m",
        "y_m": "ego y at the trigger, CARLA world m",
        "ttc_s": "time to collision at the trigger, s (NULL when not computed)",
        "expert_drive_s": "time the expert drove before handing back, s (NULL if never handed back)",
        "driving_score": "the episode's driving score, 0-100",
    },
    sql=f"""SELECT
    t.id AS takeover_id,
    e.id AS episode_id,
    e.run AS run,
    i.number AS iteration,
    e.checkpoint_id AS checkpoint_id,
    c.path AS checkpoint_path,
    e.backend AS backend,
    e.phase AS phase,
    e.seed AS seed,
    r.route_set AS route_set,
    r.route_id AS route_id,
    r.town AS town,
    COALESCE(t.scenario_type, r.scenario_type) AS scenario_type,
    t.seq AS takeover_seq,
    t.frame AS frame,
    t.time_s AS time_s,
    t.reason AS reason,
    t.speed_mps AS speed_mps,
    t.speed_mps * {KMH_PER_MPS} AS speed_kmh,
    t.x_m AS x_m,
    t.y_m AS y_m,
    t.ttc_s AS ttc_s,
    t.handback_time_s - t.time_s AS expert_drive_s,
    e.driving_score AS driving_score
FROM takeovers t
JOIN episodes e ON e.id = t.episode_id
JOIN routes r ON r.id = e.route_pk
LEFT JOIN iterations i ON i.id = e.iteration_id
LEFT JOIN checkpoints c ON c.id = e.checkpoint_id""",
)

# COALESCE(iteration_id, -1) joins the "no iteration" group to itself on both SQLite and PostgreSQL.
_DRIVEN_CTE = """driven AS (
    SELECT e.run AS run, COALESCE(e.iteration_id, -1) AS iteration_key, e.phase AS phase,
           r.scenario_type AS scenario_type, COUNT(*) AS episodes, SUM(e.distance_m) AS distance_m,
           AVG(e.driving_score) AS mean_driving_score
    FROM episodes e JOIN routes r ON r.id = e.route_pk
    GROUP BY e.run, COALESCE(e.iteration_id, -1), e.phase, r.scenario_type
)"""

DISENGAGEMENT_RATES_V1 = ViewDoc(
    name="disengagement_rates",
    description="Takeovers per km by run, iteration, phase, scenario type and reason (groups with takeovers).",
    columns={
        "run": "experiment name",
        "iteration": "iteration number (NULL outside iterations)",
        "phase": "rollout, eval, ...",
        "scenario_type": "the route's scenario type",
        "reason": "takeover reason code",
        "takeovers": "number of takeovers with that reason",
        "episodes": "episodes driven in the group (all reasons)",
        "distance_km": "km driven in the group's episodes",
        "takeovers_per_km": "takeovers / distance_km (NULL when nothing was driven)",
    },
    sql=f"""WITH {_DRIVEN_CTE},
taken AS (
    SELECT e.run AS run, COALESCE(e.iteration_id, -1) AS iteration_key, e.phase AS phase,
           r.scenario_type AS scenario_type, t.reason AS reason, COUNT(*) AS takeovers
    FROM takeovers t
    JOIN episodes e ON e.id = t.episode_id
    JOIN routes r ON r.id = e.route_pk
    GROUP BY e.run, COALESCE(e.iteration_id, -1), e.phase, r.scenario_type, t.reason
)
SELECT
    d.run AS run,
    i.number AS iteration,
    d.phase AS phase,
    d.scenario_type AS scenario_type,
    k.reason AS reason,
    k.takeovers AS takeovers,
    d.episodes AS episodes,
    d.distance_m / {M_PER_KM} AS distance_km,
    k.takeovers * {M_PER_KM} / NULLIF(d.distance_m, 0) AS takeovers_per_km
FROM taken k
JOIN driven d ON d.run = k.run AND d.iteration_key = k.iteration_key AND d.phase = k.phase
    AND d.scenario_type = k.scenario_type
LEFT JOIN iterations i ON i.id = d.iteration_key""",
)

SCENARIO_RATES_V1 = ViewDoc(
    name="scenario_rates",
    description="Per run, iteration, phase and scenario type: km driven, takeovers (zeros included) per km.",
    columns={
        "run": "experiment name",
        "iteration": "iteration number (NULL outside iterations)",
        "phase": "rollout, eval, ...",
        "scenario_type": "the route's scenario type",
        "episodes": "episodes driven",
        "distance_km": "km driven",
        "takeovers": "takeovers of any reason (0 when none)",
        "takeovers_per_km": "takeovers / distance_km (NULL when nothing was driven)",
        "mean_driving_score": "mean driving score of the episodes, 0-100",
    },
    sql=f"""WITH {_DRIVEN_CTE},
taken AS (
    SELECT e.run AS run, COALESCE(e.iteration_id, -1) AS iteration_key, e.phase AS phase,
           r.scenario_type AS scenario_type, COUNT(*) AS takeovers
    FROM takeovers t
    JOIN episodes e ON e.id = t.episode_id
    JOIN routes r ON r.id = e.route_pk
    GROUP BY e.run, COALESCE(e.iteration_id, -1), e.phase, r.scenario_type
)
SELECT
    d.run AS run,
    i.number AS iteration,
    d.phase AS phase,
    d.scenario_type AS scenario_type,
    d.episodes AS episodes,
    d.distance_m / {M_PER_KM} AS distance_km,
    COALESCE(k.takeovers, 0) AS takeovers,
    COALESCE(k.takeovers, 0) * {M_PER_KM} / NULLIF(d.distance_m, 0) AS takeovers_per_km,
    d.mean_driving_score AS mean_driving_score
FROM driven d
LEFT JOIN taken k ON d.run = k.run AND d.iteration_key = k.iteration_key AND d.phase = k.phase
    AND d.scenario_type = k.scenario_type
LEFT JOIN iterations i ON i.id = d.iteration_key""",
)

VIEWS_V1: tuple[ViewDoc, ...] = (DISENGAGEMENTS_V1, DISENGAGEMENT_RATES_V1, SCENARIO_RATES_V1)
CURRENT_VIEWS: tuple[ViewDoc, ...] = VIEWS_V1
