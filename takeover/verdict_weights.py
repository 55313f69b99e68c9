"""Training weights by counterfactual verdict: imitate most where a takeover was necessary.

Of the monitor's takeovers, some prevent an infraction and others interrupt a policy that would have
driven on without one (takeover/counterfactual.py replays each with the takeover refused). With the
collection's takeovers judged that way, a DAgger frame or a DPO pair of trigger k weighs

    w = w_role x verdict_weights[v_k],   v_k in {necessary, false_alarm, unjudged}

so that the states in which the policy would really have failed (the expert's evasive or braking plan
that it lacked) count more than those in which it merely planned otherwise. A diverged replay counts as
necessary (nothing shows otherwise), as in the necessary-rate metrics; a takeover without a stored
verdict under the replay settings is `unjudged`. A verdict not named in the weights keeps factor 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from omegaconf.errors import OmegaConfBaseException

from carla_bridge.errors import TakeoverError
from takeover.training import TrainingError

if TYPE_CHECKING:
    from storage.store import Store

NECESSARY = "necessary"
FALSE_ALARM = "false_alarm"
UNJUDGED = "unjudged"
VERDICTS = (NECESSARY, FALSE_ALARM, UNJUDGED)


def validate_verdict_weights(weights: Mapping[str, float], overrides: Sequence[str], where: str) -> None:
    """One message per bad key or factor; the replay settings must load (they key the stored verdicts)."""
    for verdict, factor in weights.items():
        if verdict not in VERDICTS:
            raise TrainingError(
                f"{where}.verdict_weights has an unknown verdict {verdict!r}; use {', '.join(VERDICTS)}"
            )
        if factor < 0:
            raise TrainingError(f"{where}.verdict_weights.{verdict}={factor} must be >= 0")
    if weights:
        _digest(overrides, where)


def verdict_factors(
    store: Store, takeover_ids: Iterable[int], weights: Mapping[str, float], overrides: Sequence[str] = ()
) -> dict[int, float]:
    """Factor of each takeover by its stored verdict under conf/counterfactual.yaml + `overrides`
    (all 1.0 when `weights` is empty, without reading the store)."""
    ids = sorted({int(i) for i in takeover_ids})
    if not weights:
        return dict.fromkeys(ids, 1.0)
    stored = store.list_counterfactuals(ids, _digest(overrides))
    necessary = {r.takeover_id: r.counts_as_necessary for r in stored}
    verdict = {i: UNJUDGED if i not in necessary else NECESSARY if necessary[i] else FALSE_ALARM for i in ids}
    return {i: float(weights.get(v, 1.0)) for i, v in verdict.items()}


def _digest(overrides: Sequence[str], where: str = "verdict_overrides") -> str:
    # Imported late: the counterfactual module pulls in the simulator, which training does not need.
    from takeover.counterfactual import config_digest, load_counterfactual_config

    try:
        return config_digest(load_counterfactual_config(list(overrides)))
    except (TakeoverError, OmegaConfBaseException) as exc:
        raise TrainingError(f"{where}.verdict_overrides: {' '.join(str(exc).split())}") from None
