"""Agents by name for `takeover drive --agent ...`: autopilot, expert, or a policy checkpoint."""

from __future__ import annotations

from pathlib import Path

from carla_bridge.agent import Agent
from carla_bridge.errors import TakeoverError

AGENT_NAMES = ("autopilot", "expert", "policy:PATH")


def make_agent(spec: str) -> Agent:
    """`autopilot` | `expert` | `policy:ckpt.pt` (or a bare path ending in .pt)."""
    from carla_bridge.config import load_config

    if spec == "autopilot":
        from carla_bridge.autopilot import Autopilot, AutopilotConfig

        return Autopilot(load_config(AutopilotConfig, "autopilot"))
    if spec == "expert":
        from experts.config import ExpertConfig
        from experts.expert import PDMLiteExpert

        return PDMLiteExpert(load_config(ExpertConfig, "expert"))
    path = spec.removeprefix("policy:")
    if spec.startswith("policy:") or path.endswith(".pt"):
        from takeover.policy import HybridPolicy

        policy, _ = HybridPolicy.from_checkpoint(Path(path))
        return policy
    raise TakeoverError(f"unknown agent '{spec}': use one of {', '.join(AGENT_NAMES)}")
