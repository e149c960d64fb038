"""The standalone CLI every task shares: train one configuration without Ray.

    python -m trainables.<task> --config cfg.yaml [--set key=value ...] [--out DIR]

Prints one line per epoch. --out keeps the latest checkpoint in DIR/checkpoint; --resume
continues from it. Bad configuration, data or set-up: one line on stderr and exit 2.
A task's `__main__` supplies only what is its own: how its data is found (`setup`) and
how an epoch's metrics read (`format_metrics`).
"""

from __future__ import annotations

import argparse
import gc
import logging
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

from trainables.config import ConfigError, OneLineParser, read_config
from trainables.progress import format_rate


class Setup(NamedTuple):
    config: dict[str, Any]  # with the demo data filled in when none was named
    data: Any  # loaded data, or None: the trainable loads it
    max_epochs: int


def epoch_line(
    metrics: dict[str, Any], max_epochs: int, validation: Callable[[dict[str, Any]], list[str]]
) -> str:
    """One printed line per epoch: position, train loss, the task's validation figures
    (when the epoch has them), learning rate and throughput."""
    parts = [f"epoch {metrics['epoch']}/{max_epochs}", f"train_loss {metrics['train_loss']:.4f}"]
    if "val_loss" in metrics:
        parts += [f"val_loss {metrics['val_loss']:.4f}", *validation(metrics)]
    parts.append(f"lr {metrics['lr']:.2e}")
    parts.append(f"{format_rate(metrics['samples_per_s'])} samples/s")
    return "  ".join(parts)


def parse_args(prog: str, doc: str | None, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--config", help="YAML file of flat config keys")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="keep the latest checkpoint in OUT/checkpoint")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    args = parser.parse_args(argv)
    if args.resume and not args.out:
        parser.error("--resume needs --out")
    return args


def standalone_main(
    task_name: str,
    doc: str | None,
    setup: Callable[[dict[str, Any]], Setup],
    format_metrics: Callable[[dict[str, Any], int], str],
    argv: Sequence[str] | None = None,
) -> int:
    """`python -m trainables.<task_name>`: parse flags (before the task's imports, so a
    bad flag fails fast), let the task find its data (`setup`), then train."""
    args = parse_args(f"python -m trainables.{task_name}", doc, argv)
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    from trainables.task import get_task
    from trainables.training import TrainingError  # torch: not for the demo-data writers

    task = get_task(task_name)
    try:
        config, data, max_epochs = setup(read_config(args.config, args.set))
        keep = Path(args.out) / "checkpoint" if args.out else None
        resume = keep if args.resume and keep and keep.is_dir() else None

        def report(metrics: dict[str, Any], checkpoint_dir: str) -> None:
            print(format_metrics(metrics, max_epochs), flush=True)
            if keep is not None:
                shutil.rmtree(keep, ignore_errors=True)
                shutil.copytree(checkpoint_dir, keep)

        task.train(config, report, data=data, checkpoint_dir=resume)
    except (ConfigError, TrainingError, *task.data_errors) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def demo_data_parser(prog: str, description: str, out_help: str) -> OneLineParser:
    """The flags every demo-data writer takes (--out, --seed); a task adds its own."""
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data)")
    return parser


def write_or_fail(prog: str, write: Callable[[], str]) -> int:
    """Run a demo-data writer: its one-line summary and exit 0, or one error line and 2."""
    try:
        message = write()
    except (ValueError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print(message)
    return 0


def exit_with(code: int) -> NoReturn:
    """Exit a command line with `code`, without the interpreter's last garbage collection:
    it walks every object torch, transformers, Ray and MLflow made (2-3 s at every exit
    here) to free memory the process hands back anyway. At-exit handlers still run."""
    gc.freeze()
    sys.exit(code)
