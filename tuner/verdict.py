"""Is the best configuration really ahead? Seed statistics of the confirmed configurations.

Pure functions over numbers: no Ray, no MLflow. Each confirmed configuration has N runs
(seeds), each with the loss of every validation episode (the same episodes for every
run). For a configuration: its value per seed is the mean over the episodes; we report
the mean and the standard deviation over seeds. For the best against another: per seed,
the per-episode differences averaged over the episodes (pairing on the same episodes
cancels how hard each episode is), then a 95% t-interval over the seeds, so the interval
is as wide as the seed noise. An interval that holds 0 means: not separable.

Significance is not size: with agreeing seeds a difference of 0.01% of the loss is
"separable", and still no reason to prefer one configuration. So every difference is also
given relative to the best's mean, and one whose whole interval lies within the practical
threshold (`min_effect`, a fraction of the best's mean) reads "tied in practice".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_MIN_EFFECT = 0.01  # a difference under 1% of the metric does not matter in practice


def t95(df: int) -> float:
    """The two-sided 95% quantile of Student's t with `df` degrees of freedom."""
    if df < 1:
        return math.nan
    from scipy.stats import t  # here: scipy costs a second, only a verdict needs it

    return float(t.ppf(0.975, df))


@dataclass
class Runs:
    """One configuration's runs: the seed and the per-episode losses of each."""

    name: str
    seeds: list[int]
    episodes: list[list[float]]


@dataclass
class ConfigStats:
    name: str
    values: list[float]  # per seed: the mean over the validation episodes
    mean: float
    sd: float  # over seeds (n - 1); 0 for one seed

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass
class Comparison:
    """How far `other` is behind the best (positive: the best is ahead)."""

    other: str
    diff: float
    low: float
    high: float
    seeds: int
    scale: float = math.nan  # the best's mean: what relative differences divide by

    @property
    def separable(self) -> bool:
        return self.low > 0

    @property
    def relative(self) -> float:
        return self.diff / abs(self.scale) if self.scale else math.nan

    def negligible(self, min_effect: float) -> bool:
        """The whole interval is smaller than `min_effect` of the best's mean."""
        bound = min_effect * abs(self.scale)
        return bound > 0 and -bound < self.low and self.high < bound


def config_stats(runs: Runs) -> ConfigStats:
    values = [float(np.mean(e)) for e in runs.episodes]
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return ConfigStats(runs.name, values, float(np.mean(values)), sd)


def ranked(all_runs: list[Runs], mode: str) -> list[Runs]:
    """Best first, by the mean over seeds."""
    sign = 1 if mode == "min" else -1
    return sorted(all_runs, key=lambda r: sign * config_stats(r).mean)


def paired(best: Runs, other: Runs, mode: str) -> Comparison:
    """The paired difference over the seeds both have, and its 95% t-interval."""
    sign = 1 if mode == "min" else -1
    by_seed = dict(zip(other.seeds, other.episodes, strict=True))
    per_seed = []
    for seed, episodes in zip(best.seeds, best.episodes, strict=True):
        if seed in by_seed:
            if len(by_seed[seed]) != len(episodes):
                raise ValueError(
                    f"{best.name} and {other.name} were validated on different episodes"
                )
            diffs = sign * (np.asarray(by_seed[seed]) - np.asarray(episodes))
            per_seed.append(float(diffs.mean()))
    n, scale = len(per_seed), config_stats(best).mean
    if n == 0:
        return Comparison(other.name, math.nan, math.nan, math.nan, 0, scale)
    diff = float(np.mean(per_seed))
    if n == 1:
        return Comparison(other.name, diff, math.nan, math.nan, 1, scale)
    half = t95(n - 1) * float(np.std(per_seed, ddof=1)) / math.sqrt(n)
    return Comparison(other.name, diff, diff - half, diff + half, n, scale)


def number(value: float) -> str:
    """4 decimals, as the metric is shown, unless that would read 0.0000."""
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def percent(fraction: float) -> str:
    value = 100 * abs(fraction)
    return f"{value:.0f}%" if value >= 10 else f"{value:.2g}%"


def difference(c: Comparison) -> str:
    """`0.0110 (5.4%) [0.0060, 0.0160]`: the difference, relative to the best, interval."""
    text = f"{number(c.diff)} ({percent(c.relative)})"
    if not math.isnan(c.low):
        text += f" [{number(c.low)}, {number(c.high)}]"
    return text


def cannot_rank(all_runs: list[Runs]) -> bool:
    """Every run of every configuration has the same per-seed value (e.g. all 0.0)."""
    values = [v for r in all_runs for v in config_stats(r).values]
    return len(all_runs) > 1 and max(values) == min(values)


def verdict(
    all_runs: list[Runs], metric: str, mode: str, min_effect: float = DEFAULT_MIN_EFFECT
) -> str:
    """The one line: the best, its seed spread, and whether it beats the runner-up by
    more than seed noise (significance) and by more than `min_effect` (size)."""
    if not all_runs:
        return "no configuration to confirm"
    order = ranked(all_runs, mode)
    best = config_stats(order[0])
    if cannot_rank(all_runs):
        return (
            f"the metric cannot rank them: {len(all_runs)} configurations all at {metric} "
            f"{best.mean:.4f} on every seed"
        )
    line = f"best {best.name}: {metric} {best.mean:.4f} +- {best.sd:.4f} ({best.n} seeds)"
    if len(order) == 1:
        return line
    runner = paired(order[0], order[1], mode)
    if runner.negligible(min_effect):
        return (
            f"{line}; tied in practice with {runner.other}: the difference "
            f"({percent(runner.relative)}) is below {percent(min_effect)}"
        )
    if runner.separable:
        return f"{line}; ahead of {runner.other} by {difference(runner)}"
    return (
        f"{line}; not separable from {runner.other}: the difference "
        f"{number(runner.diff)} ({percent(runner.relative)}) is within seed noise"
    )


def search_tie(values: list[float], metric: str) -> str | None:
    """When the search's top trials end at exactly the same value, say so instead of
    naming an arbitrary one best."""
    finite = [v for v in values if not math.isnan(v)]
    if len(finite) < 2 or finite[0] != finite[1]:
        return None
    tied = sum(v == finite[0] for v in finite)
    return f"the metric cannot rank the top {tied} trials: all at {metric} {finite[0]:.4f}"
