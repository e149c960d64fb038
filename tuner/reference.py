"""`--from-robovlms CONFIG.json`: the team's RoboVLMs config as a layer of a sweep's base.

Precedence, lowest first: the trainable's defaults < the space's `fixed` < the file <
`--set` < the CLI options (--model, --data-dir, --max-epochs). The merged file is saved
with the sweep's options, so --resume and the export need not find it again.
"""

from __future__ import annotations

from typing import Any

from tuner.checks import BadInput


def cli_layer(opts: Any, task: Any) -> dict[str, Any]:
    """The values the CLI options give (they win over the file and --set)."""
    values = {key: getattr(opts, o) for o, key in task.cli_keys.items() if getattr(opts, o)}
    if opts.max_epochs:
        values["max_epochs"] = opts.max_epochs
    return values


def robovlms_layer(
    opts: Any, task: Any, fixed: dict[str, Any]
) -> tuple[dict, list, list, int | None]:
    """(the file's flat values, keys it ignores, notes, its step budget, which the sweep
    does not use); ({}, [], [], None) without a file. Stores the merged file in
    opts.robovlms (saved with the sweep)."""
    if not opts.from_robovlms:
        return {}, [], [], None
    source = opts.from_robovlms
    if task.import_config is None or task.load_reference is None:
        raise BadInput(f"--from-robovlms: trainable '{task.name}' has no RoboVLMs import")
    if opts.robovlms is None:
        try:
            opts.robovlms = task.load_reference(source)
        except ValueError as exc:  # names the file already
            raise BadInput(str(exc)) from None
    try:
        imported = task.import_config(opts.robovlms, fixed, {**opts.sets, **cli_layer(opts, task)})
    except ValueError as exc:
        raise BadInput(f"{source}: {exc}") from None
    max_steps = getattr(imported, "max_steps", None)
    return imported.flat, imported.ignored, list(imported.notes), max_steps


def steps_note(max_steps: int, candidates: list[dict], plans: list[dict]) -> str:
    """What each trial makes instead of the file's step budget: its epochs' steps."""
    steps = sorted(
        p["steps_per_epoch"] * int(float(c.get("max_epochs", 1)))
        for c, p in zip(candidates, plans, strict=True)
    )
    shown = f"{steps[0]}" if steps[0] == steps[-1] else f"{steps[0]} to {steps[-1]}"
    return (
        f"optimizer steps per trial: {shown} (steps per epoch x max_epochs), not the "
        f"file's max_steps {max_steps}"
    )


def searched_note(file_values: dict[str, Any], searched: list[str], source: str) -> list[str]:
    """The space searches a key the file sets: the search wins (pin it with --set)."""
    both = [k for k in searched if k in file_values]
    if not both:
        return []
    shown = ", ".join(f"{k}={file_values[k]}" for k in both)
    return [f"searched by the space, not taken from {source}: {shown} (--set to pin)"]
