"""docker/: the compose file, the worker image and the README agree with each other and with the code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from carla_bridge.carla_client.config import load_carla_config
from carla_bridge.carla_client.server import server_slots

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
ENV = {"POSTGRES_PASSWORD": "test-only", "BENCH2DRIVE_ROOT": "/tmp"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def pinned(name: str) -> str:
    line = next(x for x in (REPO / "requirements.txt").read_text().splitlines() if x.startswith(f"{name}=="))
    return line.split("==", 1)[1]


def carla_services(compose: dict) -> list[str]:
    return sorted(name for name in compose["services"] if re.fullmatch(r"carla-\d+", name))


def test_compose_has_the_deployment_services(compose):
    assert {"postgres", "prefect-server", "carla-0", "carla-1", "worker"} <= set(compose["services"])
    build = compose["services"]["worker"]["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile.worker"


def test_carla_servers_match_the_pinned_client_and_the_pool_ports(compose):
    version = pinned("carla")
    dockerfile = (DOCKER / "Dockerfile.worker").read_text()
    assert f"ARG CARLA_IMAGE=carlasim/carla:{version}" in dockerfile
    names = carla_services(compose)
    overrides = compose["services"]["worker"]["environment"]["TAKEOVER_CARLA_OVERRIDES"]
    default = re.fullmatch(r"\$\{TAKEOVER_CARLA_OVERRIDES:-(.*)\}", overrides).group(1).split()
    # the README's two-GPU overrides describe carla-0 and carla-1
    readme = (DOCKER / "README.md").read_text()
    two_gpu = re.search(r'TAKEOVER_CARLA_OVERRIDES="([^"]+)"', readme).group(1).split()
    for dotlist, expected in ((default, names[:1]), (two_gpu, names[:2])):
        cfg = load_carla_config(dotlist)
        assert cfg.server.external_hosts == expected
        for slot, name in zip(server_slots(cfg.server), expected, strict=True):
            service = compose["services"][name]
            assert f"carlasim/carla:{version}" in service["image"]
            command = service["command"]
            assert command[:4] == ["bash", "CarlaUE4.sh", "-RenderOffScreen", "-nosound"]
            assert f"-carla-rpc-port={slot.port}" in command
            assert service["environment"]["CARLA_RPC_PORT"] == str(slot.port)
            gpu = service["deploy"]["resources"]["reservations"]["devices"][0]
            assert gpu["driver"] == "nvidia" and gpu["device_ids"] == [str(slot.gpu)]
            assert name in readme


def test_prefect_server_matches_the_pinned_prefect(compose):
    assert compose["services"]["prefect-server"]["image"].endswith(
        f"prefect:{pinned('prefect')}-python3.11}}"
    )


def test_worker_reaches_postgres_prefect_and_bench2drive(compose):
    env = compose["services"]["worker"]["environment"]
    assert (
        env["TAKEOVER_DB_URL"].startswith("postgresql+psycopg://takeover:")
        and "@postgres:5432/takeover" in env["TAKEOVER_DB_URL"]
    )
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["BENCH2DRIVE_ROOT"] == "/opt/bench2drive"
    assert any(v.endswith(":/opt/bench2drive:ro") for v in compose["services"]["worker"]["volumes"])


def test_worker_image_copies_what_exists():
    dockerfile = (DOCKER / "Dockerfile.worker").read_text()
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, flags=re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"Dockerfile.worker copies {path}, which is not in the repository"
    assert "leaderboard_agent" in dockerfile


def _compose_cli() -> list[str] | None:
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.skipif(_compose_cli() is None, reason="neither `docker compose` nor docker-compose is installed")
@pytest.mark.parametrize("profile", [[], ["--profile", "multi-gpu"]])
def test_compose_config_validates(profile):
    out = subprocess.run(
        [*_compose_cli(), "-f", str(DOCKER / "compose.yaml"), *profile, "config", "-q"],
        env={**os.environ, **ENV}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
