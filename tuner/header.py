"""What a sweep prints before it starts: the header (space, model, data, plan, where
results and MLflow go) and, for `--dry-run`, every trial's batch plan."""

from __future__ import annotations

from typing import Any

from tuner.experiment import describe_config
from tuner.prepare import Prepared
from tuner.storage import Storage

SCHEDULE_KEYS = ("steps_per_epoch", "warmup_steps", "total_steps")  # every task's plan has them


def print_header(prep: Prepared, storage: Storage, mlflow_uri: str) -> None:
    opts, space = prep.options, prep.space
    s = space.scheduler
    sched = (
        f"asha (max_t {prep.max_t}, grace {min(s.grace_period, prep.max_t)}, "
        f"reduction {s.reduction_factor:g})"
        if prep.scheduler == "asha"
        else "fifo (full budget)"
    )
    model = prep.base.get("model", "tiny")
    shown = ("data_dir", "data_path", "pattern", "model", "max_epochs")
    fixed = {k: v for k, v in prep.base.items() if k not in shown and k not in prep.searched}
    lines = [
        f"vla-tune sweep {storage.name}",
        f"  space      {space.name} ({space.path}): {space.num_trials()} trials, "
        f"{prep.space.search}, {sched}",
        f"  metric     {space.metric} ({space.mode})",
        f"  trainable  {space.trainable}",
        f"  model      {model}"
        + (" (random weights, built from a config)" if model == "tiny" else ""),
        f"  data       {prep.base.get('data_dir', prep.base.get('data_path', '-'))}"
        + (f"  pattern {prep.base['pattern']}" if "pattern" in prep.base else ""),
    ]
    if prep.data is not None:
        lines.append(f"             {prep.task.summary(prep.data)}")
    lines += [
        f"  epochs     {prep.base.get('max_epochs')} per trial",
        "  confirm    "
        + (
            f"top {prep.confirm.top} x {prep.confirm.seeds} seeds "
            f"({confirm_runs(prep)} more runs after the search; "
            f"a tie in practice below {prep.confirm.min_effect * 100:g}%)"
            if prep.confirm.top
            else "off (--confirm K to train the top K again with more seeds)"
        ),
        f"  fixed      {', '.join(f'{k}={v}' for k, v in sorted(fixed.items()))}",
        f"  results    {storage.experiment_uri}",
        f"  mlflow     {mlflow_uri} (experiment '{opts.experiment}')",
    ]
    if prep.ignored:
        lines.append(f"  ignored from {opts.from_robovlms}: {', '.join(prep.ignored)}")
    lines += [f"  note       {n}" for n in prep.notes]
    print("\n".join(lines), flush=True)
    for warning in prep.warnings:
        print(f"warning: {warning}", flush=True)


def print_dry_run(prep: Prepared) -> None:
    if prep.space.search == "grid":
        print(f"{len(prep.candidates)} trials:")
    else:
        print(
            f"{prep.space.num_trials()} trials sampled by {prep.space.search}; checked the bounds "
            f"and choices of each parameter:"
        )
    for config, plan in zip(prep.candidates, prep.plans, strict=True):
        print(
            f"  {describe_config(config, prep.searched):<40} {batching(plan)}, "
            f"{plan['steps_per_epoch']} steps/epoch, warmup {plan['warmup_steps']} steps"
        )


def batching(plan: dict[str, Any]) -> str:
    """How a trial splits its steps, in the plan's own keys (the task's: micro_batch_size
    and accumulation, or Mobile VLA's frames per micro-batch): what its params will say."""
    return ", ".join(f"{k}={v}" for k, v in plan.items() if k not in SCHEDULE_KEYS)


def confirm_runs(prep: Prepared) -> str:
    """How many confirmation runs: a range when ASHA may stop the configurations taken
    before the full budget (they then train every seed; tuner/confirm.py's `plan`)."""
    fewest = prep.confirm.runs(prep.confirm.top)
    all_full = prep.scheduler == "fifo" or prep.space.scheduler.grace_period >= prep.max_t
    most = fewest if all_full else prep.confirm.runs(0)
    return f"{fewest:.0f}" if most == fewest else f"{fewest:.0f}-{most:.0f}"
