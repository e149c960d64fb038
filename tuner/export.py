"""Export a sweep's best trial: `python -m tuner.export [--name NAME]`.

Writes OUT/config.json (the best configuration in the trainable's reference format; for
mobile_vla a RoboVLMs-style config with its train_setup block), OUT/trial_config.json
(the flat trial config) and copies the checkpoint's weights: the adapter (PEFT format) and
head, or for a trial without LoRA (a full fine-tune) the trained weights themselves.
`--merge` also writes the backbone with the adapter merged in (fp16), for deployment; without
LoRA there is nothing to merge and it writes the trained backbone in fp16 the same way.
`Policy.from_export(OUT)` (trainables.mobile_vla.inference) loads either form.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from trainables.cli import exit_with
from trainables.training_state import STATE_FILE, TRIAL_CONFIG_FILE
from tuner.checks import BadInput
from tuner.storage import BEST_FILE, SWEEP_FILE, find_best

EXPORT_RECORD = "export.json"  # which trainable the folder holds (tuner.evaluate --from)
# Everything a checkpoint holds except the optimizer/RNG state, which only resuming needs.
SKIPPED = {STATE_FILE, TRIAL_CONFIG_FILE}


def weight_entries(checkpoint: Path) -> list[Path]:
    """What a checkpoint holds of the model, whatever form it takes (a LoRA adapter folder,
    a full fine-tune's weights file, a head): everything but what only resuming needs."""
    return [p for p in sorted(checkpoint.iterdir()) if p.name not in SKIPPED]


def entries_bytes(entries: list[Path]) -> int:
    """The bytes of these files and folders (recursively)."""
    files = [f for e in entries for f in ([e] if e.is_file() else e.rglob("*")) if f.is_file()]
    return sum(f.stat().st_size for f in files)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (library messages often span several)."""
    return " ".join(str(exc).split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tuner.export", description=__doc__)
    parser.add_argument("--name", help="sweep name (default: the most recent sweep)")
    parser.add_argument("--storage-path", default="ray_results")
    parser.add_argument("--out", help="output folder (default exported/<sweep name>)")
    parser.add_argument(
        "--merge", action="store_true", help="also write the trained fp16 backbone + head"
    )
    parser.add_argument(
        "--devices",
        type=int,
        help="GPUs the reference trainer runs on: batch_size x accumulation x devices is the "
        "trial's batch (default: the --from-robovlms file's, else 1)",
    )
    args = parser.parse_args(argv)

    try:
        storage, best, checkpoint = find_best(args.storage_path, args.name, "export")
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from trainables.task import get_task

    task = get_task(best["trainable"])
    try:
        config = best["config"]
        if task.export_config:
            reference = (storage.read_json(SWEEP_FILE) or {}).get("robovlms")
            config = task.export_config(config, reference=reference, devices=args.devices)
    except (ValueError, OSError) as exc:  # e.g. a model folder this machine does not have
        print(f"error: {storage.experiment_uri}/{BEST_FILE}: {one_line(exc)}", file=sys.stderr)
        return 2
    try:
        writer = model_writer(task, best["config"], args.merge)
    except (ValueError, OSError) as exc:  # e.g. the tiny model's episodes are not here
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("exported") / storage.name)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    (out / TRIAL_CONFIG_FILE).write_text(json.dumps(best["config"], indent=2, default=str) + "\n")
    record = {"trainable": best["trainable"], "sweep": storage.name, "trial": best["trial"]}
    (out / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    copied = []
    for source in weight_entries(checkpoint):
        if source.is_dir():
            shutil.copytree(source, out / source.name, dirs_exist_ok=True)
        else:
            shutil.copy2(source, out / source.name)
        copied.append(source.name)
    extras = writer.write(out, args.merge) if writer else []
    print(f"best trial {best['trial']}: {best['metric']} {best['value']:.4f}")
    print(
        f"exported to {out}: config.json, {TRIAL_CONFIG_FILE}, {EXPORT_RECORD}, {', '.join(copied)}"
    )
    for line in extras:
        print(f"  {line}")
    return 0


def model_writer(task: Any, config: dict, merge: bool) -> Any:
    """The task's export extras (None when it has none); checked before writing."""
    if task.export_writer is None:
        if merge:
            raise ValueError(f"--merge: trainable {task.name} has no backbone to merge")
        return None
    return task.export_writer(config)


if __name__ == "__main__":
    exit_with(main())
