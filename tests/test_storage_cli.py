"""`takeover db ...` end to end through takeover.cli.main, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from postgres import *  # noqa: F403  (fixtures: db_url, empty_db_url, store, clip_root, pg_server, ...)
from postgres import count_rows, fast_config, make_episode
from sqlalchemy.engine import URL

from storage.local_postgres import LocalPostgres
from storage.migrate import head_revision
from storage.store import Store
from storage.url import CLIP_ROOT_ENV, DB_URL_ENV
from takeover.cli import main


def _plain(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@pytest.fixture
def env(db_url: URL, clip_root: Path, monkeypatch: pytest.MonkeyPatch) -> URL:
    """The CLI finds the test database through the environment, as a user's shell would."""
    monkeypatch.setenv(DB_URL_ENV, _plain(db_url))
    monkeypatch.setenv(CLIP_ROOT_ENV, str(clip_root))
    with Store(db_url, str(clip_root), fast_config()) as store:
        store.ingest_episode(*make_episode(1))
    return db_url


def test_upgrade_creates_the_schema(empty_db_url: URL, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade", "--db-url", _plain(empty_db_url)]) == 0
    assert f"empty -> {head_revision()}" in capsys.readouterr().out
    assert count_rows(empty_db_url, "episodes") == 0
    assert main(["db", "current", "--db-url", _plain(empty_db_url)]) == 0
    assert "at head" in capsys.readouterr().out


def test_query_prints_csv_and_tables(env: URL, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["db", "query", "SELECT takeover_id, reason FROM disengagements ORDER BY takeover_id", "--csv"])
        == 0
    )
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [["takeover_id", "reason"], ["1", "predicted_collision"], ["2", "red_light"]]
    assert main(["db", "query", "SELECT * FROM disengagement_rates", "--max-rows", "1"]) == 0
    out = capsys.readouterr().out
    assert "takeovers_per_km" in out and "(2 rows, first 1 shown" in out


def test_query_refuses_writes_with_exit_code_2(env: URL, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "query", "DELETE FROM takeovers"]) == 2
    assert "read-only" in capsys.readouterr().err
    assert count_rows(env, "takeovers") == 2


def test_stats_reports_rows_and_rates(env: URL, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["rows"]["episodes"] == 1 and stats["rows"]["frames"] == 80
    assert stats["iterations"][0]["takeovers"] == 2 and stats["schema"]["current"] == head_revision()
    assert main(["db", "stats"]) == 0
    assert "episodes per iteration" in capsys.readouterr().out


def test_export_clip_renders_a_top_down_video(
    env: URL, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video, arrays = tmp_path / "out" / "clip.mp4", tmp_path / "clip.npz"
    assert main(["db", "export-clip", "2", "--video", str(video), "--npz", str(arrays)]) == 0
    assert "wrote 20 frames" in capsys.readouterr().out
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 20 and frames[0].shape == (640, 640, 3)
    assert float(np.std(frames[0])) > 1.0  # something was drawn
    with np.load(arrays) as npz:
        assert npz["ego_pose"].shape == (20, 4)


def test_export_clip_of_a_corrupt_file_fails_cleanly(
    env: URL, clip_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store(env, str(clip_root), fast_config()) as store:
        path = clip_root / store.clip_info(1).uri
    path.write_bytes(path.read_bytes()[:-10])
    assert main(["db", "export-clip", "1", "--video", str(tmp_path / "c.mp4")]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert not (tmp_path / "c.mp4").exists()
    assert main(["db", "verify"]) == 1


def test_gc_and_views_commands(env: URL, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "gc", "--sweep"]) == 0
    assert "removed 0 folder(s)" in capsys.readouterr().out
    assert main(["db", "views"]) == 0
    out = capsys.readouterr().out
    assert "disengagements:" in out and "takeovers_per_km" in out


def test_missing_sqlite_database_asks_for_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "stats", "--db-url", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    assert "takeover db upgrade" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


@pytest.mark.postgres
def test_unreachable_server_is_one_line_without_the_password(
    pg_server: LocalPostgres, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    closed = _plain(pg_server.url("takeover").set(port=1))
    for command in (["db", "stats"], ["db", "query", "SELECT 1"], ["db", "upgrade"]):
        assert main([*command, "--db-url", closed]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: cannot open database") and err.count("\n") == 1
        assert pg_server.password not in err and "***" in err
    assert pg_server.password not in caplog.text
