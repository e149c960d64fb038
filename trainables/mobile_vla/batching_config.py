"""How a Mobile VLA trial groups windows into micro-batches: the config and its frame cap.

Apart from frame_batches so the tuner can parse a trial's config without importing the
tokenizer (transformers).
"""

from __future__ import annotations

from dataclasses import dataclass

from trainables.training import BatchPlan, TrainingError

GROUPINGS = ("episode", "window")


@dataclass
class BatchingConfig:
    frame_dedup: bool = True  # run each distinct frame of a micro-batch once
    batch_grouping: str = "episode"  # "episode": steps from runs of episodes; "window": iid
    # Backbone frames per micro-batch (a resource choice); 0: micro_batch_size x window_size,
    # the frames one micro-batch of the per-window path runs.
    micro_batch_frames: int = 0
    # Compute the image tokens of every frame once when the vision side is frozen.
    feature_cache: bool = True

    def __post_init__(self) -> None:
        if self.batch_grouping not in GROUPINGS:
            raise ValueError(
                f"batch_grouping: {self.batch_grouping!r} not one of {list(GROUPINGS)}"
            )
        if self.micro_batch_frames < 0:
            raise ValueError(f"micro_batch_frames: must be >= 0, got {self.micro_batch_frames}")
        for key in ("frame_dedup", "feature_cache"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key}: expected true or false, got {getattr(self, key)!r}")


def frames_per_micro_batch(cfg: BatchingConfig, plan: BatchPlan, window_size: int) -> int:
    """The cap on backbone frames per micro-batch; one window must always fit."""
    cap = cfg.micro_batch_frames or plan.micro_batch_size * window_size
    if cap < window_size:
        raise TrainingError(
            f"micro_batch_frames: {cap} is below window_size {window_size}: "
            "one window would not fit in a micro-batch"
        )
    return cap
