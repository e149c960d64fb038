"""Batches in which windows share frames.

With the post-history LSTM head a frame's feature depends only on (frame, instruction), and
overlapping windows of one episode share all but one frame. So an optimizer step is filled
from runs of whole episodes (episodes shuffled, every window once per epoch), cut into
micro-batches by the frames the backbone runs (what memory follows), and each micro-batch
runs every distinct frame once. `frame_dedup: false` runs every frame of every window
(the reference), `batch_grouping: window` samples windows iid as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from trainables.mobile_vla.batching_config import BatchingConfig
from trainables.mobile_vla.tokenizer import encode_instructions
from trainables.mobile_vla.windows import Windows
from trainables.training import BatchPlan, epoch_order

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from trainables.mobile_vla.dataset import MobileVLAData
    from trainables.mobile_vla.image_features import ImageFeatures


def grouped_order(episode: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """Window indices with whole episodes together, episodes shuffled by (seed, epoch)."""
    if len(episode) == 0:
        return np.zeros(0, dtype=np.int64)
    ids = np.unique(episode)
    rank = np.zeros(int(ids.max()) + 1, dtype=np.int64)
    rank[np.random.default_rng([seed, epoch]).permutation(ids)] = np.arange(len(ids))
    return np.argsort(rank[episode], kind="stable")


def window_order(windows: Windows, grouping: str, seed: int, epoch: int) -> np.ndarray:
    if grouping == "window":
        return epoch_order(len(windows), seed, epoch)
    return grouped_order(windows.episode, seed, epoch)


def backbone_rows(frames: np.ndarray, indices: np.ndarray, dedup: bool) -> int:
    """Frames the backbone runs for these windows (what memory follows): the distinct
    ones with dedup, every frame of every window without."""
    return len(np.unique(frames[indices])) if dedup else indices.size * frames.shape[1]


def split_by_frames(
    indices: np.ndarray, frames: np.ndarray, cap: int, dedup: bool
) -> list[np.ndarray]:
    """Consecutive runs of `indices` whose backbone frames (distinct ones with dedup, all
    window frames without) stay within `cap`."""
    parts: list[np.ndarray] = []
    current: list[int] = []
    seen: set[int] = set()
    for index in indices.tolist():
        row = frames[index].tolist()
        grown = seen.union(row) if dedup else set()
        size = len(grown) if dedup else (len(current) + 1) * len(row)
        if current and size > cap:
            parts.append(np.asarray(current, dtype=np.int64))
            current, grown = [], set(row) if dedup else set()
        current.append(index)
        seen = grown
    if current:
        parts.append(np.asarray(current, dtype=np.int64))
    return parts


def epoch_steps(
    windows: Windows,
    cfg: BatchingConfig,
    plan: BatchPlan,
    batch_size: int,
    cap: int,
    seed: int,
    epoch: int,
) -> Iterator[list[np.ndarray]]:
    """Per optimizer step, its micro-batches of window indices: a pure function of
    (seed, epoch), so a resumed run replays it. Every step has exactly batch_size windows;
    the epoch's last partial batch is dropped."""
    order = window_order(windows, cfg.batch_grouping, seed, epoch)
    for step in range(plan.steps_per_epoch):
        chunk = order[step * batch_size : (step + 1) * batch_size]
        yield split_by_frames(chunk, windows.frames, cap, cfg.frame_dedup)


class FrameBatches:
    """Window indices -> model inputs with one row per backbone frame.

    Rows are the distinct frames of the micro-batch (dedup) or every frame of every
    window; `windows` maps each window's positions to rows. With precomputed image
    features the rows carry image tokens instead of pixels.
    """

    def __init__(
        self,
        data: MobileVLAData,
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device,
        dedup: bool,
        features: ImageFeatures | None = None,
    ):
        self.data, self.device, self.dedup, self.features = data, device, dedup, features
        self.input_ids, self.attention_mask = encode_instructions(tokenizer, data.instructions)
        lengths = np.diff(data.episode_offsets)
        self.frame_episode = np.repeat(np.arange(len(lengths)), lengths)

    def __call__(self, windows: Windows, indices: np.ndarray) -> dict:
        frames = windows.frames[indices]
        if self.dedup:
            rows, local = np.unique(frames, return_inverse=True)
            local = local.reshape(frames.shape)
        else:
            rows = frames.reshape(-1)
            local = np.arange(rows.size).reshape(frames.shape)
        episodes = torch.from_numpy(self.frame_episode[rows])
        batch = {
            "windows": torch.from_numpy(np.ascontiguousarray(local, dtype=np.int64)),
            "input_ids": self.input_ids[episodes],
            "attention_mask": self.attention_mask[episodes],
            "target": torch.from_numpy(windows.chunks[indices]),
            "mask": torch.from_numpy(windows.mask[indices]),
        }
        if self.features is not None:
            batch["image_embeds"] = self.features.rows(rows)
        else:
            batch["pixels"] = torch.from_numpy(self.data.images[rows])
        moved = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        # Counted on the host, so the loop never waits on the device for them.
        moved["count"] = int(windows.mask[indices].sum()) * windows.chunks.shape[-1]
        moved["rows"] = int(rows.size)
        moved["indices"] = indices  # to rebuild halves of a micro-batch out of memory
        return moved


def predict(policy: torch.nn.Module, batch: dict) -> torch.Tensor:
    """The policy's action chunks for a FrameBatches micro-batch."""
    return policy.forward_frames(
        batch["windows"],
        batch["input_ids"],
        batch["attention_mask"],
        pixels=batch.get("pixels"),
        image_embeds=batch.get("image_embeds"),
    )
