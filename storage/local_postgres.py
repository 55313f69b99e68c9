"""A throw-away PostgreSQL cluster on a free local port, from the server binaries of the machine.

For the storage tests and benchmarks (and for trying PostgreSQL without a server): `initdb` a temp
cluster with a random password (scram-sha-256), start it on 127.0.0.1 and a private socket folder,
create databases, stop and delete everything. PostgreSQL refuses to run as root, so as root the
server runs as the `postgres` system user (Debian's postgresql package creates it) via `runuser`.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL

from storage.errors import StorageError

PG_BIN_ENV = "TAKEOVER_PG_BIN"  # folder holding initdb and pg_ctl, when not in a standard place
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SERVER_USER = "postgres"
SUPERUSER = "takeover"
START_TIMEOUT_S = 30
START_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding it
# Durability off: a test cluster that dies is thrown away anyway, and fsync dominates its run time.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class PostgresUnavailableError(StorageError):
    """No PostgreSQL server binaries, or the cluster would not start."""


def find_pg_bin() -> Path | None:
    """The folder with initdb and pg_ctl: $TAKEOVER_PG_BIN, the newest /usr/lib/postgresql/*/bin, or PATH."""
    candidates: list[Path] = []
    if os.environ.get(PG_BIN_ENV):
        candidates.append(Path(os.environ[PG_BIN_ENV]))
    versioned = glob.glob(PG_BIN_GLOB)
    versioned.sort(key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else -1)
    candidates.extend(Path(p) for p in reversed(versioned))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalPostgres:
    bin_dir: Path
    base_dir: Path
    port: int
    password: str
    run_as: str | None  # system user the server runs as (None: the current user)
    fast: bool
    _running: bool = field(default=False, repr=False)
    # Only the process that started the cluster stops it (forked children inherit this object).
    _owner_pid: int = field(default_factory=os.getpid, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    def url(self, database: str = "postgres") -> URL:
        return URL.create(
            "postgresql+psycopg",
            username=SUPERUSER,
            password=self.password,
            host="127.0.0.1",
            port=self.port,
            database=database,
        )

    def _command(self, *args: str) -> list[str]:
        if self.run_as is None:
            return list(args)
        return ["runuser", "-u", self.run_as, "--", *args]

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            self._command(*args), capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise PostgresUnavailableError(f"{Path(args[0]).name} failed: {' | '.join(tail)}")

    def start(self) -> None:
        options = f"-p {self.port} -h 127.0.0.1 -k {self.base_dir}"
        if self.fast:
            options += "".join(f" -c {setting}" for setting in FAST_SETTINGS)
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "start",
        )
        self._running = True

    def stop(self) -> None:
        if os.getpid() != self._owner_pid:
            return
        if self._running:
            self._running = False
            with contextlib.suppress(PostgresUnavailableError, subprocess.TimeoutExpired):
                self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "stop")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def admin_execute(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE) as the superuser."""
        import psycopg

        url = self.url()
        with psycopg.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=self.password,
            dbname="postgres",
            autocommit=True,
        ) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, name: str, template: str | None = None) -> URL:
        suffix = f" TEMPLATE {template}" if template else ""
        self.admin_execute(f"CREATE DATABASE {name}{suffix}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_local_postgres(fast: bool = True) -> LocalPostgres:
    """initdb + start a private cluster; raises PostgresUnavailableError (with the reason) if it can't."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise PostgresUnavailableError(
            f"no PostgreSQL server binaries (initdb, pg_ctl) under {PG_BIN_GLOB}, ${PG_BIN_ENV} or PATH; "
            "install them with `apt-get install postgresql`"
        )
    run_as: str | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise PostgresUnavailableError(
                f"running as root and there is no {SERVER_USER!r} system user to run the server as "
                "(PostgreSQL refuses root); install Debian's postgresql package or run as another user"
            ) from None
        run_as = SERVER_USER
    base_dir = Path(tempfile.mkdtemp(prefix="takeover-pg-"))
    password = secrets.token_urlsafe(18)
    pwfile = base_dir / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if run_as is not None:
        os.chown(base_dir, owner.pw_uid, owner.pw_gid)
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    server = LocalPostgres(bin_dir, base_dir, _free_port(), password, run_as, fast)
    try:
        server._run(
            str(bin_dir / "initdb"),
            "-D",
            str(server.data_dir),
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--no-sync",
            "--no-instructions",
        )
        pwfile.unlink()
        for attempt in range(START_ATTEMPTS):
            try:
                server.start()
                break
            except PostgresUnavailableError:
                if attempt == START_ATTEMPTS - 1:
                    raise
                server.port = _free_port()
    except BaseException:
        server.stop()
        raise
    atexit.register(server.stop)
    return server
