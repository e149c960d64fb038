"""Train one robot-code configuration without Ray, for debugging:

    python -m trainables.robot_code --config cfg.yaml [--set key=value ...] [--out DIR]

Prints one line per epoch. Without `data_path` it trains on the demo commands (generated
once into the cache). --out keeps the latest checkpoint in DIR/checkpoint; --resume
continues from it. Bad configuration, data or set-up: one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from trainables.config import ConfigError, read_config
from trainables.progress import format_rate
from trainables.training import TrainingError

PROG = "python -m trainables.robot_code"


def format_metrics(metrics: dict[str, Any], max_epochs: int) -> str:
    parts = [f"epoch {metrics['epoch']}/{max_epochs}", f"train_loss {metrics['train_loss']:.4f}"]
    if "val_loss" in metrics:
        parts.append(f"val_loss {metrics['val_loss']:.4f}")
        parts.append(f"exact_match {metrics['exact_match']:.3f}")
        parts.append(f"parse_rate {metrics['parse_rate']:.3f}")
    parts.append(f"lr {metrics['lr']:.2e}")
    parts.append(f"{format_rate(metrics['samples_per_s'])} samples/s")
    return "  ".join(parts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("--config", help="YAML file of flat config keys")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="keep the latest checkpoint in OUT/checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    args = parser.parse_args(argv)
    if args.resume and not args.out:
        parser.error("--resume needs --out")
    return args


def run(args: argparse.Namespace) -> None:
    # Imported here, in this order: a bad flag, config file or key fails after a torch
    # import (~3 s), before the seconds transformers and peft take.
    from trainables.robot_code.dataset import load_dataset
    from trainables.robot_code.trial_config import parse_config

    config = read_config(args.config, args.set)
    cfg = parse_config(config)  # bad keys fail before any data is read or generated
    if not cfg.data.data_path:
        print("no data_path: using the demo commands (generated once into the cache)", flush=True)
    data = load_dataset(cfg.data)
    print(
        f"data: {len(data.train)} training and {len(data.val)} validation records from "
        f"{data.source}",
        flush=True,
    )
    keep = Path(args.out) / "checkpoint" if args.out else None
    resume = keep if args.resume and keep and keep.is_dir() else None

    def report(metrics: dict[str, Any], checkpoint_dir: str) -> None:
        print(format_metrics(metrics, cfg.train.max_epochs), flush=True)
        if keep is not None:
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(checkpoint_dir, keep)

    from trainables.robot_code.trainable import train

    train(config, report, data=data, checkpoint_dir=resume)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    from trainables.robot_code.dataset import DataError

    try:
        run(args)
    except (ConfigError, DataError, TrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
