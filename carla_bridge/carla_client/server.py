"""CARLA server processes: start one per GPU, wait until ready, detect crashes, restart and retry.

`CarlaServer` runs ``CarlaUE4.sh -RenderOffScreen -nosound -carla-rpc-port=P -graphicsadapter=G`` in
its own process group (the script starts the real binary as a child; stopping signals the whole
group: SIGTERM, then SIGKILL after `stop_timeout_s`). Ready means: the process lives, port P accepts
TCP connections and, with `ready_rpc_check`, a carla.Client gets the server version. Server i of a
pool uses rpc port base_port + i x port_stride and Traffic Manager port base_tm_port + i x port_stride.

`CarlaServerPool` is a context manager over those servers (or over servers started by someone else,
e.g. docker compose: `managed=False`, hosts from `external_hosts`; then a crash waits for the server
to come back instead of restarting it). `pool.run(job, what)` leases a free server, runs `job(server)` and, when it fails
with a server-side SimulatorError (crash, unreachable) or the server process died under it, restarts
the server and tries again, `max_tries` times in all, then raises RouteRetriesExhaustedError.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from carla_bridge.carla_client.config import ServerConfig
from carla_bridge.carla_client.connection import connect, port_open
from carla_bridge.carla_client.errors import (
    RouteRetriesExhaustedError,
    ServerCrashedError,
    ServerStartError,
    ServerUnreachableError,
)
from carla_bridge.errors import SimulatorError

log = logging.getLogger(__name__)

T = TypeVar("T")
CARLA_ROOT_ENV = "CARLA_ROOT"
LOG_TAIL_LINES = 20
RETRYABLE: tuple[type[SimulatorError], ...] = (ServerCrashedError, ServerUnreachableError, ServerStartError)


@dataclass(frozen=True)
class ServerSlot:
    index: int
    gpu: int
    port: int  # RPC port (the server also takes port + 1 and port + 2)
    tm_port: int  # Traffic Manager port of the clients of this server


def server_slots(config: ServerConfig) -> list[ServerSlot]:
    """One slot per configured GPU, ports spaced by `port_stride`."""
    return [
        ServerSlot(
            i, gpu, config.base_port + i * config.port_stride, config.base_tm_port + i * config.port_stride
        )
        for i, gpu in enumerate(config.gpus)
    ]


def carla_root(config: ServerConfig) -> Path:
    root = config.carla_root or os.environ.get(CARLA_ROOT_ENV, "")
    if not root:
        raise ServerStartError(
            "no CARLA install given: set $CARLA_ROOT or server.carla_root (conf/carla.yaml) to the folder "
            "holding CarlaUE4.sh"
        )
    return Path(root).expanduser()


def server_executable(config: ServerConfig) -> Path:
    exe = Path(config.executable).expanduser()
    if not exe.is_absolute():
        exe = carla_root(config) / exe
    if not exe.is_file():
        raise ServerStartError(
            f"CARLA server executable {exe} does not exist: point $CARLA_ROOT / server.carla_root at a "
            "CARLA 0.9.15/0.9.16 install, or server.executable at CarlaUE4.sh"
        )
    if not os.access(exe, os.X_OK):
        raise ServerStartError(f"{exe} is not executable: chmod +x it")
    return exe


def server_command(config: ServerConfig, slot: ServerSlot) -> list[str]:
    """The command line of one server: executable, configured args, rpc port and GPU flags."""
    command = [str(server_executable(config)), *config.args, config.port_flag.format(port=slot.port)]
    if config.gpu_flag:
        command.append(config.gpu_flag.format(gpu=slot.gpu))
    return command


def server_env(config: ServerConfig, slot: ServerSlot, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: without a GPU flag the GPU is chosen by CUDA_VISIBLE_DEVICES."""
    env = dict(os.environ if base is None else base)
    if not config.gpu_flag:
        env["CUDA_VISIBLE_DEVICES"] = str(slot.gpu)
    return env


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class _Server:
    """What a pool needs of a server: its slot, ports, and the readiness probe."""

    managed: bool

    def __init__(self, config: ServerConfig, slot: ServerSlot, host: str = "127.0.0.1") -> None:
        self.config = config
        self.slot = slot
        self.host = host
        self.starts = 0

    @property
    def port(self) -> int:
        return self.slot.port

    @property
    def tm_port(self) -> int:
        return self.slot.tm_port

    def _rpc_ready(self) -> bool:
        if not self.config.ready_rpc_check:
            return True
        try:
            connect(self.host, self.port, self.config.ready_poll_s * 5, self.config.ready_poll_s)
        except ServerUnreachableError:
            return False
        return True

    def alive(self) -> bool:
        raise NotImplementedError

    def healthy(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class CarlaServer(_Server):
    """One CARLA server process this program starts and stops."""

    managed = True

    def __init__(self, config: ServerConfig, slot: ServerSlot, host: str = "127.0.0.1") -> None:
        super().__init__(config, slot, host)
        self.log_path = Path(config.log_dir) / f"carla_{slot.index}_port{slot.port}.log"
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def healthy(self) -> bool:
        """The process lives and its RPC port accepts connections."""
        return self.alive() and port_open(self.host, self.port, self.config.ready_poll_s)

    def start(self) -> None:
        """Start the process and wait until it is ready (ServerStartError otherwise, process stopped)."""
        if self.alive():
            return
        command = server_command(self.config, self.slot)
        if port_open(self.host, self.port, self.config.ready_poll_s):
            raise ServerStartError(
                f"port {self.port} is already in use on {self.host}: another CARLA server (or program) runs "
                "there; stop it or change server.base_port"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            log_file.write(
                f"\n=== start {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(command)}\n".encode()
            )
            log_file.flush()
            try:
                self._process = subprocess.Popen(
                    command,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=server_env(self.config, self.slot),
                    start_new_session=True,  # its own process group: stop() reaches the UE4 child too
                )
            except OSError as exc:
                raise ServerStartError(f"cannot run {command[0]}: {exc}") from None
        self.starts += 1
        log.info(
            "CARLA server %d started (pid %d, port %d, gpu %d)",
            self.slot.index,
            self.pid,
            self.port,
            self.slot.gpu,
        )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self) -> None:
        cfg = self.config
        deadline = time.monotonic() + cfg.startup_timeout_s
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise ServerStartError(
                    f"CARLA server {self.slot.index} (port {self.port}) exited with code "
                    f"{self._process.returncode} while starting. Last lines of {self.log_path}:\n"
                    f"{_tail(self.log_path)}"
                )
            if port_open(self.host, self.port, cfg.ready_poll_s) and self._rpc_ready():
                return
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"CARLA server {self.slot.index} (port {self.port}) was not ready after "
                    f"{cfg.startup_timeout_s:g} s (server.startup_timeout_s). Last lines of {self.log_path}:\n"
                    f"{_tail(self.log_path)}"
                )
            time.sleep(cfg.ready_poll_s)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after `stop_timeout_s`; no-op when not running."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self._signal_group(process, signal.SIGTERM)
            try:
                process.wait(self.config.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_group(process, signal.SIGKILL)
                process.wait()
        else:
            self._signal_group(process, signal.SIGKILL)  # orphans of a crashed script
        self._process = None

    @staticmethod
    def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)  # start_new_session: the group id is the process id

    def restart(self) -> None:
        log.warning("restarting CARLA server %d (port %d)", self.slot.index, self.port)
        self.stop()
        time.sleep(self.config.restart_backoff_s)
        self.start()

    def describe(self) -> str:
        return f"CARLA server {self.slot.index} (gpu {self.slot.gpu}, port {self.port}, log {self.log_path})"


