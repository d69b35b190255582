"""Training configs: a dataclass per script, filled from defaults <- a YAML/JSON file <- key=value overrides."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def _coerce(value: str, like: Any, key: str) -> Any:
    if isinstance(like, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"override {key}={value}: expected a boolean (true/false)")
    if isinstance(like, int) and not isinstance(like, bool):
        return int(value)
    if isinstance(like, float):
        return float(value)
    if isinstance(like, (list, tuple, dict)) or like is None:
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ValueError(f"override {key}={value}: not valid YAML ({e})") from e
    return value


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """defaults of ``cls`` <- YAML/JSON file <- ``key=value`` strings (types follow the defaults)."""
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: config file not found")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{p}: config must be a mapping of keys to values")
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{p}: unknown config keys {sorted(unknown)}; valid keys: {sorted(names)}")
        values.update(data)
    base = cls(**values)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        if key not in names:
            raise ValueError(f"override {key!r}: unknown key; valid keys: {sorted(names)}")
        values[key] = _coerce(raw, getattr(base, key), key)
    return cls(**values)


def config_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
