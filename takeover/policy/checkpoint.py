"""Policy checkpoints: weights + config (as a plain dict) + caller extras in one torch file.

Saved atomically (temp file in the same folder, fsync, rename, fsync the folder) so a crash never
leaves a half-written checkpoint under the final name; loaded with torch.load(weights_only=True), so a
checkpoint cannot run code. Every failure is a CheckpointError naming the file, the problem and the fix.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from carla_bridge.errors import TakeoverError
from takeover.policy.config import PolicyConfig, validate_policy_config
from takeover.policy.model import HybridPlanner, build_model

CHECKPOINT_FORMAT = "takeover.policy/1"
MODEL_CLASS = "HybridPlanner"
_HASH_CHUNK_BYTES = 1 << 20
# The config sections that define the network's shape (see takeover.policy.config).
ARCHITECTURE_SECTIONS = ("bev", "model")
_PLAIN_SCALARS = (str, int, float, bool, type(None))


class CheckpointError(TakeoverError):
    """A policy checkpoint is missing, corrupt, or does not match the model it should restore."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def config_to_dict(config: PolicyConfig) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True, enum_to_str=True)  # type: ignore[return-value]


def config_from_dict(data: Mapping[str, Any], source: str = "checkpoint") -> PolicyConfig:
    """Schema <- stored dict; unknown keys or wrong types raise CheckpointError."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(PolicyConfig), dict(data))
        config: PolicyConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise CheckpointError(
            f"{source}: its policy config does not fit this version's PolicyConfig ({exc}); "
            "load it with the version that wrote it or retrain"
        ) from exc
    try:
        # The device is where the writer ran, not a property of the weights: not checked here.
        validate_policy_config(config, check_device=False)
    except TakeoverError as exc:
        raise CheckpointError(f"{source}: invalid policy config: {exc}") from exc
    return config


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, (*_PLAIN_SCALARS, torch.Tensor)):
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise CheckpointError(
                    f"checkpoint extra {where} has a key {k!r} of type {type(k).__name__}; use str"
                )
            _check_plain(v, f"{where}.{k}")
        return
    raise CheckpointError(
        f"checkpoint extra {where} is a {type(value).__name__}, which torch.load(weights_only=True) cannot read "
        "back; store str/int/float/bool/None, lists, dicts or torch tensors (e.g. arr.tolist())"
    )


def save_checkpoint(
    path: str | os.PathLike[str], model: nn.Module, config: PolicyConfig, extra: dict[str, Any] | None = None
) -> str:
    """Write weights, config and `extra` atomically to `path`; returns the file's sha256."""
    extra = dict(extra or {})
    _check_plain(extra, "extra")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_class": type(model).__name__,
        "config": config_to_dict(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    return file_sha256(target)


def _read_payload(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path} does not exist; check the path or train/promote a policy first"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file; give the path of a .pt checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, RuntimeError, ValueError, OSError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a torch file ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "restore it from the clip store / checkpoints table (compare its sha256) or retrain"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"checkpoint {path} is not a takeover policy checkpoint (format {found!r}, expected "
            f"{CHECKPOINT_FORMAT!r}); save policies with takeover.policy.checkpoint.save_checkpoint"
        )
    for key in ("model_class", "config", "state_dict", "extra"):
        if key not in payload:
            raise CheckpointError(f"checkpoint {path} lacks {key!r}; it was not written by save_checkpoint")
    return payload


def _architecture_diff(a: PolicyConfig, b: PolicyConfig) -> list[str]:
    da, db = config_to_dict(a), config_to_dict(b)
    diffs = []
    for section in ARCHITECTURE_SECTIONS:
        for key in sorted(set(da[section]) | set(db[section])):
            if da[section].get(key) != db[section].get(key):
                diffs.append(
                    f"{section}.{key}: checkpoint {da[section].get(key)!r} vs expected {db[section].get(key)!r}"
                )
    return diffs


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    expect: PolicyConfig | None = None,
) -> tuple[HybridPlanner, PolicyConfig, dict[str, Any]]:
    """Restore (model, config, extra). With `expect`, the checkpoint's network-defining sections
    (bev, model) must equal the expected ones, else CheckpointError lists the differences."""
    path = Path(path)
    payload = _read_payload(path, map_location)
    if payload["model_class"] != MODEL_CLASS:
        raise CheckpointError(
            f"checkpoint {path} holds a {payload['model_class']!r}, this loader builds {MODEL_CLASS!r}; "
            "load it with the policy class that saved it"
        )
    config = config_from_dict(payload["config"], source=f"checkpoint {path}")
    if expect is not None:
        diffs = _architecture_diff(config, expect)
        if diffs:
            raise CheckpointError(
                f"checkpoint {path} was trained for another network: {'; '.join(diffs)}; "
                "use a config matching the checkpoint or retrain"
            )
    model = build_model(config)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:400]
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit the network its config describes ({detail}); "
            "the file was edited or written by another model version; retrain or restore it"
        ) from exc
    model.to(map_location)
    return model, config, payload["extra"]
