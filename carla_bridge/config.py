"""Loading OmegaConf structured configs: dataclass schema (types, defaults) merged with conf/*.yaml."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

T = TypeVar("T")


def load_config(
    schema: type[T], name: str | None = None, overrides: list[str] | None = None, layers: Sequence[Any] = ()
) -> T:
    """Schema defaults <- conf/{name}.yaml (if it exists) <- `layers` (partial configs: mappings or
    DictConfigs, in order) <- dotlist overrides ("a.b=1"); typed object back."""
    cfg = OmegaConf.structured(schema)
    if name is not None:
        path = CONF_DIR / f"{name}.yaml"
        if path.exists():
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
    for layer in layers:
        cfg = OmegaConf.merge(cfg, layer)
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]
