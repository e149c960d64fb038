"""The Ray Tune objects of a sweep: the trainable (resources, shared data) and the Tuner
of each phase (search, scheduler, storage, callbacks), new or restored from an
interrupted sweep.

Ray is imported by the caller first (tuner.run starts it); nothing here starts anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tuner import budget, experiment
from tuner.disk import human_bytes
from tuner.prepare import Prepared
from tuner.storage import KEEP_WHILE_RUNNING, Storage, checkpoint_disk, keep_latest_checkpoints


def make_trainable(prep: Prepared, data: Any, cpu: float, gpu: float) -> Any:
    """The task's train function as a Tune trainable; the data goes into the object store
    once (when every trial shares it) and each trial asks for `cpu` CPUs and `gpu` GPUs."""
    from ray import tune

    from trainables.tune_function import tune_function

    return tune.with_resources(
        tune.with_parameters(
            tune_function(prep.task.train, prep.task.name), data=data if prep.share_data else None
        ),
        {"cpu": cpu, "gpu": gpu},
    )


@dataclass
class Phase:
    """One Tuner of a sweep: the search, or the confirmation's planned runs."""

    name: str  # Ray's experiment folder
    storage_path: str  # the folder (or URI) it lives in
    param_space: dict[str, Any]
    search_alg: Any
    scheduler: Any
    num_samples: int
    varied: list[str]  # the keys that name a trial
    num_trials: int  # for the live view
    tag: str = "search"  # MLflow's vla_tune.phase
    time_budget_s: float | None = None  # Tune stops the phase after this long
    callbacks: list[Any] = field(default_factory=list)  # more Tune callbacks
    eta: Any = None  # tuner.eta.Eta for the live line


def fit(
    prep: Prepared,
    trainable: Any,
    storage: Storage,
    phase: Phase,
    tracking: dict[str, Any],
    resume: bool,
) -> Any:
    """Run the phase's Tuner (or finish the interrupted one: unfinished and errored trials
    go on from their last checkpoints), then keep each trial's latest checkpoint only."""
    from ray import tune

    from tuner.live import LiveView
    from tuner.tracking import MLflowTrialCallback

    # Ray forces a snapshot each time a trial has saved KEEP_WHILE_RUNNING checkpoints
    # since the last one (that is what keeps it naming a kept checkpoint) and warns that it
    # does so often when epochs are short: wanted here, so not worth a warning.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    uri = f"{phase.storage_path.rstrip('/')}/{phase.name}"
    fs = storage.filesystem
    if resume and tune.Tuner.can_restore(uri, storage_filesystem=fs):
        tuner = tune.Tuner.restore(
            uri, trainable=trainable, resume_unfinished=True, resume_errored=True,
            storage_filesystem=fs,
        )  # fmt: skip
        restored_settings(tuner, phase)
    else:
        metric, mode, max_t = prep.space.metric, prep.space.mode, prep.max_t
        name_fn, dirname_fn = experiment.name_functions(phase.varied)
        tuner = tune.Tuner(
            trainable,
            param_space=phase.param_space,
            tune_config=tune.TuneConfig(
                metric=metric,
                mode=mode,
                num_samples=phase.num_samples,
                search_alg=phase.search_alg,
                scheduler=phase.scheduler,
                max_concurrent_trials=experiment.concurrency_limit(
                    phase.search_alg, prep.options.max_concurrent
                ),
                reuse_actors=True,
                trial_name_creator=name_fn,
                trial_dirname_creator=dirname_fn,
            ),
            run_config=tune.RunConfig(
                name=phase.name,
                storage_path=phase.storage_path,
                storage_filesystem=fs,
                failure_config=tune.FailureConfig(max_failures=2),
                stop=budget.stopper(phase.time_budget_s),
                # The latest two per trial while it runs (tuner.storage says why two);
                # the latest one after, below.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_WHILE_RUNNING),
                callbacks=[
                    MLflowTrialCallback(tracking, metric, max_t, name_fn, prep.searched, phase.tag),
                    LiveView(metric, mode, phase.num_trials, max_t, name_fn, eta=phase.eta),
                    *phase.callbacks,
                ],
                verbose=0,
                log_to_file=True,
            ),
        )
    results = tuner.fit()
    keep_latest_checkpoints(results)
    count, size = checkpoint_disk(results)
    print(
        f"checkpoints ({phase.tag}): {count} kept, {human_bytes(size)} on disk "
        f"(the latest of each trial; at most {KEEP_WHILE_RUNNING} per trial while it ran)",
        flush=True,
    )
    return results


def restored_settings(tuner: Any, phase: Phase) -> None:
    """A restored Tuner keeps the budget and callbacks it was pickled with; a resumed
    sweep has its own (no budget unless given again). Ray has no public setter for these."""
    internal = tuner._local_tuner
    internal._tune_config.time_budget_s = None  # a sweep saved when Tune's own was used
    internal._run_config.stop = budget.stopper(phase.time_budget_s)
    kinds = {type(c) for c in phase.callbacks}
    kept = [c for c in internal._run_config.callbacks or [] if type(c) not in kinds]
    internal._run_config.callbacks = [*kept, *phase.callbacks]


def search_phase(prep: Prepared, storage: Storage, base: dict[str, Any]) -> Phase:
    """The sweep's search over its space."""
    space, search = prep.space, prep.space.search
    return Phase(
        name=storage.name,
        storage_path=storage.root_uri,
        param_space=experiment.param_space(space, search, base),
        search_alg=experiment.searcher(
            search,
            space.metric,
            space.mode,
            prep.options.max_concurrent,
            int(base.get("seed", 0)),
        ),
        scheduler=experiment.scheduler(prep.scheduler, space, prep.max_t),
        num_samples=space.num_samples,
        varied=prep.searched,
        num_trials=space.num_trials(),
    )
