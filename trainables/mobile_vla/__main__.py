"""Train one configuration without Ray, for debugging:

    python -m trainables.mobile_vla --config cfg.yaml [--set key=value ...] [--out DIR]

Prints one line per epoch. Without `data_dir` it trains on the demo episodes (generated
once into the cache). --out keeps the latest checkpoint in DIR/checkpoint; --resume
continues from it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from trainables.config import ConfigError, read_config
from trainables.mobile_vla.dataset import DataError
from trainables.mobile_vla.demo_data import ensure_demo_episodes
from trainables.mobile_vla.trainable import train
from trainables.mobile_vla.trial_config import parse_config
from trainables.progress import format_rate
from trainables.training import TrainingError


def format_metrics(metrics: dict[str, Any], max_epochs: int) -> str:
    parts = [f"epoch {metrics['epoch']}/{max_epochs}", f"train_loss {metrics['train_loss']:.4f}"]
    if "val_loss" in metrics:
        parts.append(f"val_loss {metrics['val_loss']:.4f}")
        parts.append(f"dir_acc {metrics['direction_acc']:.3f}")
        parts += [f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith("mae_")]
    parts.append(f"lr {metrics['lr']:.2e}")
    parts.append(f"{format_rate(metrics['samples_per_s'])} samples/s")
    return "  ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainables.mobile_vla", description=__doc__)
    parser.add_argument("--config", help="YAML file of flat config keys")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="keep the latest checkpoint in OUT/checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    args = parser.parse_args(argv)
    if args.resume and not args.out:
        parser.error("--resume needs --out")

    try:
        config = read_config(args.config, args.set)
        if "data_dir" not in config:
            parse_config({**config, "data_dir": "demo"})  # bad keys fail before generating
            folder, created = ensure_demo_episodes()
            verb = "generated" if created else "using"
            print(f"no data_dir: {verb} demo episodes in {folder}", flush=True)
            config["data_dir"] = str(folder)
        keep = Path(args.out) / "checkpoint" if args.out else None
        resume = keep if args.resume and keep and keep.is_dir() else None
        max_epochs = config.get("max_epochs", 5)

        def report(metrics: dict[str, Any], checkpoint_dir: str) -> None:
            print(format_metrics(metrics, max_epochs), flush=True)
            if keep is not None:
                shutil.rmtree(keep, ignore_errors=True)
                shutil.copytree(checkpoint_dir, keep)

        train(config, report, checkpoint_dir=resume)
    except (ConfigError, DataError, TrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
