"""The Ray Tune objects of a sweep: the trainable (resources, shared data) and the Tuner
(search, scheduler, storage, callbacks), new or restored from an interrupted sweep.

Ray is imported by the caller first (tuner.run starts it); nothing here starts anything.
"""

from __future__ import annotations

from typing import Any

from tuner import experiment
from tuner.prepare import Prepared
from tuner.storage import Storage


def make_trainable(prep: Prepared, data: Any, cpu: float, gpu: float) -> Any:
    """The task's train function as a Tune trainable; the data goes into the object store
    once (when every trial shares it) and each trial asks for `cpu` CPUs and `gpu` GPUs."""
    from ray import tune

    from trainables.tune_function import tune_function

    return tune.with_resources(
        tune.with_parameters(
            tune_function(prep.task.train), data=data if prep.share_data else None
        ),
        {"cpu": cpu, "gpu": gpu},
    )


def make_tuner(
    prep: Prepared,
    trainable: Any,
    storage: Storage,
    base: dict[str, Any],
    tracking: dict[str, Any],
    resume: bool,
) -> Any:
    """A Tuner over the space, or the interrupted one restored (its unfinished and
    errored trials go on from their last checkpoints)."""
    from ray import tune

    from tuner.live import LiveView
    from tuner.tracking import MLflowTrialCallback

    if resume:
        return tune.Tuner.restore(
            storage.experiment_uri,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            storage_filesystem=storage.filesystem,
        )
    space, opts = prep.space, prep.options
    name_fn, dirname_fn = experiment.name_functions(prep.searched)
    return tune.Tuner(
        trainable,
        param_space=experiment.param_space(space, prep.search, base),
        tune_config=tune.TuneConfig(
            metric=space.metric,
            mode=space.mode,
            num_samples=space.num_samples,
            search_alg=experiment.searcher(
                prep.search,
                space.metric,
                space.mode,
                opts.max_concurrent,
                int(base.get("seed", 0)),
            ),
            scheduler=experiment.scheduler(prep.scheduler, space, prep.max_t),
            max_concurrent_trials=opts.max_concurrent,
            reuse_actors=True,
            trial_name_creator=name_fn,
            trial_dirname_creator=dirname_fn,
        ),
        run_config=tune.RunConfig(
            name=storage.name,
            storage_path=storage.root_uri,
            storage_filesystem=storage.filesystem,
            failure_config=tune.FailureConfig(max_failures=2),
            # All, while it runs: tuner.storage says why and prunes after fit().
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            callbacks=[
                MLflowTrialCallback(tracking, space.metric, prep.max_t, name_fn, prep.searched),
                LiveView(space.metric, space.mode, space.num_trials(), prep.max_t, name_fn),
            ],
            verbose=0,
            log_to_file=True,
        ),
    )
