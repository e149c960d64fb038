"""Train one Mobile VLA configuration without Ray, for debugging:

    python -m trainables.mobile_vla --config cfg.yaml [--set key=value ...] [--out DIR]

Without `data_dir` it trains on the demo episodes (generated once into the cache).
Flags, checkpoints and errors are the shared standalone CLI's (trainables/cli.py).
"""

from __future__ import annotations

from typing import Any

from trainables.cli import Setup, epoch_line, exit_with, standalone_main


def validation_figures(metrics: dict[str, Any]) -> list[str]:
    maes = [f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith("mae_")]
    return [f"dir_acc {metrics['direction_acc']:.3f}", *maes]


def format_metrics(metrics: dict[str, Any], max_epochs: int) -> str:
    return epoch_line(metrics, max_epochs, validation_figures)


def setup(config: dict[str, Any]) -> Setup:
    """Without data_dir: the demo episodes (bad keys fail before they are generated)."""
    from trainables.mobile_vla.task import demo_data
    from trainables.mobile_vla.trial_config import parse_config

    if "data_dir" not in config:
        parse_config({**config, "data_dir": "demo"})
        config, message = demo_data(config)
        print(f"no data_dir: {message}", flush=True)
    return Setup(config, None, parse_config(config).train.max_epochs)


def main(argv: list[str] | None = None) -> int:
    return standalone_main("mobile_vla", __doc__, setup, format_metrics, argv)


if __name__ == "__main__":
    exit_with(main())
