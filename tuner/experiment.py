"""A validated space + options -> the Ray Tune pieces: param space, search, scheduler, names."""

from __future__ import annotations

import functools
import re
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from tuner.spaces import Distribution, Space

ABBREVIATIONS = {
    "learning_rate": "lr",
    "weight_decay": "wd",
    "batch_size": "bs",
    "warmup_ratio": "wu",
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "drop",
}


def short_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.0e}"
    return str(value)


def describe_config(config: dict[str, Any], searched: list[str]) -> str:
    """`lr=1e-04,wd=0,bs=128,wu=0.25`: readable trial names from the searched values."""
    return ",".join(f"{ABBREVIATIONS.get(k, k)}={short_value(config.get(k))}" for k in searched)


def trial_name(trial, searched: list[str]) -> str:
    return describe_config(trial.config, searched)


def trial_dirname(trial, searched: list[str]) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.=,-]", "_", describe_config(trial.config, searched))
    return f"{safe}_{trial.trial_id}"


def name_functions(searched: list[str]) -> tuple[Any, Any]:
    """Picklable (Ray stores them with the experiment for --resume)."""
    return (
        functools.partial(trial_name, searched=searched),
        functools.partial(trial_dirname, searched=searched),
    )


def _sampler(dist: Distribution, search: str) -> Any:
    if dist.kind == "values":
        return tune.grid_search(dist.args) if search == "grid" else tune.choice(dist.args)
    if dist.kind == "choice":
        return tune.choice(dist.args)
    if dist.kind == "uniform":
        return tune.uniform(*dist.args)
    if dist.kind == "loguniform":
        return tune.loguniform(*dist.args)
    low, high = dist.args
    return tune.randint(low, high + 1)  # the space file's bounds are inclusive


def param_space(space: Space, search: str, base: dict[str, Any]) -> dict[str, Any]:
    return {**base, **{k: _sampler(d, search) for k, d in space.params.items()}}


def searcher(
    search: str, metric: str, mode: str, max_concurrent: int | None, seed: int
) -> Searcher | None:
    if search != "optuna":
        return None  # grid and random: Tune's own variant generator
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    algo = OptunaSearch(metric=metric, mode=mode, sampler=TPESampler(seed=seed))
    # TPE learns from finished trials: bound how many run blind at once.
    return ConcurrencyLimiter(algo, max_concurrent=max_concurrent or 4)


def concurrency_limit(search_alg: Any, max_concurrent: int | None) -> int | None:
    """Tune's own limit on trials at once, unless the searcher carries one (`searcher`
    wraps Optuna in a ConcurrencyLimiter; given both, Tune warns that its own is ignored).
    A confirmation's point generator carries none: it gets --max-concurrent."""
    return None if isinstance(search_alg, ConcurrencyLimiter) else max_concurrent


def scheduler(kind: str, space: Space, max_t: int) -> TrialScheduler:
    if kind == "fifo":
        return FIFOScheduler()
    s = space.scheduler
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=max_t,
        grace_period=min(s.grace_period, max_t),
        reduction_factor=s.reduction_factor,
        brackets=1,
    )


def candidate_configs(space: Space, search: str, base: dict[str, Any]) -> list[dict[str, Any]]:
    """Configs to check before anything starts: every grid point, or for sampled spaces
    every choice and both bounds of each range (the others at their first value)."""
    if search == "grid":
        return [{**base, **point} for point in space.grid()]

    def values(dist: Distribution) -> list[Any]:
        return list(dist.args)  # choices, or [low, high] (randint bounds are inclusive)

    first = {k: values(d)[0] for k, d in space.params.items()}
    configs = []
    for key, dist in space.params.items():
        for value in values(dist):
            configs.append({**base, **first, key: value})
    return configs
