"""`takeover train bc|dagger|dpo`: one training round from the takeover database, printed as a table.

    takeover train bc --run town01
    takeover train dagger --run town01 --iteration 0 --parent runs/town01/ckpt/bc.pt
    takeover train dpo --run town01 --iteration 0 --parent runs/town01/ckpt/dagger-0.pt --set dpo.beta=0.2

Settings: conf/train.yaml (sections bc, dagger, dpo), overridden with `--set section.key=value`; the
network of a BC round from conf/policy.yaml (`--policy-set model.gru_hidden=128`). The database and
clip store resolve as for `takeover db` (--db-url, $TAKEOVER_DB_URL, conf/storage.yaml).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field

from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Table

from carla_bridge.config import load_config
from storage.config import StorageConfig
from storage.store import Store
from storage.url import resolve_clip_root, resolve_db_url
from takeover.bc import BCConfig, train_bc
from takeover.dagger import DAggerConfig, dagger_round
from takeover.dpo import DPOConfig, dpo_round
from takeover.policy.config import load_policy_config
from takeover.training import TrainingError, TrainResult

CONFIG_NAME = "train"
PIPED_WIDTH_CHARS = 10_000
SHA_SHOWN_CHARS = 16


@dataclass
class TrainConfig:
    """conf/train.yaml: one section per kind of round."""

    bc: BCConfig = field(default_factory=BCConfig)
    dagger: DAggerConfig = field(default_factory=DAggerConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)


def load_train_config(overrides: list[str] | None = None) -> TrainConfig:
    """Schema defaults <- conf/train.yaml <- dotlist overrides ("dpo.beta=0.2")."""
    try:
        return load_config(TrainConfig, CONFIG_NAME, overrides)
    except OmegaConfBaseException as exc:
        detail = " ".join(str(exc).split())
        raise TrainingError(
            f"training config: {detail}; see conf/train.yaml for the keys (sections bc, dagger, dpo)"
        ) from None


def _open_store(args: argparse.Namespace) -> Store:
    config = load_config(StorageConfig, "storage")
    # Training reads collected data: a mistyped URL must fail, not create an empty database.
    return Store(
        resolve_db_url(config.db_url, args.db_url),
        resolve_clip_root(config.clip_root, args.clip_root),
        config,
        auto_upgrade=False,
    )


def result_json(result: TrainResult) -> dict[str, object]:
    return {
        "run": result.run,
        "kind": result.kind,
        "name": result.name,
        "iteration": result.iteration,
        "checkpoint": str(result.checkpoint_path),
        "sha256": result.sha256,
        "parent_sha256": result.parent_sha256,
        "n_samples": result.n_samples,
        "steps": result.steps,
        "samples_per_s": result.samples_per_s,
        "wall_s": result.wall_s,
        "round_id": result.round_id,
        "metrics": result.metrics,
    }


def print_result(result: TrainResult) -> None:
    table = Table(title=f"{result.kind} round {result.name} of run {result.run}")
    table.add_column("field")
    table.add_column("value", overflow="fold")
    parent = result.parent_sha256[:SHA_SHOWN_CHARS] if result.parent_sha256 else "none"
    rows = [
        ("checkpoint", str(result.checkpoint_path)),
        ("sha256", result.sha256[:SHA_SHOWN_CHARS]),
        ("parent", parent),
        ("samples", str(result.n_samples)),
        ("steps", str(result.steps)),
        ("samples/s", f"{result.samples_per_s:.1f}"),
        ("wall s", f"{result.wall_s:.1f}"),
    ]
    rows += [(name, f"{value:.4g}") for name, value in sorted(result.metrics.items())]
    for row in rows:
        table.add_row(*row)
    width = None if sys.stdout.isatty() else PIPED_WIDTH_CHARS
    Console(width=width).print(table)


def _report(result: TrainResult, as_json: bool) -> int:
    if as_json:
        print(json.dumps(result_json(result), indent=2))
    else:
        print_result(result)
    return 0


def cmd_bc(args: argparse.Namespace) -> int:
    config = load_train_config(list(args.set or []))
    policy_config = load_policy_config(list(args.policy_set or []))
    with _open_store(args) as store:
        return _report(train_bc(store, args.run, config.bc, policy_config), args.json)


def cmd_dagger(args: argparse.Namespace) -> int:
    config = load_train_config(list(args.set or []))
    with _open_store(args) as store:
        return _report(dagger_round(store, args.run, args.iteration, args.parent, config.dagger), args.json)


def cmd_dpo(args: argparse.Namespace) -> int:
    config = load_train_config(list(args.set or []))
    with _open_store(args) as store:
        return _report(dpo_round(store, args.run, args.iteration, args.parent, config.dpo), args.json)


def register(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run", required=True, help="experiment name (episodes, rounds and runs/<run>/)")
    # --db / --clips as `takeover collect` spells them, --db-url / --clip-root as `takeover db` does.
    common.add_argument(
        "--db-url",
        "--db",
        dest="db_url",
        help="SQLAlchemy URL (default: $TAKEOVER_DB_URL, then conf/storage.yaml)",
    )
    common.add_argument(
        "--clip-root",
        "--clips",
        dest="clip_root",
        help="clip store folder or fsspec URL ($TAKEOVER_CLIP_ROOT)",
    )
    common.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override conf/train.yaml, e.g. dpo.beta=0.2"
    )
    common.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    round_args = argparse.ArgumentParser(add_help=False)
    round_args.add_argument(
        "--iteration", type=int, required=True, help="iteration k: data of iterations <= k"
    )
    round_args.add_argument("--parent", required=True, help="checkpoint to fine-tune (and DPO's reference)")

    parser = subparsers.add_parser("train", help="train a policy: behaviour cloning, DAgger or DPO rounds")
    kinds = parser.add_subparsers(dest="train_kind", required=True)
    p = kinds.add_parser("bc", parents=[common], help="policy v0 from the run's demonstrations")
    p.add_argument(
        "--policy-set", action="append", metavar="KEY=VALUE", help="override conf/policy.yaml (the network)"
    )
    p.set_defaults(func=cmd_bc)
    p = kinds.add_parser(
        "dagger", parents=[common, round_args], help="fine-tune on aggregated takeover labels"
    )
    p.set_defaults(func=cmd_dagger)
    p = kinds.add_parser("dpo", parents=[common, round_args], help="DPO on expert-vs-policy preference pairs")
    p.set_defaults(func=cmd_dpo)
