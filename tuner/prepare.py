"""A sweep's input, checked end to end before anything starts: options, space, keys,
configs, data, batch plans. Fails fastest first; bad input is a `BadInput` (one line,
exit 2). The checks themselves are small functions in tuner/checks.py.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tuner.checks import BadInput, check_name, check_validation, config_error, pinned_note
from tuner.disk import estimate_note
from tuner.experiment import candidate_configs, describe_config
from tuner.reference import robovlms_layer, searched_note, steps_note
from tuner.spaces import (
    ConfirmSpec,
    Space,
    SpaceError,
    check_keys,
    check_min_effect,
    load_space,
    pin,
)

DEMO_MAX_EPOCHS = 9  # the no-argument demo: three ASHA rungs (1, 3, 9 epochs) in minutes on 2 CPUs


@dataclass
class SweepOptions:
    """Everything that defines a sweep; saved beside it so --resume needs no re-typing."""

    space: str = "grid_robovlms"
    data_dir: str | None = None
    pattern: str | None = None
    model: str | None = None
    max_epochs: int | None = None
    search: str | None = None
    num_samples: int | None = None
    scheduler: str | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: float | None = None
    max_concurrent: int | None = None
    storage_path: str = "ray_results"
    mlflow_uri: str | None = None
    experiment: str = "vla-tune"
    name: str | None = None
    address: str | None = None
    shared_storage: bool = False
    sets: dict[str, Any] = field(default_factory=dict)
    sweep_id: str = ""
    from_robovlms: str | None = None  # a RoboVLMs config JSON: the base of the sweep
    robovlms: dict[str, Any] | None = None  # its contents (parents merged), for export
    confirm: int | None = None  # confirm the top K configurations (None: the space's)
    seeds: int | None = None  # ... with N runs each
    min_effect: float | None = None  # a tie in practice below it (None: the space's)
    time_budget: float | None = None  # seconds; None: the space's (a resume: none)
    pack: int | None = None  # --pack K: trials per pack (tuner/packs.py); None: unpacked


@dataclass
class Prepared:
    """A sweep checked end to end, ready to run."""

    options: SweepOptions
    space: Space
    task: Any
    scheduler: str
    base: dict[str, Any]
    searched: list[str]
    candidates: list[dict[str, Any]]
    plans: list[dict[str, Any]]
    data: Any
    share_data: bool
    max_t: int
    notes: list[str]
    warnings: list[str]
    ignored: list[str] = field(default_factory=list)  # keys of --from-robovlms not used
    confirm: ConfirmSpec = field(default_factory=ConfirmSpec)  # top 0: no confirmation


def options_from_args(args: argparse.Namespace) -> SweepOptions:
    from trainables.config import ConfigError, parse_assignments

    try:
        sets = parse_assignments(args.sets)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    values = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(SweepOptions)}
    values["sets"] = sets
    values = {k: v for k, v in values.items() if v is not None}
    for key in ("max_epochs", "num_samples", "max_concurrent", "pack"):
        if key in values and values[key] < 1:
            raise BadInput(f"--{key.replace('_', '-')} must be >= 1, got {values[key]}")
    if values.get("confirm", 0) < 0:
        raise BadInput(f"--confirm must be >= 0, got {values['confirm']}")
    if values.get("seeds", 2) < 2:
        raise BadInput(
            f"--seeds must be >= 2 (the search's run and one more), got {values['seeds']}"
        )
    for key in ("gpus_per_trial", "cpus_per_trial"):
        if key in values and values[key] < 0:
            raise BadInput(f"--{key.replace('_', '-')} must be >= 0, got {values[key]}")
    if "name" in values:
        check_name(values["name"])
    return SweepOptions(**values)


def prepare(opts: SweepOptions, load_data: bool = True) -> Prepared:
    """Check everything a sweep needs, in the order that fails fastest."""
    from trainables.config import ConfigError
    from trainables.task import get_task

    try:
        space = load_space(opts.space)
    except SpaceError as exc:
        raise BadInput(str(exc)) from None
    try:
        task = get_task(space.trainable)
    except KeyError as exc:
        raise BadInput(f"{space.path}: trainable: {exc.args[0]}") from None
    try:
        check_keys(space, task.keys)
    except SpaceError as exc:
        raise BadInput(str(exc)) from None
    for key in opts.sets:
        if key not in task.keys:
            raise BadInput(f"--set {key}: not a config key of '{space.trainable}'")
    space, pinned = pin(space, opts.sets)  # a --set wins over the space's search
    notes = [pinned_note(k, opts.sets[k], d) for k, d in pinned.items()]

    space = dataclasses.replace(space, search=opts.search or space.search)  # num_trials follows
    search = space.search
    if not space.params and search != "grid":
        raise BadInput(f"--set pins every key {space.path} searches: nothing left to sample")
    if search == "grid" and any(d.kind != "values" for d in space.params.values()):
        raise BadInput(f"{space.path}: search grid needs lists of values for every param")
    if opts.num_samples:
        space = dataclasses.replace(space, num_samples=opts.num_samples)
    scheduler = opts.scheduler or space.scheduler.type
    confirm = confirm_spec(opts, space, task.keys)

    from_file, ignored, file_notes, max_steps = robovlms_layer(opts, task, space.fixed)
    notes += file_notes + searched_note(from_file, list(space.params), opts.from_robovlms)
    base = {**space.fixed, **from_file, **opts.sets}
    for option, key in task.cli_keys.items():
        if getattr(opts, option) is not None:
            base[key] = getattr(opts, option)
    if opts.gpus_per_trial and opts.gpus_per_trial < 1:
        # A fractional GPU shares the card: each trial keeps to its share of the memory.
        base.setdefault("gpu_share", opts.gpus_per_trial)
    demo = "data_dir" in task.cli_keys and task.cli_keys["data_dir"] not in base
    if opts.max_epochs:
        base["max_epochs"] = opts.max_epochs
    elif demo and "max_epochs" not in {**opts.sets, **from_file}:
        base["max_epochs"] = DEMO_MAX_EPOCHS
        notes.append(f"demo data: {DEMO_MAX_EPOCHS} epochs per trial (--max-epochs to change)")
    elif "max_epochs" not in base and "max_epochs" not in space.params:
        base["max_epochs"] = task.defaults["max_epochs"]
        notes.append(
            f"the space sets no max_epochs: {base['max_epochs']} epochs per trial, the default "
            f"of '{space.trainable}' (--max-epochs to change)"
        )
    searched = list(space.params)
    try:
        if demo:
            # Check keys before generating anything.
            data_key = task.cli_keys["data_dir"]
            task.check_config({**candidate_configs(space, search, base)[0], data_key: "demo"})
            base, message = task.demo_data(base)
            notes.append(message)
        candidates = candidate_configs(space, search, base)
        for config in candidates:
            task.check_config(config)
    except ConfigError as exc:
        raise config_error(str(exc), opts.sets, opts.space) from None

    max_epochs = max(int(float(c.get("max_epochs", 1))) for c in candidates)  # checked above
    max_t = min(space.scheduler.max_t or max_epochs, max_epochs)
    share_data = not (set(searched) & task.data_keys)
    data, plans, warnings = None, [], []
    if load_data:
        data, plans = load_and_plan(task, candidates, searched, space.metric)
        single = [
            describe_config(c, searched)
            for c, p in zip(candidates, plans, strict=True)
            if p["steps_per_epoch"] == 1
        ]
        if max_steps is not None:
            notes.append(steps_note(max_steps, candidates, plans))
        runs = int(confirm.runs(0))  # at most: all taken from below the full budget
        disk = estimate_note(task, candidates[0], data, space.num_trials(), runs)
        notes += [disk] if disk else []
        if single:
            warnings.append(
                f"{len(single)} configurations make only one optimizer step per epoch "
                f"(batch_size close to the training windows): {'; '.join(single)}"
            )
    return Prepared(
        options=opts,
        space=space,
        task=task,
        scheduler=scheduler,
        base=base,
        searched=searched,
        candidates=candidates,
        plans=plans,
        data=data,
        share_data=share_data,
        max_t=max_t,
        notes=notes,
        warnings=warnings,
        ignored=ignored,
        confirm=confirm,
    )


def load_and_plan(
    task: Any, candidates: list[dict], searched: list[str], metric: str
) -> tuple[Any, list[dict]]:
    """Load the data once per distinct data setting of the candidates (a searched
    val_ratio changes the split), check that each leaves validation data, and plan every
    candidate on its own data. Returns the first candidate's data and the plans."""
    from trainables.config import ConfigError
    from trainables.training import TrainingError

    groups: dict[str, list[int]] = {}
    for i, config in enumerate(candidates):
        setting = repr(sorted((k, repr(v)) for k, v in config.items() if k in task.data_keys))
        groups.setdefault(setting, []).append(i)
    first, plans = None, [{}] * len(candidates)
    for indices in groups.values():  # the first group holds candidates[0]
        config = candidates[indices[0]]
        try:
            data = task.load_data(config)
        except (*task.data_errors, ConfigError) as exc:
            raise BadInput(str(exc)) from None
        if task.val_size is not None:
            val_ratio = config.get("val_ratio", task.defaults.get("val_ratio"))
            check_validation(task.val_size(data), task.summary(data), metric, val_ratio)
        for i in indices:
            try:
                plans[i] = task.plan(candidates[i], data)
            except TrainingError as exc:
                raise BadInput(f"{describe_config(candidates[i], searched)}: {exc}") from None
        first = data if first is None else first
    return first, plans


def confirm_spec(opts: SweepOptions, space: Space, keys: list[str]) -> ConfirmSpec:
    """--confirm/--seeds over the space's `confirm:`; off unless one of them asks."""
    top = space.confirm.top if opts.confirm is None else opts.confirm
    min_effect = space.confirm.min_effect if opts.min_effect is None else opts.min_effect
    try:
        check_min_effect("--min-effect", min_effect)
    except SpaceError as exc:
        raise BadInput(str(exc)) from None
    spec = ConfirmSpec(top=top, seeds=opts.seeds or space.confirm.seeds, min_effect=min_effect)
    if opts.seeds and not top:
        raise BadInput(f"--seeds {opts.seeds}: nothing to confirm (add --confirm K)")
    if top and "seed" not in keys:
        raise BadInput(f"--confirm: '{space.trainable}' has no 'seed' config key to vary")
    if top and "seed" in space.params:
        raise BadInput(f"{space.path}: params.seed: a searched seed cannot be confirmed")
    if top > space.num_trials():  # it could never confirm what it promises
        asked = f"{space.path}: confirm.top {top}"
        asked = f"--confirm {top}" if opts.confirm is not None else asked
        raise BadInput(f"{asked}: the sweep has only {space.num_trials()} trials")
    return spec
