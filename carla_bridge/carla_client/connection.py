"""Connecting to a CARLA server with timeouts, and telling "nothing there" from "not CARLA" quickly.

A TCP probe comes first (connection refused answers at once, where an RPC would wait its whole
timeout), then `get_server_version()` under the client's timeout, which only a CARLA server answers.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import carla

from carla_bridge.carla_client.errors import ServerUnreachableError

log = logging.getLogger(__name__)

ClientFactory = Callable[..., Any]  # (host, port, worker_threads=...) -> carla.Client-like


def port_open(host: str, port: int, timeout_s: float) -> bool:
    """True when a TCP connection to host:port succeeds within `timeout_s`."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def connect(
    host: str,
    port: int,
    timeout_s: float,
    probe_timeout_s: float,
    worker_threads: int = 0,
    factory: ClientFactory = carla.Client,
) -> Any:
    """A client whose server answered `get_server_version()`; ServerUnreachableError otherwise."""
    if not port_open(host, port, probe_timeout_s):
        raise ServerUnreachableError(
            f"no CARLA server at {host}:{port}: nothing accepts connections there. Start one "
            f"(CarlaUE4.sh -RenderOffScreen -nosound -carla-rpc-port={port}) or fix client.host/client.port"
        )
    client = factory(host, port, worker_threads=worker_threads)
    client.set_timeout(timeout_s)
    try:
        server_version = client.get_server_version()
    except RuntimeError as exc:
        raise ServerUnreachableError(
            f"{host}:{port} accepts connections but no CARLA RPC answered within {timeout_s:g} s ({exc}). "
            "Is it the RPC port (not the streaming port+1 or a Traffic Manager port), and has the server "
            "finished loading? Fix client.port or raise client.timeout_s"
        ) from None
    client_version = client.get_client_version()
    if release(server_version) != release(client_version):
        # A 0.9.15 server works with the 0.9.16 client for the calls used here; Bench2Drive pins 0.9.15.
        log.warning("CARLA server %s and client %s differ", server_version, client_version)
    return client


def release(version: str) -> str:
    """'0.9.15-dirty' -> '0.9.15'."""
    return str(version).split("-", 1)[0].strip()
