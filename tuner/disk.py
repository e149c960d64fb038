"""How much disk a sweep's checkpoints take: estimated before it starts, measured after.

A checkpoint holds what trains (adapter, head) and the optimizer's state, so its size
follows the trainable parameters, not the model's. While a phase runs each trial keeps at
most its latest two (tuner/storage.py says why); once a phase ends, one.
"""

from __future__ import annotations

from typing import Any

from tuner.storage import KEEP_WHILE_RUNNING


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""  # unreachable: GB ends the loop


def peak_checkpoints(trials: int, confirm_runs: int) -> int:
    """The most checkpoints on storage at once: every search trial at its latest two when
    the search ends, or one each beside the confirmation's runs at two when it ends."""
    return max(KEEP_WHILE_RUNNING * trials, trials + KEEP_WHILE_RUNNING * confirm_runs)


def estimate_note(task: Any, config: dict, data: Any, trials: int, confirm_runs: int) -> str | None:
    """The header's line on disk, or None when the task cannot size its checkpoints."""
    if task.checkpoint_bytes is None or data is None:
        return None
    each = task.checkpoint_bytes(config, data)
    peak, kept = peak_checkpoints(trials, confirm_runs), trials + confirm_runs
    return (
        f"checkpoints: ~{human_bytes(each)} each (trainable weights and optimizer state); "
        f"up to {peak} at once, ~{human_bytes(peak * each)} (at most {KEEP_WHILE_RUNNING} "
        f"per trial while a phase runs), {kept} kept after: ~{human_bytes(kept * each)}"
    )
