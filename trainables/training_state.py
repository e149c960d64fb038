"""A trial's training state on disk: what a checkpoint holds beside the task's weights.

Optimizer, scheduler, scaler, every RNG and the position, in one file that loads with
`torch.load(weights_only=True)`: checkpoints live on shared storage, and whoever can write
there must not be able to run code in every trial.
"""

from __future__ import annotations

import json
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from trainables.training import Trainer, TrainingError

STATE_FILE = "training_state.pt"  # optimizer/scheduler/scaler + RNG + position
TRIAL_CONFIG_FILE = "trial_config.json"  # the flat config the trial ran with


def rng_state() -> dict:
    """Every RNG the loop draws from, as tensors and plain values only: the file must load
    with `torch.load(weights_only=True)`, which refuses numpy arrays (and any code)."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": {"version": version, "state": torch.tensor(internal), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)},
        "numpy_gauss": {"has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    python, numpy_state, gauss = state["python"], state["numpy"], state["numpy_gauss"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    keys = numpy_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy_state["pos"], gauss["has_gauss"], gauss["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(directory: Path, trainer: Trainer, epoch: int, flat: dict) -> None:
    """The part of a checkpoint every task shares: trainer state, RNG, epochs done, and
    the trial's flat config (what tuner.export reads)."""
    state = {"trainer": trainer.state_dict(), "rng": rng_state(), "epochs_done": epoch + 1}
    torch.save(state, directory / STATE_FILE)
    text = json.dumps(flat, indent=2, sort_keys=True, default=str)
    (directory / TRIAL_CONFIG_FILE).write_text(text)


def read_training_state(path: Path) -> dict:
    """The state file as tensors and plain values; never runs code from it.

    Checkpoints live on shared storage (NFS, S3): whoever can write there must not be
    able to run code in every trial, so anything but tensors and plain values is refused.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(exc))
        reason = found.group(1).split(". ")[0].rstrip(".") if found else "not loadable"
        raise TrainingError(
            f"{path}: refused: it holds more than tensors and plain values ({reason}); "
            "tampered with, or not written by this version of vla-tune"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise TrainingError(f"{path}: cannot read the training state ({exc})") from None


def load_training_state(directory: Path, trainer: Trainer) -> int:
    """Restore trainer state and RNG; returns the epochs already done."""
    state = read_training_state(directory / STATE_FILE)
    trainer.load_state_dict(state["trainer"])
    set_rng_state(state["rng"])
    return state["epochs_done"]