class ExternalServer(_Server):
    """A server someone else runs (docker compose, a cluster scheduler): waited for, never started."""

    managed = False

    def alive(self) -> bool:
        return True  # its process is not ours to see; `healthy` asks the port

    def healthy(self) -> bool:
        return port_open(self.host, self.port, self.config.ready_poll_s)

    def start(self) -> None:
        cfg = self.config
        deadline = time.monotonic() + cfg.startup_timeout_s
        while not (port_open(self.host, self.port, cfg.ready_poll_s) and self._rpc_ready()):
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"no CARLA server answered at {self.host}:{self.port} within {cfg.startup_timeout_s:g} s: "
                    "start it (docker compose up carla) or fix the host/ports"
                )
            time.sleep(cfg.ready_poll_s)
        self.starts += 1

    def stop(self) -> None:
        return None

    def restart(self) -> None:
        time.sleep(self.config.restart_backoff_s)  # its supervisor restarts it; wait for it to answer
        self.start()

    def describe(self) -> str:
        return f"external CARLA server {self.host}:{self.port}"


Server = _Server


class CarlaServerPool:
    """Servers (one per GPU), leased one job at a time, restarted and retried on crashes."""

    def __init__(self, config: ServerConfig, *, host: str = "127.0.0.1", managed: bool = True) -> None:
        self.config = config
        slots = server_slots(config)
        if managed:
            self.servers: list[Server] = [CarlaServer(config, slot, host) for slot in slots]
        else:
            hosts = config.external_hosts or [host] * len(slots)
            self.servers = [ExternalServer(config, slot, h) for slot, h in zip(slots, hosts, strict=True)]
        self._free: queue.Queue[Server] = queue.Queue()
        self._started = False
        self._lock = threading.Lock()

    def __enter__(self) -> CarlaServerPool:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every server in parallel; if any fails, stop them all and raise its error."""
        with ThreadPoolExecutor(max_workers=len(self.servers)) as executor:
            futures = [executor.submit(server.start) for server in self.servers]
            errors = [f.exception() for f in futures]
        failed = [e for e in errors if e is not None]
        if failed:
            self.stop()
            raise failed[0]
        for server in self.servers:
            self._free.put(server)
        self._started = True

    def stop(self) -> None:
        for server in self.servers:
            try:
                server.stop()
            except OSError as exc:
                log.warning("stopping %s: %s", server.describe(), exc)
        self._free = queue.Queue()
        self._started = False

    @contextmanager
    def lease(self) -> Iterator[Server]:
        """A free server for one job (blocks until one is free)."""
        if not self._started:
            raise SimulatorError(
                "the CARLA server pool is not started: use `with CarlaServerPool(...) as pool`"
            )
        server = self._free.get()
        try:
            yield server
        finally:
            self._free.put(server)

    def run(self, job: Callable[[Server], T], what: str) -> T:
        """job(server) on a leased server, with restart-and-retry on server failures (module docstring)."""
        tries = self.config.max_tries
        with self.lease() as server:
            last: BaseException | None = None
            for attempt in range(1, tries + 1):
                if not server.healthy():
                    self._restart(server, what)
                try:
                    return job(server)
                except RETRYABLE as exc:
                    last = exc
                except SimulatorError as exc:
                    if server.alive():
                        raise
                    last = exc  # the server died under the job: its error is a symptom
                log.warning(
                    "%s failed on %s (try %d of %d): %s", what, server.describe(), attempt, tries, last
                )
                if attempt < tries:
                    self._restart(server, what)
            raise RouteRetriesExhaustedError(
                f"{what} failed {tries} time(s) on {server.describe()}, the server restarted in between; "
                f"last error: {last}. Check the server log and GPU, or raise server.max_tries"
            )

    def _restart(self, server: Server, what: str) -> None:
        try:
            server.restart()
        except ServerStartError as exc:
            raise RouteRetriesExhaustedError(
                f"{what}: {server.describe()} could not be restarted: {exc}"
            ) from None

    def map(self, job: Callable[[Server, T], object], items: Sequence[T], what: Callable[[T], str]) -> list:
        """job(server, item) for every item, spread over the servers (one job per server at a time).

        Results come back in item order; an item whose job failed for good holds its exception.
        """

        def one(item: T):
            try:
                return self.run(lambda server: job(server, item), what(item))
            except SimulatorError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=len(self.servers)) as executor:
            return list(executor.map(one, items))
