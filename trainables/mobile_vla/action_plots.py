"""Pictures of what a policy does: commanded vs predicted actions, and a confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainables.mobile_vla.evaluation import EpisodeResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_episode(result: EpisodeResult, action_names: tuple[str, ...], path: Path) -> None:
    """One panel per action dim: the commanded value (steps), the one-step-ahead
    prediction (line), and each frame's further chunk steps (faint)."""
    plt = _pyplot()
    frames, fwd, _ = result.predicted.shape
    t = np.arange(frames)
    fig, axes = plt.subplots(len(action_names), 1, figsize=(9, 2.4 * len(action_names) + 0.8),
                             sharex=True, squeeze=False)  # fmt: skip
    for d, (ax, name) in enumerate(zip(axes[:, 0], action_names, strict=True)):
        for start in range(frames):
            steps = np.arange(start, min(start + fwd, frames))
            if len(steps) > 1:
                ax.plot(steps, result.predicted[start, : len(steps), d], color="tab:blue",
                        alpha=0.12, linewidth=1)  # fmt: skip
        ax.step(t, result.commanded[:, d], where="mid", color="black", label="commanded")
        ax.plot(t, result.predicted[:, 0, d], color="tab:blue", marker="o", markersize=3,
                label="predicted (next step)")  # fmt: skip
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_ylabel(name)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("frame")
    fig.suptitle(f"{result.name}\n{result.instruction!r}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(labels: list[str], counts: np.ndarray, path: Path) -> None:
    """Commanded direction (rows) vs predicted (columns), with counts in the cells."""
    plt = _pyplot()
    size = 2.5 + 0.7 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("commanded")
    top = counts.max() if counts.size else 0
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center",
                color="white" if n > top / 2 else "black", fontsize=8)  # fmt: skip
    total = counts.sum()
    accuracy = np.trace(counts) / total if total else float("nan")
    ax.set_title(f"direction: commanded vs predicted ({accuracy:.1%} of {total} frames agree)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
