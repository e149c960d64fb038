"""Train one robot-code configuration without Ray, for debugging:

    python -m trainables.robot_code --config cfg.yaml [--set key=value ...] [--out DIR]

Without `data_path` it trains on the demo commands (generated once into the cache).
The records are loaded here, once, and said what they are before training starts.
Flags, checkpoints and errors are the shared standalone CLI's (trainables/cli.py).
"""

from __future__ import annotations

from typing import Any

from trainables.cli import Setup, epoch_line, exit_with, standalone_main


def format_metrics(metrics: dict[str, Any], max_epochs: int) -> str:
    def figures(m: dict[str, Any]) -> list[str]:
        return [f"exact_match {m['exact_match']:.3f}", f"parse_rate {m['parse_rate']:.3f}"]

    return epoch_line(metrics, max_epochs, figures)


def setup(config: dict[str, Any]) -> Setup:
    """Parse (bad keys fail before any data is read or generated), then load."""
    from trainables.robot_code.dataset import load_dataset
    from trainables.robot_code.trial_config import parse_config

    cfg = parse_config(config)
    if not cfg.data.data_path:
        print("no data_path: using the demo commands (generated once into the cache)", flush=True)
    data = load_dataset(cfg.data)
    print(
        f"data: {len(data.train)} training and {len(data.val)} validation records from "
        f"{data.source}",
        flush=True,
    )
    return Setup(config, data, cfg.train.max_epochs)


def main(argv: list[str] | None = None) -> int:
    return standalone_main("robot_code", __doc__, setup, format_metrics, argv)


if __name__ == "__main__":
    exit_with(main())
