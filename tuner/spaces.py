"""Search spaces: one YAML file per named space, loaded safely and validated.

    python -m tuner.spaces            # list the shipped spaces
    python -m tuner.spaces NAME|FILE  # show one, with its trial count

A space names its trainable, metric and mode, its search algorithm (grid, random or
optuna), its parameters, fixed overrides and its scheduler. Anything wrong is one
`SpaceError` whose message names the file and the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import search_spaces
from tuner.verdict import DEFAULT_MIN_EFFECT

SPACES_DIR = Path(search_spaces.__file__).resolve().parent  # shipped as package data
SEARCHES = ("grid", "random", "optuna")
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
TOP_KEYS = {
    "description", "trainable", "metric", "mode", "search", "num_samples", "params",
    "fixed", "scheduler", "confirm", "time_budget",
}  # fmt: skip
SCHEDULER_KEYS = {"type", "max_t", "grace_period", "reduction_factor"}
CONFIRM_KEYS = {"top", "seeds", "min_effect"}
FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class SpaceError(ValueError):
    """A bad space file or name; the message names the file and key."""


@dataclass
class Distribution:
    """One searched parameter: a list of values, or a named distribution."""

    kind: str  # "values" | one of DISTRIBUTIONS
    args: list[Any]

    def describe(self) -> str:
        if self.kind == "values":
            return ", ".join(str(v) for v in self.args)
        return f"{self.kind}({', '.join(str(a) for a in self.args)})"


@dataclass
class SchedulerSpec:
    type: str = "asha"  # "asha" | "fifo"
    max_t: int | None = None  # None: the trial's max_epochs
    grace_period: int = 1
    reduction_factor: float = 3.0


@dataclass
class ConfirmSpec:
    """After the search, the `top` configurations get `seeds` runs each (the search's
    run counts as one). top 0: no confirmation, the default."""

    top: int = 0
    seeds: int = 3
    # a difference whose whole interval is under this fraction of the best's mean is a
    # tie in practice, however well the seeds agree (tuner/verdict.py)
    min_effect: float = DEFAULT_MIN_EFFECT

    def runs(self, reached_full: float) -> float:
        """Runs after the search (tuner/confirm.py's `plan`): a configuration whose search
        trial trained the full budget counts that run as one seed, one stopped early
        gets all of them. `reached_full`: search trials at the full budget (expected)."""
        if not self.top:
            return 0.0
        return self.top * self.seeds - min(self.top, reached_full)


@dataclass
class Space:
    name: str
    path: Path
    trainable: str
    metric: str
    mode: str
    search: str
    params: dict[str, Distribution]
    fixed: dict[str, Any] = field(default_factory=dict)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    num_samples: int = 1
    description: str = ""
    confirm: ConfirmSpec = field(default_factory=ConfirmSpec)
    time_budget: float | None = None  # seconds; --time-budget wins

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of a grid space, in file order."""
        names = list(self.params)
        values = [self.params[n].args for n in names]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]

    def num_trials(self) -> int:
        if self.search == "grid":
            return math.prod(len(d.args) for d in self.params.values()) * self.num_samples
        return self.num_samples


def available() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SPACES_DIR.glob("*.yaml"))}


