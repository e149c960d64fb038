"""A packed trial as Ray Tune sees it: a thin client of a pack actor.

Each configuration stays its own Tune trial (its scheduler and searcher decide, its results
row, checkpoints and MLflow run are its own); only its training happens in a pack on its
node (trainables/packing/actor.py). The client takes a place from the sweep's directory,
joins with its config and Tune checkpoint, then per epoch asks the pack for the epoch and
reports it with its checkpoint, like trainables/tune_function.py does for a trial that
trains itself. A trial ASHA stops ends inside `tune.report`; it then leaves the pack, so a
pending trial takes its place. A trial whose process dies stops renewing its lease and the
pack frees its place. A member that fails (an error, a NaN loss) fails its trial alone, and
Tune's FailureConfig retries it from its checkpoint in a pack again.

This module imports Ray only: the client never loads torch (the pack does).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from typing import Any

from trainables.packing.actor import (
    RENEW_S,
    ROUND_TIMEOUT_S,
    START_TIMEOUT_S,
    Group,
    PackTimeout,
)
from trainables.tune_function import hold_after_report

EPOCH_MARGIN_S = 60.0  # beyond the pack's own bound, so that its clear error comes first


class PackedTrialError(RuntimeError):
    """The trial's member failed in its pack (or the pack did)."""


class Lease:
    """Renews the member's place every RENEW_S seconds while the trial's process lives."""

    def __init__(self, pack: Any, key: str) -> None:
        self.pack, self.key = pack, key
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._renew, name="pack-lease", daemon=True)
        self.thread.start()

    def _renew(self) -> None:
        while not self.stopped.wait(RENEW_S):
            self.pack.renew.remote(self.key)  # the answer is not needed: fire and forget

    def stop(self) -> None:
        self.stopped.set()


def answer(ref: Any, bound_s: float, what: str) -> Any:
    """The pack's (or directory's) answer; a clear error past its bound (the actor's own
    bound comes first, by EPOCH_MARGIN_S) or when the actor died."""
    import ray
    from ray.exceptions import GetTimeoutError

    try:
        return ray.get(ref, timeout=bound_s + EPOCH_MARGIN_S)
    except GetTimeoutError:
        raise PackTimeout(f"{what}: no answer in {bound_s + EPOCH_MARGIN_S:.0f} s") from None


def my_group() -> Group:
    """This trial's node, and on a GPU the card Ray gave it (the pack must use that one)."""
    import ray

    context = ray.get_runtime_context()
    cards = os.environ.get("CUDA_VISIBLE_DEVICES") if ray.get_gpu_ids() else None
    return Group(context.get_node_id(), ray.util.get_node_ip_address(), cards)


def packed_function(directory: Any, task: str) -> Callable[..., None]:
    """The thin-client trial of a sweep whose packs `directory` (an actor) hands out,
    named `<task>_packed_trial` in Ray."""

    def trial(config: dict[str, Any]) -> None:
        from ray import tune

        key = f"{tune.get_context().get_trial_id()}-{uuid.uuid4().hex[:8]}"  # one per run
        where = directory.place.remote(key, my_group())
        pack, label = answer(where, START_TIMEOUT_S, "a place in a pack")
        lease = Lease(pack, key)
        try:
            join(pack, key, config, tune.get_checkpoint())
            train(pack, key, label)
        finally:
            # Not waited for: Tune gives a stopped trial's thread 2 s to end before it
            # reuses the actor; the call still arrives (and the lease frees it anyway).
            lease.stop()
            pack.leave.remote(key)

    trial.__name__ = f"{task}_packed_trial"
    return trial


def join(pack: Any, key: str, config: dict[str, Any], checkpoint: Any) -> None:
    """Join with the trial's checkpoint (kept on disk until the pack has restored it)."""
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as directory:
        error = answer(pack.join.remote(key, config, directory), ROUND_TIMEOUT_S, "joining")
    if error:
        raise PackedTrialError(f"joining a pack: {error}")


def train(pack: Any, key: str, label: str) -> None:
    """Epoch after epoch until the member finished (or Tune stops the trial in report)."""
    from ray import tune

    reports = 0
    while True:
        result = answer(pack.epoch.remote(key), ROUND_TIMEOUT_S, f"an epoch in pack {label}")
        if result["error"]:
            raise PackedTrialError(f"in pack {label}: {result['error']}")
        directory = result["checkpoint_dir"]
        try:
            metrics = {**result["metrics"], "pack": label}
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        finally:
            shutil.rmtree(directory, ignore_errors=True)  # persisted by the report
        reports += 1
        hold_after_report(reports)
        if result["finished"]:
            return
