"""Loading OmegaConf structured configs: dataclass schema (types, defaults) merged with conf/*.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

T = TypeVar("T")


def load_config(schema: type[T], name: str | None = None, overrides: list[str] | None = None) -> T:
    """Schema defaults <- conf/{name}.yaml (if it exists) <- dotlist overrides ("a.b=1"); typed object back."""
    cfg = OmegaConf.structured(schema)
    if name is not None:
        path = CONF_DIR / f"{name}.yaml"
        if path.exists():
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
    if overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]
