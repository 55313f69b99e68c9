"""The committed built-in assets are exactly what the generator produces, every time."""

from __future__ import annotations

from pathlib import Path

import pytest

from carla_bridge.config import load_config
from carla_bridge.town.assets import (
    ASSETS_DIR,
    BUILTIN_EVAL_ROUTES_PATH,
    BUILTIN_TRAIN_ROUTES_PATH,
    BUILTIN_XODR_PATH,
    TownConfig,
    generate_assets,
    main,
)


@pytest.fixture(scope="module")
def fresh():
    return generate_assets(load_config(TownConfig, "town"))


def test_committed_assets_equal_a_fresh_generation(fresh):
    # given the generator with conf/town.yaml, then each committed file is byte-identical to its output
    assert set(fresh.files) == {
        p.relative_to(ASSETS_DIR)
        for p in (BUILTIN_XODR_PATH, BUILTIN_TRAIN_ROUTES_PATH, BUILTIN_EVAL_ROUTES_PATH)
    }
    for rel, text in fresh.files.items():
        committed = (ASSETS_DIR / rel).read_bytes()
        assert committed == text.encode("utf-8"), f"{rel} is stale: run python -m carla_bridge.town"


def test_generation_is_deterministic(fresh):
    again = generate_assets(load_config(TownConfig, "town"))
    assert again.files == fresh.files


def test_yaml_matches_the_schema_defaults():
    # conf/town.yaml restates the schema defaults, so the committed town does not depend on which is read
    assert load_config(TownConfig, "town") == TownConfig()


def test_cli_check_passes_on_committed_files_and_flags_missing_ones(tmp_path: Path, capsys):
    assert main(["--check"]) == 0
    # given an empty folder, --check reports the files as stale and writes nothing
    assert main(["--check", "--out-dir", str(tmp_path)]) == 1
    assert not any(tmp_path.iterdir())
    # when generated there, then the check passes
    assert main(["--out-dir", str(tmp_path)]) == 0
    assert main(["--check", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "maps" / "Takeover01.xodr").read_bytes() == BUILTIN_XODR_PATH.read_bytes()
    capsys.readouterr()


def test_cli_reports_bad_parameters_as_one_error(tmp_path: Path, capsys):
    assert main(["--out-dir", str(tmp_path), "junction_half_size_m=9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "junction_half_size_m" in err and len(err.strip().splitlines()) == 1
    assert main(["--out-dir", str(tmp_path), "no_such_field=1"]) == 2
    assert "no_such_field" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
