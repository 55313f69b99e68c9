"""Server launcher and pool against a fake CarlaUE4.sh: a tiny script that listens on its rpc port,
exits at once, or never opens the port (FAKE_CARLA_MODE), so start-up, crash, restart and retry run
for real (processes, signals, sockets) without CARLA."""

from __future__ import annotations

import os
import signal
import socket
import sys
import textwrap
from pathlib import Path

import pytest

from carla_bridge.carla_client.config import ServerConfig
from carla_bridge.carla_client.errors import (
    RouteRetriesExhaustedError,
    ServerCrashedError,
    ServerStartError,
)
from carla_bridge.carla_client.server import (
    CarlaServer,
    CarlaServerPool,
    server_command,
    server_env,
    server_slots,
)
from carla_bridge.errors import SimulatorError

FAKE_SERVER = textwrap.dedent(
    """\
    #!{python}
    import os, socket, sys, time
    port = int(next(a for a in sys.argv if a.startswith("-carla-rpc-port=")).split("=", 1)[1])
    print("fake carla", sys.argv[1:], flush=True)
    mode = os.environ.get("FAKE_CARLA_MODE", "serve")
    if mode == "exit":
        print("Signal 11 caught.", flush=True)
        sys.exit(3)
    if mode == "silent":
        time.sleep(60)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    while True:
        s.accept()[0].close()
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def carla_root(tmp_path: Path) -> Path:
    exe = tmp_path / "carla" / "CarlaUE4.sh"
    exe.parent.mkdir()
    exe.write_text(FAKE_SERVER.format(python=sys.executable))
    exe.chmod(0o755)
    return exe.parent


def server_config(root: Path, tmp_path: Path, gpus=(0,), **kw) -> ServerConfig:
    base = free_port()
    values = dict(
        carla_root=str(root),
        gpus=list(gpus),
        base_port=base,
        base_tm_port=base + 1000,
        port_stride=3,
        startup_timeout_s=10.0,
        ready_poll_s=0.05,
        ready_rpc_check=False,
        stop_timeout_s=5.0,
        max_tries=3,
        restart_backoff_s=0.0,
        log_dir=str(tmp_path / "logs"),
    )
    values.update(kw)
    return ServerConfig(**values)


def test_command_line_and_ports_per_gpu(carla_root, tmp_path):
    cfg = server_config(carla_root, tmp_path, gpus=(0, 3), base_port=2000, base_tm_port=8000, port_stride=10)
    slots = server_slots(cfg)
    assert [(s.gpu, s.port, s.tm_port) for s in slots] == [(0, 2000, 8000), (3, 2010, 8010)]
    assert server_command(cfg, slots[1]) == [
        str(carla_root / "CarlaUE4.sh"), "-RenderOffScreen", "-nosound", "-carla-rpc-port=2010", "-graphicsadapter=3",
    ]  # fmt: skip
    no_flag = ServerConfig(**{**cfg.__dict__, "gpu_flag": ""})
    assert server_env(no_flag, slots[1], base={})["CUDA_VISIBLE_DEVICES"] == "3"
    assert "CUDA_VISIBLE_DEVICES" not in server_env(cfg, slots[1], base={})


def test_missing_install_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CARLA_ROOT", raising=False)
    cfg = ServerConfig(carla_root="")
    with pytest.raises(ServerStartError, match=r"\$CARLA_ROOT"):
        server_command(cfg, server_slots(cfg)[0])
    cfg = ServerConfig(carla_root=str(tmp_path))
    with pytest.raises(ServerStartError, match=r"CarlaUE4\.sh does not exist"):
        server_command(cfg, server_slots(cfg)[0])


def test_server_starts_waits_until_ready_and_stops(carla_root, tmp_path):
    cfg = server_config(carla_root, tmp_path)
    server = CarlaServer(cfg, server_slots(cfg)[0])
    server.start()
    try:
        assert server.alive() and server.healthy()
        assert "fake carla" in server.log_path.read_text()
    finally:
        server.stop()
    assert not server.alive() and not server.healthy()


def test_server_that_exits_while_starting_reports_its_log(carla_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_CARLA_MODE", "exit")
    cfg = server_config(carla_root, tmp_path)
    with pytest.raises(ServerStartError, match=r"exited with code 3 while starting(.|\n)*Signal 11 caught"):
        CarlaServer(cfg, server_slots(cfg)[0]).start()


def test_server_that_never_opens_its_port_times_out_and_is_stopped(carla_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_CARLA_MODE", "silent")
    cfg = server_config(carla_root, tmp_path, startup_timeout_s=0.5)
    server = CarlaServer(cfg, server_slots(cfg)[0])
    with pytest.raises(ServerStartError, match=r"not ready after 0\.5 s"):
        server.start()
    assert not server.alive()


def test_port_in_use_is_refused(carla_root, tmp_path):
    cfg = server_config(carla_root, tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", cfg.base_port))
        busy.listen(1)
        with pytest.raises(ServerStartError, match="already in use"):
            CarlaServer(cfg, server_slots(cfg)[0]).start()


def test_crash_mid_route_restarts_the_server_and_retries(carla_root, tmp_path):
    # given a pool of one server, and a route whose first run crashes the server
    cfg = server_config(carla_root, tmp_path)
    runs: list[int] = []

    def route(server):
        runs.append(server.pid)
        if len(runs) == 1:
            os.kill(server.pid, signal.SIGKILL)  # the server dies mid-route
            raise ServerCrashedError("time-out while waiting for the simulator")
        return "done"

    with CarlaServerPool(cfg) as pool:
        # when the route runs on the pool
        result = pool.run(route, "route 7")
        server = pool.servers[0]
        # then it ran twice, on a restarted server
        assert result == "done" and len(runs) == 2 and runs[0] != runs[1]
        assert server.starts == 2 and server.healthy()
    assert not server.alive()


def test_route_failing_every_try_gives_up_with_a_clear_error(carla_root, tmp_path):
    cfg = server_config(carla_root, tmp_path, max_tries=2)
    calls = []

    def route(server):
        calls.append(1)
        raise ServerCrashedError("simulation crashed")

    with (
        CarlaServerPool(cfg) as pool,
        pytest.raises(RouteRetriesExhaustedError, match="route 9 failed 2 time"),
    ):
        pool.run(route, "route 9")
    assert len(calls) == 2


def test_route_errors_that_are_not_the_servers_are_not_retried(carla_root, tmp_path):
    cfg = server_config(carla_root, tmp_path)
    calls = []

    def route(server):
        calls.append(1)
        raise SimulatorError("the route's town is not on this server")

    with CarlaServerPool(cfg) as pool:
        with pytest.raises(SimulatorError, match="town"):
            pool.run(route, "route 3")
        assert calls == [1] and pool.servers[0].starts == 1


def test_pool_spreads_routes_over_servers_and_keeps_failures_per_route(carla_root, tmp_path):
    cfg = server_config(carla_root, tmp_path, gpus=(0, 1), max_tries=1)

    def job(server, route_id):
        if route_id == "bad":
            raise ServerCrashedError("crash")
        return (route_id, server.port)

    with CarlaServerPool(cfg) as pool:
        results = pool.map(job, ["a", "bad", "c", "d"], lambda r: f"route {r}")
        ports = {s.port for s in pool.servers}
    assert [r[0] for r in results if isinstance(r, tuple)] == ["a", "c", "d"]
    assert isinstance(results[1], RouteRetriesExhaustedError)
    assert {r[1] for r in results if isinstance(r, tuple)} <= ports


def test_external_server_is_waited_for_not_started(tmp_path):
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(4)
        port = listening.getsockname()[1]
        cfg = ServerConfig(base_port=port, ready_rpc_check=False, ready_poll_s=0.05, startup_timeout_s=2.0)
        with CarlaServerPool(cfg, managed=False) as pool:
            assert pool.run(lambda s: s.port, "route 1") == port
    cfg = ServerConfig(base_port=port, ready_rpc_check=False, ready_poll_s=0.05, startup_timeout_s=0.3)
    with pytest.raises(ServerStartError, match="no CARLA server answered"):
        CarlaServerPool(cfg, managed=False).start()


def test_lease_outside_the_context_is_a_clear_error(carla_root, tmp_path):
    with pytest.raises(SimulatorError, match="not started"):
        CarlaServerPool(server_config(carla_root, tmp_path)).run(lambda s: None, "route 1")
