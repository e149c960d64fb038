"""A trial's flat config dict -> the config dataclasses of its parts.

Ray Tune and the search spaces speak flat dicts (`learning_rate`, `lora_r`, ...); each
part of a trainable keeps its own dataclass. `route` hands every key to each dataclass
that declares it (window_size is both a data and a model key), coerces values to the
declared types (YAML reads `1e-4` as a string), and names the key of anything wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, NoReturn

import yaml

TINY = "tiny"  # a task's small random model, built from its `tiny_*` keys


class ConfigError(ValueError):
    """A bad config key or value; the message names the key."""


def check_positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}: expected an integer >= 1, got {value!r}")


class ModelChoice:
    """What every task's model config shares: `model` names "tiny" or a checkout, and
    the config checks itself when built (a bad value fails as the key's ValueError)."""

    model: str

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        raise NotImplementedError

    @property
    def is_tiny(self) -> bool:
        return self.model == TINY


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line on stderr and exit 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_value(text: str) -> Any:
    """A `--set key=value` value, read as YAML (numbers, booleans, lists, strings)."""
    return yaml.safe_load(text)


def parse_assignments(items: list[str]) -> dict[str, Any]:
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got '{item}'")
        values[key.strip()] = parse_value(text)
    return values


def read_config(path: str | None, assignments: list[str]) -> dict[str, Any]:
    """A standalone run's flat config: a YAML file of key: value, then --set overrides."""
    config: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read config ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of key: value")
        config.update(loaded)
    config.update(parse_assignments(assignments))
    return config


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if hint is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise TypeError
            return int(float(value))
        if hint is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise TypeError
            return value
        if origin is tuple:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",")]
            inner = args[0] if args else Any
            return tuple(value if inner is Any else _coerce(key, v, inner) for v in value)
        if origin is dict:
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
    except (TypeError, ValueError):
        name = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"{key}: expected {name}, got {value!r}") from None
    return value


def route(flat: dict[str, Any], sections: dict[str, type]) -> dict[str, Any]:
    """Build one dataclass instance per section from the flat dict."""
    known: set[str] = set()
    built = {}
    for section, cls in sections.items():
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        known |= names
        kwargs = {k: _coerce(k, v, hints[k]) for k, v in flat.items() if k in names}
        try:
            built[section] = cls(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"{section}: {exc}") from None
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(f"unknown config key '{unknown[0]}'" + _suggest(unknown[0], known))
    return built


def _suggest(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def keys_of(*classes: type) -> list[str]:
    return sorted({f.name for cls in classes for f in dataclasses.fields(cls) if f.init})


def defaults_of(*classes: type) -> dict[str, Any]:
    """Each init key's default (the first class that declares the key wins)."""
    defaults: dict[str, Any] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if not f.init or f.name in defaults:
                continue
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory()
    return defaults
