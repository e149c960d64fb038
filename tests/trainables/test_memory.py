"""A trial's memory is its own: its peak counts from its start, and what it built is
gone when it ends, also in a Ray worker reused for trial after trial."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

from trainables.memory import TrialMemory, resident_bytes
from trainables.mobile_vla.trainable import train

CPU = torch.device("cpu")
MB = 2**20


def touched(megabytes: int) -> np.ndarray:
    """An array whose pages are all resident (np.zeros alone maps them lazily)."""
    array = np.empty(megabytes * MB, dtype=np.uint8)
    array.fill(1)
    return array


def test_the_peak_counts_from_the_trials_start_not_the_process_life():
    before = touched(600)  # an earlier trial's peak in the same process
    del before
    start = resident_bytes() / MB
    with TrialMemory(CPU) as memory:
        block = touched(150)
        peak = memory.peak_mb()  # includes the resident size now: no sampling race
        del block
    assert start + 135 <= peak <= start + 300, (start, peak)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_peak_counts_from_the_trials_start_and_the_cache_goes_back():
    cuda = torch.device("cuda")
    before = torch.empty(256 * MB, dtype=torch.uint8, device=cuda)  # an earlier trial's peak
    del before  # freed, but kept in the allocator's cache
    in_use = torch.cuda.memory_allocated(cuda)
    with TrialMemory(cuda) as memory:
        block = torch.empty(64 * MB, dtype=torch.uint8, device=cuda)
        peak = memory.peak_mb()
        del block
    assert peak == pytest.approx(in_use / MB + 64, abs=1)
    cached = torch.cuda.memory_reserved(cuda) - torch.cuda.memory_allocated(cuda)
    assert cached < 256 * MB  # the earlier trial's block went back to the card


def test_a_failed_trial_does_not_keep_what_it_built():
    """The exception's traceback holds the failing frames and their locals (the model);
    TrialMemory clears them, so a worker does not keep a failed trial's model."""
    built = []

    def build_and_fail() -> None:
        model = torch.nn.Linear(256, 256)
        built.append(weakref.ref(model))
        raise RuntimeError("simulated failure after the build")

    with pytest.raises(RuntimeError, match="simulated failure") as failure:
        with TrialMemory(CPU):
            build_and_fail()
    assert failure.value.__traceback__ is not None
    assert built[0]() is None


SMALL, LARGE = 384, 1024  # tiny_hidden: the large backbone has ~7x the small one's weights


@pytest.mark.sweep
def test_each_trial_in_one_reused_worker_reports_its_own_peak(
    local_ray, demo_dir, demo_data, tmp_path
):
    """A small trial, a large one, a small one again, one after another in the same Ray
    actor: the last reports its own peak (not the large one's, not the worker's lifetime),
    within 10% of the first: nothing of earlier trials stays behind."""
    from ray import tune  # here: the CUDA test above runs where Ray is not installed

    from trainables.tune_function import tune_function

    order = [SMALL, LARGE, SMALL]
    trainable = tune.with_parameters(tune_function(train, "mobile_vla"), data=demo_data)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={
            "data_dir": str(demo_dir),
            "batch_size": 32,
            "max_epochs": 1,
            "torch_threads": 1,
            "tiny_hidden": tune.grid_search(order),
        },
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1),
        run_config=tune.RunConfig(
            name="reused_worker", storage_path=str(tmp_path / "results"), verbose=0
        ),
    )
    results = tuner.fit()
    assert not results.errors
    runs = sorted((r.metrics for r in results), key=lambda m: m["timestamp"])
    # The condition under test: these trials ran in this order in one worker process.
    assert [m["config"]["tiny_hidden"] for m in runs] == order
    assert len({m["pid"] for m in runs}) == 1
    first, large, *later = [m["peak_mem_mb"] for m in runs]
    print("peak_mem_mb per trial:", [round(m["peak_mem_mb"]) for m in runs])
    assert large > 1.3 * first  # the large trial's peak is visibly its own
    for peak in later:
        assert abs(peak - first) <= 0.1 * first, (first, large, later)
