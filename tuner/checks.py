"""Checks on a sweep's input that run before any trial starts: each refuses with one line.

Everything here is a small pure function over values the tuner already holds (options,
the space, a config error, Ray's node list), so `tuner.run` stays the order of steps.
"""

from __future__ import annotations

import re
from typing import Any

from tuner.spaces import Distribution

# One folder name: letters and digits first, then the characters trial names use.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=,+-]*")
NAME_MAX = 200  # leaves room for Ray's trial folders under it (file names stop at 255)


class BadInput(Exception):
    """Input that cannot run; printed as one line, exit status 2."""


def check_name(name: str) -> None:
    """A sweep name is one folder under --storage-path: never a path out of it."""
    if not NAME.fullmatch(name) or len(name) > NAME_MAX:
        raise BadInput(
            f"--name {name!r}: expected one folder name (letters, digits and _ . = , + -, "
            f"starting with a letter, digit or _; at most {NAME_MAX} characters)"
        )


def pinned_note(key: str, value: Any, searched: Distribution) -> str:
    """Say that a --set took a key out of the search, and what the space would have tried."""
    if searched.kind == "values":
        count = len(searched.args)
        tried = f"{count} value{'s' if count != 1 else ''}"
    else:
        tried = searched.describe()
    return f"{key}={value} (pinned by --set; the space searched {tried})"


def config_error(message: str, sets: dict[str, Any], space: str) -> BadInput:
    """Name where a bad value came from: a --set of that key, else the space."""
    key = re.match(r"\w+", message)
    if key and key.group() in sets:
        return BadInput(f"--set {message}")
    return BadInput(f"{space}: {message}")


def check_validation(count: int, summary: str, metric: str, val_ratio: Any) -> None:
    """Every trial reports its metric after validating; with nothing to validate on, each
    would error after start-up instead."""
    if count == 0:
        raise BadInput(
            f"val_ratio={val_ratio} leaves no validation data ({summary}): the metric "
            f"'{metric}' would never be reported; use a val_ratio > 0 that leaves at least "
            f"one validation sample"
        )


def check_precision(base: dict[str, Any], gpus: float) -> None:
    """fp16 needs CUDA (its GradScaler): with no GPU per trial, every trial would fail at
    its start, one after another, instead of the sweep refusing once."""
    if base.get("precision") == "fp16" and not gpus:
        raise BadInput(
            "precision fp16 (RoboVLMs' 16-mixed) needs a CUDA device, and these trials get "
            "no GPU: use --set precision=auto (fp32 on a CPU, bf16 or fp16 on a GPU)"
        )


def _describe_node(node: dict[str, Any]) -> str:
    resources = node.get("Resources", {})
    where = node.get("NodeManagerAddress") or node.get("NodeID", "?")[:8]
    return f"{where}: {resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU"


def trial_resources(
    cpus: float | None, gpus: float | None, nodes: list[dict[str, Any]]
) -> tuple[float, float]:
    """(CPUs, GPUs) of one trial; refused when no node has both, since Ray would keep
    such a trial pending forever. Default: 1 CPU, and 1 GPU when the cluster has any.
    `nodes`: ray.nodes() entries, with the node types an autoscaler can add."""
    alive = [n for n in nodes if n.get("Alive")]
    have = [(n.get("Resources", {}).get("CPU", 0), n.get("Resources", {}).get("GPU", 0))
            for n in alive]  # fmt: skip
    gpu = gpus if gpus is not None else (1 if any(g for _, g in have) else 0)
    cpu = cpus or 1
    if any(c >= cpu and g >= gpu for c, g in have):
        return cpu, gpu
    asked = []
    if not any(g >= gpu for _, g in have):
        asked.append(f"--gpus-per-trial {gpu:g}")
    if not any(c >= cpu for c, _ in have):
        asked.append(f"--cpus-per-trial {cpu:g}")
    what = " and ".join(asked) or f"--cpus-per-trial {cpu:g} with --gpus-per-trial {gpu:g}"
    nodes_text = "; ".join(_describe_node(n) for n in alive) or "no live node"
    raise BadInput(f"{what}: no node of the cluster has that (the cluster has {nodes_text})")
