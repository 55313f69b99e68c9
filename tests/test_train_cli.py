"""`takeover train bc|dagger|dpo` smoke test on a synthetic SQLite store, and its error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_train_synthetic import one_torch_thread, open_store, write_synthetic_run  # noqa: F401

from carla_bridge.config import CONF_DIR
from takeover.cli import main
from takeover.commands.train import TrainConfig, load_train_config
from takeover.training import TrainingError

TINY_NETWORK = [
    "bev.size_px=16",
    "bev.ego_forward_offset_m=2.0",
    "bev.channels=[drivable,vehicles]",
    "model.encoder_channels=[8,16]",
    "model.feature_dim=32",
    "model.measurement_dim=16",
    "model.fused_dim=32",
    "model.gru_hidden=16",
    "device=cpu",
]


def fast(section: str, runs: Path) -> list[str]:
    args = []
    for setting in (
        "loop.epochs=1", "loop.device=cpu", "loop.tensorboard=false", f"loop.runs_dir={runs}", "loop.batch_size=16",
    ):  # fmt: skip
        args += ["--set", f"{section}.{setting}"]
    return args


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_train_bc_dagger_dpo_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    store = open_store(tmp_path)
    write_synthetic_run(store, "syn", demos=2, rollouts=1)
    store.close()
    db = ["--db-url", f"sqlite:///{tmp_path / 'takeover.db'}", "--clip-root", str(tmp_path / "clips")]
    runs = tmp_path / "runs"
    policy = [arg for setting in TINY_NETWORK for arg in ("--policy-set", setting)]
    # When BC, then a DAgger round on it, then a DPO round on that run from the command line
    bc = run_json(capsys, ["train", "bc", "--run", "syn", *db, *fast("bc", runs), *policy, "--json"])
    assert Path(bc["checkpoint"]) == runs / "syn" / "ckpt" / "bc.pt" and bc["parent_sha256"] is None
    dagger = run_json(
        capsys,
        [
            "train",
            "dagger",
            "--run",
            "syn",
            "--iteration",
            "0",
            "--parent",
            bc["checkpoint"],
            *db,
            *fast("dagger", runs),
            "--json",
        ],
    )
    assert dagger["parent_sha256"] == bc["sha256"] and "takeover_loss_after" in dagger["metrics"]
    argv = [
        "train",
        "dpo",
        "--run",
        "syn",
        "--iteration",
        "0",
        "--parent",
        dagger["checkpoint"],
        *db,
        *fast("dpo", runs),
    ]
    # Then each round chains to the previous checkpoint, and the table form prints the TRL metrics
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert (
        "dpo round dpo-0 of run syn" in table
        and "rewards/margins" in table
        and dagger["sha256"][:16] in table
    )


def test_a_missing_database_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    argv = [
        "train",
        "bc",
        "--run",
        "x",
        "--db-url",
        f"sqlite:///{tmp_path / 'nope.db'}",
        "--clip-root",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "takeover db upgrade" in capsys.readouterr().err


def test_a_missing_parent_checkpoint_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    open_store(tmp_path).close()
    db = [
        "--db",
        f"sqlite:///{tmp_path / 'takeover.db'}",
        "--clips",
        str(tmp_path / "clips"),
    ]  # collect's spelling
    assert (
        main(["train", "dpo", "--run", "x", "--iteration", "0", "--parent", str(tmp_path / "v0.pt"), *db])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_train_yaml_matches_the_schema_and_overrides_are_checked():
    assert OmegaConf.to_container(OmegaConf.load(CONF_DIR / "train.yaml")) == OmegaConf.to_container(
        OmegaConf.structured(TrainConfig)
    )
    assert load_train_config(["dpo.beta=0.25"]).dpo.beta == 0.25
    with pytest.raises(TrainingError, match=r"conf/train\.yaml"):
        load_train_config(["dpo.betta=0.25"])
