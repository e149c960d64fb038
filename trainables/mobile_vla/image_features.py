"""Frozen image tokens, computed once per sweep instead of once per frame, window and trial.

When neither the vision tower nor the image-to-text connector trains (the default: LoRA on
the text tower), a frame's latent image tokens are a pure function of (frozen weights,
frame). They are computed in chunks before the trials, in the compute dtype, shared with
every trial like the decoded frames, and kept on disk keyed by a hash of those weights, the
frames and the dtype, so `--resume` and the next sweep on the same data and model reuse them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np
import torch

from trainables.cache import default_cache_dir, write_atomic
from trainables.mobile_vla.backbone import cast_frozen, is_lora_parameter
from trainables.mobile_vla.modeling_mobile_vla import IMAGE_SIDE, MobileVLAPolicy, build_policy
from trainables.progress import Progress
from trainables.training import autocast, resolve_device, resolve_precision

if TYPE_CHECKING:
    from trainables.mobile_vla.dataset import MobileVLAData
    from trainables.mobile_vla.trial_config import TrialConfig

CACHE_VERSION = 1
CHUNK_FRAMES = 64
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# numpy has no bfloat16: those values are kept as their 16-bit patterns.
_STORAGE = {torch.float32: np.float32, torch.bfloat16: np.uint16, torch.float16: np.float16}


@dataclass
class ImageFeatures:
    """(frames, image tokens, hidden) for every frame of a dataset, in the compute dtype."""

    values: np.ndarray
    dtype: str  # "fp32" | "bf16" | "fp16"
    weights_key: str  # hash of the frozen vision tower + connector + image statistics
    key: str  # weights_key + frames + dtype: the disk cache's name for it

    def __len__(self) -> int:
        return len(self.values)

    @property
    def megabytes(self) -> float:
        return self.values.nbytes / 2**20

    def rows(self, rows: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(self.values[rows]))
        return tensor.view(torch.bfloat16) if self.dtype == "bf16" else tensor


def weights_key(policy: MobileVLAPolicy) -> str:
    """Hash of everything that maps a frame to its image tokens. Take it before the frozen
    weights are cast to a low precision (the fp32 weights name the model)."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    state = policy.kosmos.state_dict()
    for name in sorted(state):
        if name.startswith(IMAGE_SIDE) and not is_lora_parameter(name):
            digest.update(name.encode())
            digest.update(_tensor_bytes(state[name]))
    digest.update(_tensor_bytes(policy.pixel_mean))
    digest.update(_tensor_bytes(policy.pixel_std))
    return digest.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's raw bytes as a view for `digest.update`: no second host copy of the
    vision tower's weights just to hash them."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy()


def features_key(weights: str, images: np.ndarray, dtype: str) -> str:
    digest = hashlib.sha256(f"{weights}:{dtype}:{images.shape}".encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


@torch.no_grad()
def compute_features(
    policy: MobileVLAPolicy,
    images: np.ndarray,
    precision: str,
    progress: bool = True,
    stream: TextIO | None = None,
) -> np.ndarray:
    """Image tokens of every frame, in chunks, as the trial's autocast computes them."""
    device = policy.pixel_mean.device
    dtype = DTYPES[precision]
    out: np.ndarray | None = None
    chunks = range(0, len(images), CHUNK_FRAMES)
    bar = Progress(
        "image features",
        len(chunks),
        stream=stream,
        every=max(1, -(-len(chunks) // 4)),  # a log gets about four lines
        enabled=progress,
        unit="chunks",
    )
    was_training = policy.training
    policy.eval()
    for start in chunks:
        pixels = torch.from_numpy(images[start : start + CHUNK_FRAMES]).to(device)
        with autocast(device, precision):
            tokens = policy.encode_images(pixels).to(dtype).cpu()
        if out is None:
            out = np.empty((len(images), *tokens.shape[1:]), dtype=_STORAGE[dtype])
        stored = tokens.view(torch.int16).numpy().view(np.uint16) if precision == "bf16" else tokens
        out[start : start + len(tokens)] = stored
        bar.update(len(tokens))
    policy.train(was_training)
    if out is None:
        raise ValueError("image features: the dataset has no frames")
    return out


class FeatureStore:
    """One `<key>.npy` per entry, written atomically; a damaged entry is a miss."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir() / "features"

    @classmethod
    def for_cache_dir(cls, cache_dir: str | None) -> FeatureStore:
        """Beside the decoded frames: inside a configured cache_dir, else the default."""
        return cls(Path(cache_dir) / "features" if cache_dir else None)

    def load(self, key: str, frames: int) -> np.ndarray | None:
        """The entry's features, or None: missing, or (with a warning) unreadable or not
        one row per frame, so the caller recomputes and rewrites it."""
        path = self.root / f"{key}.npy"
        try:
            values = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:
            warnings.warn(
                f"{path}: unreadable feature cache entry ({exc}); recomputing", stacklevel=2
            )
            return None
        if values.shape[:1] != (frames,):
            warnings.warn(
                f"{path}: feature cache entry has shape {values.shape}, not {frames} frames; "
                "recomputing",
                stacklevel=2,
            )
            return None
        return values

    def save(self, key: str, values: np.ndarray) -> None:
        write_atomic(self.root / f"{key}.npy", lambda f: np.save(f, values))


def load_or_compute(
    policy: MobileVLAPolicy,
    images: np.ndarray,
    precision: str,
    store: FeatureStore,
    weights: str,
    progress: bool = True,
    stream: TextIO | None = None,
) -> tuple[ImageFeatures, str]:
    """(features, "reused" | "computed in N s"). `policy` sits on its device, cast and in
    the precision the trials use; `weights` is its `weights_key`, taken before the cast."""
    key = features_key(weights, images, precision)
    values = store.load(key, len(images))
    if values is not None:
        return ImageFeatures(values, precision, weights, key), "reused"
    started = time.perf_counter()
    values = compute_features(policy, images, precision, progress=progress, stream=stream)
    seconds = time.perf_counter() - started
    store.save(key, values)
    return ImageFeatures(values, precision, weights, key), f"computed in {seconds:.1f} s"


def precompute_for_sweep(
    cfg: TrialConfig, data: MobileVLAData, device: str
) -> tuple[MobileVLAData, str]:
    """(data with the features attached, the line to print) before the trials start.

    Builds the policy as a trial does (same precision and cast) on `device`, the device
    the trials train on. No seed: the image side is pretrained weights or the tiny
    backbone's own fixed seed, whatever the trial's `seed`."""
    if not cfg.batching.feature_cache:
        return data, "image features: computed per step (feature_cache: false)"
    reason = cfg.model.image_side_trains()
    if reason:
        return data, f"image features: computed per step in each trial ({reason})"
    policy, _ = build_policy(cfg.model, data.instructions)
    weights = weights_key(policy)
    target = resolve_device(device)
    precision = resolve_precision(cfg.train.precision, target)
    policy.to(target)
    if precision != "fp32":
        cast_frozen(policy, DTYPES[precision])
    store = FeatureStore.for_cache_dir(cfg.data.cache_dir)
    features, how = load_or_compute(policy, data.images, precision, store, weights)
    del policy
    line = f"image features: {len(features)} frames, {features.megabytes:.1f} MB {precision}, {how}"
    return dataclasses.replace(data, image_features=features), line
