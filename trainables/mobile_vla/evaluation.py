"""What a trained policy does along whole episodes: one-step-ahead predictions, their
error in the original units, and the direction it chose against the commanded one.

At frame t the policy sees frames max(0, t - window + 1)..t, as a robot running it would,
and its chunk's row 0 is its command for frame t (row k: for frame t + k).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainables.mobile_vla.dataset import MobileVLAData
from trainables.mobile_vla.inference import Policy
from trainables.mobile_vla.windows import DIRECTION_DEADBAND, direction_signs

DIRECTION_WORDS = {
    "linear_x": ("forward", "back"),
    "linear_y": ("left", "right"),
    "angular_z": ("turn-left", "turn-right"),
}


@dataclass
class EpisodeResult:
    name: str
    instruction: str
    commanded: np.ndarray  # (T, A) original units (clipped to the action bound)
    predicted: np.ndarray  # (T, fwd, A) original units


def run_episodes(policy: Policy, data: MobileVLAData, episodes: list[int]) -> list[EpisodeResult]:
    """The policy over the given episodes of a loaded dataset (frames at the model's size)."""
    results = []
    for e in episodes:
        start, stop = int(data.episode_offsets[e]), int(data.episode_offsets[e + 1])
        predicted = policy.predict_episode(data.images[start:stop], data.instructions[e])
        commanded = data.actions[start:stop] * np.float32(data.action_bound)
        results.append(
            EpisodeResult(data.episode_names[e], data.instructions[e], commanded, predicted)
        )
    return results


def class_names(action_names: tuple[str, ...]) -> list[str]:
    """Every direction class, "stop" first: one word per moving dim, joined by '+'."""
    names = []
    for signs in itertools.product((0, 1, -1), repeat=len(action_names)):
        names.append(direction_label(np.array(signs), action_names))
    return names


def direction_label(signs: np.ndarray, action_names: tuple[str, ...]) -> str:
    words = [
        DIRECTION_WORDS.get(name, (f"+{name}", f"-{name}"))[0 if s > 0 else 1]
        for name, s in zip(action_names, signs, strict=True)
        if s != 0
    ]
    return "+".join(words) or "stop"


def confusion(
    results: list[EpisodeResult], action_names: tuple[str, ...], bound: float
) -> tuple[list[str], np.ndarray]:
    """(classes that occur, counts[commanded, predicted]) over every frame."""
    labels = class_names(action_names)
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for r in results:
        commanded = direction_signs(r.commanded, bound)
        predicted = direction_signs(r.predicted[:, 0], bound)
        for c, p in zip(commanded, predicted, strict=True):
            counts[labels.index(direction_label(c, action_names)),
                   labels.index(direction_label(p, action_names))] += 1  # fmt: skip
    used = [i for i in range(len(labels)) if counts[i].any() or counts[:, i].any()]
    return [labels[i] for i in used], counts[np.ix_(used, used)]


@dataclass
class Baseline:
    """A policy that ignores the frames, fitted to the evaluated commands: each
    dimension's mean (for MAE) and the most frequent direction (for direction accuracy).
    A score no better than its baseline's is a flat policy's."""

    mean: np.ndarray  # (A,) original units
    direction: np.ndarray  # (A,) signs: the most frequent commanded direction

    @classmethod
    def fit(cls, commanded: np.ndarray, bound: float) -> Baseline:
        signs, counts = np.unique(direction_signs(commanded, bound), axis=0, return_counts=True)
        return cls(commanded.mean(axis=0), signs[int(np.argmax(counts))])


def scores(
    commanded: np.ndarray,
    predicted: np.ndarray,
    names: tuple[str, ...],
    bound: float,
    baseline: Baseline,
):
    """Per-dim MAE (original units) of row 0 and the per-element direction accuracy, each
    beside the baseline's."""
    now = predicted[:, 0]
    mae = np.abs(now - commanded).mean(axis=0)
    commanded_signs = direction_signs(commanded, bound)
    agree = direction_signs(now, bound) == commanded_signs
    return {
        "frames": len(commanded),
        "mae": {n: float(v) for n, v in zip(names, mae, strict=True)},
        "direction_acc": float(agree.mean()),
        "baseline": {
            "mae": {
                n: float(v)
                for n, v in zip(names, np.abs(commanded - baseline.mean).mean(axis=0), strict=True)
            },
            "direction_acc": float((commanded_signs == baseline.direction).mean()),
        },
    }


def summarize(
    results: list[EpisodeResult], action_names: tuple[str, ...], bound: float
) -> dict[str, Any]:
    """summary.json's numbers: per episode and over all frames of all episodes, each with
    the baseline fitted to all evaluated frames."""
    commanded = np.concatenate([r.commanded for r in results])
    baseline = Baseline.fit(commanded, bound)
    episodes = [
        {"episode": r.name, "instruction": r.instruction,
         **scores(r.commanded, r.predicted, action_names, bound, baseline)}
        for r in results
    ]  # fmt: skip
    overall = scores(
        commanded,
        np.concatenate([r.predicted for r in results]),
        action_names,
        bound,
        baseline,
    )
    return {
        "action_names": list(action_names),
        "action_bound": bound,
        "deadband": DIRECTION_DEADBAND * bound,
        "baseline": {
            "mean": {n: float(v) for n, v in zip(action_names, baseline.mean, strict=True)},
            "direction": direction_label(baseline.direction, action_names),
            "what": "predicting each dimension's mean (MAE) and always the most frequent "
            "direction (direction_acc), over the evaluated frames",
        },
        "overall": overall,
        "episodes": episodes,
    }


def table(summary: dict[str, Any]) -> str:
    """Scores per episode and overall, each with its baseline in parentheses."""
    names = summary["action_names"]
    headers = ["episode", "frames", *(f"mae_{n} (base)" for n in names), "dir_acc (base)"]

    def line(label: str, s: dict) -> list[str]:
        base = s["baseline"]
        return [label, str(s["frames"]),
                *(f"{s['mae'][n]:.4f} ({base['mae'][n]:.4f})" for n in names),
                f"{s['direction_acc']:.3f} ({base['direction_acc']:.3f})"]  # fmt: skip

    body = [line(e["episode"], e) for e in summary["episodes"]]
    body.append(line("overall", summary["overall"]))
    widths = [max(len(h), *(len(b[c]) for b in body)) for c, h in enumerate(headers)]
    rows = [headers, *body]
    text = "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows)
    base = summary["baseline"]
    means = ", ".join(f"{n} {v:.3f}" for n, v in base["mean"].items())
    return (
        f"{text}\n(base): a policy blind to the frames: each dimension's mean ({means}) and "
        f"always '{base['direction']}', the most frequent direction"
    )
