"""The live line's estimate of what is left of a sweep's phase (tuner/live.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuner.forecast import stop_epochs


@dataclass
class Eta:
    """The live line's estimate of what is left of a phase, from what it has measured so
    far: seconds per epoch (start-up included) over the trials' own times, and ASHA's
    pass rate at each rung from the decisions taken (the model's until a rung has seen
    `MIN_DECIDED` trials)."""

    rungs: list[int]
    pass_rate: dict[int, float]  # rung -> expected share that goes on (the model's)
    max_t: int
    total: int  # trials of the phase
    concurrency: int
    min_decided: int = 3

    @classmethod
    def for_phase(cls, prep: Any, concurrency: int) -> Eta:
        s = prep.space.scheduler
        grace, n = min(s.grace_period, prep.max_t), prep.space.num_trials()
        stops = stop_epochs(n, prep.scheduler, prep.max_t, grace, s.reduction_factor)
        arriving, rates = float(n), {}
        for epoch, stopped in stops[:-1]:
            rates[epoch] = 1 - stopped / arriving if arriving else 1.0
            arriving -= stopped
        return cls([e for e, _ in stops[:-1]], rates, prep.max_t, n, max(1, concurrency))

    def observed_rates(self, trials: list[tuple[str, int]]) -> dict[int, float]:
        """Per rung, the share of the trials decided there that went on: a trial past the
        rung went on; one that ended exactly at it was stopped."""
        rates = dict(self.pass_rate)
        for rung in self.rungs:
            went_on = sum(e > rung for _, e in trials)
            stopped = sum(status == "TERMINATED" and e == rung for status, e in trials)
            if went_on + stopped >= self.min_decided:
                rates[rung] = went_on / (went_on + stopped)
        return rates

    def epochs_left(self, epoch: int, rates: dict[int, float]) -> float:
        """Expected epochs still to run for a live trial at `epoch`."""
        left, alive, at = 0.0, 1.0, epoch
        for rung in [r for r in self.rungs if r > epoch] + [self.max_t]:
            left += alive * (rung - at)
            at = rung
            alive *= rates.get(rung, 1.0)  # past a rung it already passed: not again
        return left

    def left(self, trials: list[tuple[str, int, float]]) -> float | None:
        """Seconds left from (status, epochs done, seconds inside the trial) per trial;
        None before any epoch was measured."""
        done_epochs = sum(e for _, e, _ in trials)
        if not done_epochs:
            return None
        per_epoch = sum(s for _, _, s in trials) / done_epochs
        rates = self.observed_rates([(st, e) for st, e, _ in trials])
        live = [e for st, e, _ in trials if st not in ("TERMINATED", "ERROR")]
        unseen = max(0, self.total - len(trials))
        epochs = sum(self.epochs_left(e, rates) for e in live) + unseen * self.epochs_left(0, rates)
        slots = max(1, min(self.concurrency, len(live) + unseen))
        return epochs * per_epoch / slots