def resolve(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SpaceError(f"{path}: no such space file")
        return path
    spaces = available()
    if name_or_path not in spaces:
        raise SpaceError(
            f"unknown space '{name_or_path}' (known: {', '.join(spaces)}; or give a .yaml path)"
        )
    return spaces[name_or_path]


def _number(value: Any) -> Any:
    """YAML 1.1 reads `1e-4` as a string; a space file means the number."""
    if isinstance(value, str) and FLOAT_TEXT.match(value.strip()):
        return float(value)
    return value


def _distribution(where: str, spec: Any, search: str) -> Distribution:
    if isinstance(spec, list):
        if not spec:
            raise SpaceError(f"{where}: empty list of values")
        return Distribution("values", [_number(v) for v in spec])
    if not isinstance(spec, dict) or len(spec) != 1:
        raise SpaceError(
            f"{where}: expected a list of values or one of {{{', '.join(DISTRIBUTIONS)}: ...}}"
        )
    kind, args = next(iter(spec.items()))
    if kind not in DISTRIBUTIONS:
        raise SpaceError(f"{where}: unknown distribution '{kind}' (known: {DISTRIBUTIONS})")
    if search == "grid":
        raise SpaceError(f"{where}: a grid search takes lists of values, not '{kind}'")
    if not isinstance(args, list) or not args:
        raise SpaceError(f"{where}.{kind}: expected a list")
    args = [_number(a) for a in args]
    if kind == "choice":
        return Distribution(kind, args)
    if len(args) != 2 or not all(isinstance(a, (int, float)) for a in args):
        raise SpaceError(f"{where}.{kind}: expected [low, high], got {args}")
    low, high = args
    if not low < high:
        raise SpaceError(f"{where}.{kind}: low {low} must be below high {high}")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{where}.{kind}: bounds must be > 0, got {args}")
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise SpaceError(f"{where}.{kind}: bounds must be integers, got {args}")
    return Distribution(kind, args)


def _known_keys(where: str, spec: Any, known: set[str] | frozenset[str], shape: str) -> dict:
    """`spec` as a mapping whose every key is known, else the error naming file and key."""
    if not isinstance(spec, dict):
        raise SpaceError(f"{where}: expected {shape}")
    unknown = sorted(set(spec) - set(known))
    if unknown:
        raise SpaceError(f"{where}.{unknown[0]}: unknown key (known: {sorted(known)})")
    return spec


def _scheduler(where: str, spec: Any) -> SchedulerSpec:
    if spec is None:
        return SchedulerSpec()
    if isinstance(spec, str):
        spec = {"type": spec}
    sched = SchedulerSpec(**_known_keys(where, spec, SCHEDULER_KEYS, "a mapping"))
    if sched.type not in ("asha", "fifo"):
        raise SpaceError(f"{where}.type: expected asha or fifo, got {sched.type!r}")
    for key in ("max_t", "grace_period"):
        value = getattr(sched, key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise SpaceError(f"{where}.{key}: expected an integer >= 1, got {value!r}")
    if not isinstance(sched.reduction_factor, (int, float)) or sched.reduction_factor <= 1:
        raise SpaceError(f"{where}.reduction_factor: must be > 1, got {sched.reduction_factor!r}")
    return sched


def _confirm(where: str, spec: Any) -> ConfirmSpec:
    if spec is None:
        return ConfirmSpec()
    confirm = ConfirmSpec(
        **_known_keys(where, spec, CONFIRM_KEYS, "a mapping like {top: 3, seeds: 3}")
    )
    for key, least in (("top", 0), ("seeds", 2)):
        value = getattr(confirm, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise SpaceError(f"{where}.{key}: expected an integer >= {least}, got {value!r}")
    check_min_effect(f"{where}.min_effect", confirm.min_effect)
    return confirm


def check_min_effect(where: str, value: Any) -> None:
    """A fraction of the metric: 0 (off) up to, not including, 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise SpaceError(f"{where}: expected a fraction of the metric in [0, 1), got {value!r}")


def load_space(name_or_path: str) -> Space:
    path = resolve(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise SpaceError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise SpaceError(f"{path}: unknown key '{unknown[0]}' (known: {sorted(TOP_KEYS)})")
    for key in ("trainable", "metric", "params"):
        if key not in raw:
            raise SpaceError(f"{path}: missing key '{key}'")

    search = raw.get("search", "grid")
    if search not in SEARCHES:
        raise SpaceError(f"{path}: search: expected one of {SEARCHES}, got {search!r}")
    mode = raw.get("mode", "min")
    if mode not in ("min", "max"):
        raise SpaceError(f"{path}: mode: expected min or max, got {mode!r}")
    if not isinstance(raw["params"], dict) or not raw["params"]:
        raise SpaceError(f"{path}: params: expected a non-empty mapping")
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise SpaceError(f"{path}: fixed: expected a mapping")
    both = sorted(set(fixed) & set(raw["params"]))
    if both:
        raise SpaceError(f"{path}: fixed.{both[0]}: also searched in params")
    num_samples = raw.get("num_samples", 1 if search == "grid" else 10)
    if not isinstance(num_samples, int) or num_samples < 1:
        raise SpaceError(f"{path}: num_samples: expected an integer >= 1, got {num_samples!r}")

    return Space(
        name=path.stem,
        path=path,
        trainable=str(raw["trainable"]),
        metric=str(raw["metric"]),
        mode=mode,
        search=search,
        params={
            k: _distribution(f"{path}: params.{k}", v, search) for k, v in raw["params"].items()
        },
        fixed={k: _number(v) for k, v in fixed.items()},
        scheduler=_scheduler(f"{path}: scheduler", raw.get("scheduler")),
        num_samples=num_samples,
        description=str(raw.get("description", "")),
        confirm=_confirm(f"{path}: confirm", raw.get("confirm")),
        time_budget=_time_budget(f"{path}: time_budget", raw.get("time_budget")),
    )


def _time_budget(where: str, spec: Any) -> float | None:
    if spec is None:
        return None
    from tuner.budget import parse_duration

    try:
        return parse_duration(str(spec))
    except ValueError as exc:
        raise SpaceError(f"{where}: {exc}") from None


def check_keys(space: Space, known: list[str]) -> None:
    """Every params/fixed key must be a config key of the trainable."""
    for section, keys in (("params", space.params), ("fixed", space.fixed)):
        for key in keys:
            if key not in known:
                raise SpaceError(
                    f"{space.path}: {section}.{key}: not a config key of '{space.trainable}'"
                )


def pin(space: Space, values: dict[str, Any]) -> tuple[Space, dict[str, Distribution]]:
    """Take keys given a value (`--set`) out of the search: a value the user chose wins
    over the space, and a grid then has one dimension less. Returns the pinned ones."""
    pinned = {k: d for k, d in space.params.items() if k in values}
    params = {k: d for k, d in space.params.items() if k not in values}
    return dataclasses.replace(space, params=params), pinned


def show(space: Space) -> str:
    lines = [
        f"{space.name}: {space.description}",
        f"  file       {space.path}",
        f"  trainable  {space.trainable}   metric {space.metric} ({space.mode})",
        f"  search     {space.search}, {space.num_trials()} trials",
    ]
    lines += [f"  param      {k}: {d.describe()}" for k, d in space.params.items()]
    lines += [f"  fixed      {k}: {v}" for k, v in space.fixed.items()]
    s = space.scheduler
    if s.type == "asha":
        lines.append(
            f"  scheduler  asha (max_t {s.max_t or 'max_epochs'}, grace {s.grace_period}, "
            f"reduction {s.reduction_factor:g})"
        )
    else:
        lines.append("  scheduler  fifo (every trial runs its full budget)")
    if space.confirm.top:
        lines.append(f"  confirm    top {space.confirm.top}, {space.confirm.seeds} seeds each")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuner.spaces", description=__doc__)
    parser.add_argument("space", nargs="?", help="a space name or a .yaml path")
    args = parser.parse_args(argv)
    try:
        if args.space:
            print(show(load_space(args.space)))
            return 0
        for name in available():
            space = load_space(name)
            print(f"{name:<18} {space.num_trials():>4} trials  {space.description}")
    except SpaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
