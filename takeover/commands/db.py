"""`takeover db ...`: migrate, query (read-only), inspect and export the takeover database.

The database is `--db-url`, else $TAKEOVER_DB_URL, else storage.db_url of conf/storage.yaml (a SQLite
file by default); the clip root likewise (`--clip-root`, $TAKEOVER_CLIP_ROOT, storage.clip_root).
Passwords belong in $TAKEOVER_DB_URL, PGPASSWORD or ~/.pgpass; every message masks them.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from carla_bridge.config import load_config
from storage.config import StorageConfig
from storage.engine import make_engine
from storage.errors import RecordError
from storage.migrate import downgrade, schema_state, upgrade
from storage.query import run_read_only_query
from storage.store import Store
from storage.url import mask_url, resolve_clip_root, resolve_db_url
from storage.views import CURRENT_VIEWS
from takeover.text import MISSING, fmt

CONFIG_NAME = "storage"
PIPED_WIDTH_CHARS = 10_000


def _config(args: argparse.Namespace) -> StorageConfig:
    return load_config(StorageConfig, CONFIG_NAME, list(args.set or []))


def _open_store(args: argparse.Namespace) -> Store:
    config = _config(args)
    # Only `takeover db upgrade` changes the schema from the command line: a mistyped URL must not
    # silently create a fresh database for `stats` to report as empty.
    return Store(
        resolve_db_url(config.db_url, args.db_url),
        resolve_clip_root(config.clip_root, args.clip_root),
        config,
        auto_upgrade=False,
    )


def _print_table(title: str | None, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("NULL" if value is None else str(value) for value in row))
    # Piped output gets all the width it needs instead of a squeezed 80-column table.
    width = None if sys.stdout.isatty() else PIPED_WIDTH_CHARS
    Console(width=width).print(table)


def cmd_upgrade(args: argparse.Namespace) -> int:
    config = _config(args)
    url = resolve_db_url(config.db_url, args.db_url)
    engine = make_engine(url, connect_timeout_s=config.connect_timeout_s)
    try:
        before = schema_state(engine).current
        state = upgrade(engine, args.revision)
    finally:
        engine.dispose()
    print(f"{mask_url(url)}: {before or 'empty'} -> {state.current} (head {state.head})")
    return 0


def cmd_downgrade(args: argparse.Namespace) -> int:
    config = _config(args)
    url = resolve_db_url(config.db_url, args.db_url)
    engine = make_engine(url, connect_timeout_s=config.connect_timeout_s)
    try:
        state = downgrade(engine, args.revision)
    finally:
        engine.dispose()
    print(f"{mask_url(url)}: now at {state.current or 'base (no schema)'} (head {state.head})")
    return 0


def cmd_current(args: argparse.Namespace) -> int:
    config = _config(args)
    url = resolve_db_url(config.db_url, args.db_url)
    engine = make_engine(url, connect_timeout_s=config.connect_timeout_s)
    try:
        state = schema_state(engine)
    finally:
        engine.dispose()
    mark = "at head" if state.at_head else "run `takeover db upgrade`"
    print(f"{mask_url(url)}: {state.current or 'no schema'} (head {state.head}; {mark})")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    config = _config(args)
    url = resolve_db_url(config.db_url, args.db_url)
    result = run_read_only_query(
        url, args.sql, timeout_s=config.query_timeout_s, connect_timeout_s=config.connect_timeout_s
    )
    if args.csv:
        out = csv.writer(sys.stdout)
        out.writerow(result.columns)
        out.writerows(result.rows)
        return 0
    limit = config.query_max_rows if args.max_rows is None else args.max_rows
    _print_table(None, result.columns, result.rows[:limit])
    if len(result.rows) > limit:
        print(f"({len(result.rows)} rows, first {limit} shown; --max-rows N or --csv for all)")
    else:
        print(f"({len(result.rows)} rows)")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        stats = store.stats()
    if args.json:
        payload = asdict(stats)
        payload["schema"] = {"current": stats.schema.current, "head": stats.schema.head}
        print(json.dumps(payload, indent=2, default=str))
        return 0
    print(f"database   {stats.database}  (migration {stats.schema.current}, head {stats.schema.head})")
    print(f"clip root  {stats.clip_root}  ({stats.clip_bytes / 1e6:.1f} MB in clips)")
    if stats.unfinished_ingests:
        print(f"unfinished ingests: {stats.unfinished_ingests} (`takeover db gc` removes dead ones)")
    _print_table("rows", ["table", "rows"], sorted(stats.rows.items()))
    rows = [
        (
            s.run,
            MISSING if s.iteration is None else s.iteration,
            s.episodes,
            f"{s.distance_km:.2f}",
            s.takeovers,
            fmt(s.takeovers_per_km, ".2f"),
            fmt(s.mean_driving_score),
        )
        for s in stats.iterations
    ]
    _print_table(
        "episodes per iteration",
        ["run", "iteration", "episodes", "km", "takeovers", "per km", "mean DS"],
        rows,
    )
    return 0


def cmd_export_clip(args: argparse.Namespace) -> int:
    if args.video is None and args.npz is None:
        raise RecordError("give --video OUT.mp4 and/or --npz OUT.npz")
    with _open_store(args) as store:
        info = store.clip_info(args.clip_id)
        arrays = store.load_clip(args.clip_id)
        video_config = store.config.video
    print(
        f"clip {info.id}: episode {info.episode_id}, {info.kind}, frames {info.start_frame}..{info.end_frame - 1}"
    )
    if args.npz is not None:
        args.npz.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.npz, **arrays)
        print(f"wrote arrays {sorted(arrays)} to {args.npz}")
    if args.video is not None:
        from takeover.clip_video import render_clip_video  # OpenCV only when a video is asked for

        n_frames = render_clip_video(arrays, args.video, video_config)
        print(f"wrote {n_frames} frames to {args.video}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        report = store.verify_clips(sweep=not args.no_sweep)
    print(f"checked {report.checked} clip files")
    for clip_id, uri in report.missing:
        print(f"missing  clip {clip_id}: {uri}")
    for clip_id, uri in report.corrupt:
        print(f"corrupt  clip {clip_id}: {uri}")
    for folder in report.stray_dirs:
        print(f"stray    {folder} (no rows; `takeover db gc --sweep` removes it)")
    print("ok" if report.ok else "problems found")
    return 0 if report.ok else 1


def cmd_gc(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        report = store.recover_orphans(args.grace_s, sweep=args.sweep)
    for folder in report.removed_dirs:
        print(f"removed {folder}")
    print(f"removed {len(report.removed_dirs)} folder(s); {report.in_flight} ingest(s) may still be running")
    return 0


def cmd_views(_args: argparse.Namespace) -> int:
    for view in CURRENT_VIEWS:
        print(f"{view.name}: {view.description}")
        for column, meaning in view.columns.items():
            print(f"    {column:<20} {meaning}")
        print()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db-url", help="SQLAlchemy URL (default: $TAKEOVER_DB_URL, then conf/storage.yaml)")
    common.add_argument("--clip-root", help="clip store folder or fsspec URL (default: $TAKEOVER_CLIP_ROOT)")
    common.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a storage config value")

    db = subparsers.add_parser("db", help="the takeover database: migrate, query, stats, export clips")
    commands = db.add_subparsers(dest="db_command", required=True)

    p = commands.add_parser("upgrade", parents=[common], help="bring the database to the latest migration")
    p.add_argument("--revision", default="head")
    p.set_defaults(func=cmd_upgrade)

    p = commands.add_parser("downgrade", parents=[common], help="take the schema back ('base' drops it)")
    p.add_argument("revision")
    p.set_defaults(func=cmd_downgrade)

    p = commands.add_parser("current", parents=[common], help="show the database's migration")
    p.set_defaults(func=cmd_current)

    p = commands.add_parser("query", parents=[common], help="run one read-only SQL statement")
    p.add_argument("sql", help='e.g. "SELECT * FROM disengagement_rates ORDER BY takeovers_per_km DESC"')
    p.add_argument("--csv", action="store_true", help="print every row as CSV instead of a table")
    p.add_argument("--max-rows", type=int, help="rows shown in the table (default storage.query_max_rows)")
    p.set_defaults(func=cmd_query)

    p = commands.add_parser("stats", parents=[common], help="row counts, clip bytes, takeovers per km")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = commands.add_parser(
        "export-clip", parents=[common], help="render a clip top-down, or dump its arrays"
    )
    p.add_argument("clip_id", type=int)
    p.add_argument("--video", type=Path, help="write a top-down mp4 here")
    p.add_argument("--npz", type=Path, help="write the clip's arrays here")
    p.set_defaults(func=cmd_export_clip)

    p = commands.add_parser("verify", parents=[common], help="check every clip file against its checksum")
    p.add_argument("--no-sweep", action="store_true", help="skip listing the clip store for stray folders")
    p.set_defaults(func=cmd_verify)

    p = commands.add_parser("gc", parents=[common], help="remove clip files of ingests that never committed")
    p.add_argument("--grace-s", type=float, help="also remove unfinished ingests older than this (seconds)")
    p.add_argument("--sweep", action="store_true", help="also remove folders no row references")
    p.set_defaults(func=cmd_gc)

    p = commands.add_parser("views", help="list the documented SQL views and their columns")
    p.set_defaults(func=cmd_views)
