"""`--pack K`: up to K LoRA trials of a sweep train in one worker, on one frozen base
(trainables/packing). Here: whether a sweep packs, what each pack and each trial holds,
what the header and `--dry-run --json` say about it, and the packed trainable.

Each configuration stays its own Tune trial: a thin client that asks Tune for 1/K of one
trial's resources (--cpus-per-trial, --gpus-per-trial), so Tune runs K times as many trials
at once, and trains in a pack that holds one trial's resources (its trials' shares added
up): on a CPU node with 2 CPUs and 1 CPU per trial, --pack 4 runs 8 trials in 2 packs,
each pack training with 1 torch thread. On a GPU the K trials of a card share one pack.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from tuner.checks import BadInput

DEFAULT_PACK = 1  # unpacked unless --pack is given
# A pack of K against K separate trials, summed samples/s: stated, until a packed sweep
# on the same set-up measured it (tuner/overhead.py learns it as the epochs' speed).
PACK_FACTOR = 1.0
SHARE_DECIMALS = 4  # Ray keeps resource amounts to 1e-4


@dataclass(frozen=True)
class PackPlan:
    asked: int | None  # --pack (None: not given)
    size: int  # trials per pack; 1: every trial trains alone
    reason: str | None = None  # why an asked pack runs unpacked

    @property
    def packed(self) -> bool:
        return self.size > 1


def plan_packs(prep: Any) -> PackPlan:
    """How the sweep packs: --pack K, unless its trials have nothing to share (then it runs
    unpacked and says why). A task that does not pack at all is bad input."""
    asked = prep.options.pack  # >= 1: checked with the other options
    size = asked or DEFAULT_PACK
    if size == 1:
        return PackPlan(asked, 1)
    from trainables.config import ConfigError
    from trainables.packing.pack import unpackable

    task = prep.task.name
    try:
        whole_task = unpackable({}, task)  # a reason that needs no config: the task's own
    except ConfigError:
        whole_task = None
    if whole_task:
        raise BadInput(f"--pack {size}: {whole_task}")
    if not prep.share_data:
        return PackPlan(asked, 1, "the space searches keys that change the data: each trial "
                        "loads its own, and a pack holds one")  # fmt: skip
    if key := searched_base_key(prep):
        return PackPlan(asked, 1, f"the space searches {key}, which the shared base follows: "
                        "each value needs a base of its own")  # fmt: skip
    for config in prep.candidates:
        reason = unpackable(config, task)
        if reason:
            return PackPlan(asked, 1, reason)
    return PackPlan(asked, size)


def searched_base_key(prep: Any) -> str | None:
    """A key every member of a pack must share (model, window, precision...) that the
    sweep's trials do not share; such trials would each need a base of their own."""
    from trainables.packing.member import BASE_KEYS

    searched = set(prep.space.params) - set(prep.options.sets)
    for key in sorted({key for keys in BASE_KEYS.values() for key in keys}):
        values = {repr(config.get(key)) for config in prep.candidates}
        if key in searched or len(values) > 1:
            return key
    return None


def trial_share(plan: PackPlan, cpu: float, gpu: float) -> tuple[float, float]:
    """What one trial asks Tune for: 1/K of a pack's (= one unpacked trial's) resources."""
    if not plan.packed:
        return cpu, gpu

    def share(amount: float) -> float:
        return math.floor(amount / plan.size * 10**SHARE_DECIMALS) / 10**SHARE_DECIMALS

    return share(cpu), share(gpu)


def layout(plan: PackPlan, cpu: float, gpu: float, nodes: list[dict[str, Any]]) -> dict:
    """Packs and trials at once on `nodes` (ray.nodes() entries), and what each holds."""
    cpu_t, gpu_t = trial_share(plan, cpu, gpu)
    trials, packs = 0, 0
    for node in (n for n in nodes if n.get("Alive")):
        have = node.get("Resources", {})
        fit = min(
            math.floor(have.get("CPU", 0) / cpu_t + 1e-9) if cpu_t else math.inf,
            math.floor(have.get("GPU", 0) / gpu_t + 1e-9) if gpu_t else math.inf,
        )
        fit = 0 if math.isinf(fit) else int(fit)
        trials += fit
        packs += math.ceil(fit / plan.size)  # on a GPU, the trials of one card share a pack
    return {
        "asked": plan.asked,
        "trials_per_pack": plan.size,
        "unpacked_because": plan.reason,
        "packs_at_once": packs if plan.packed else None,
        "trials_at_once": trials,
        "pack_resources": {"CPU": cpu, "GPU": gpu} if plan.packed else None,
        "trial_resources": {"CPU": cpu_t, "GPU": gpu_t},
        "torch_threads_per_pack": max(1, int(cpu)) if plan.packed else None,
        "pack_factor": PACK_FACTOR if plan.packed else None,
    }


def resources_text(cpu: float, gpu: float) -> str:
    return f"{cpu:g} CPU" + (f" + {gpu:g} GPU" if gpu else "")


def header_line(plan: PackPlan, cpu: float, gpu: float, nodes: list | None) -> str | None:
    """The header's `packing` line (None when --pack was not given); `nodes`: this
    machine, or None on a cluster (its nodes are seen once Ray is up)."""
    if plan.asked is None:
        return None
    if plan.reason:
        return f"  packing    off: --pack {plan.asked} asked, but {plan.reason}; trials train alone"
    if not plan.packed:
        return "  packing    off (--pack 1): every trial trains alone"
    cpu_t, gpu_t = trial_share(plan, cpu, gpu)
    where = "on every node of the cluster"
    if nodes is not None:
        shape = layout(plan, cpu, gpu, nodes)
        where = f"{shape['packs_at_once']} packs, {shape['trials_at_once']} trials at once here"
    card = ", one card per pack" if gpu else ""
    return (
        f"  packing    up to {plan.size} trials per pack on one shared base ({where}); a pack "
        f"holds {resources_text(cpu, gpu)}{card} and trains with {max(1, int(cpu))} torch "
        f"thread(s); each of its trials asks Tune for {resources_text(cpu_t, gpu_t)}"
    )


def print_line(prep: Any, plan: PackPlan) -> None:
    """After the header: the packing line, with this machine's resources when local."""
    line = header_line(plan, *pack_resources(prep), local_nodes_or_none(prep))
    if line:
        print(line, flush=True)


def pack_resources(prep: Any) -> tuple[float, float]:
    """One pack's (= one unpacked trial's) CPUs and GPUs as the options give them, on this
    machine (a cluster's are checked once Ray is up)."""
    from tuner.checks import trial_resources
    from tuner.forecast import local_nodes

    opts = prep.options
    try:
        return trial_resources(opts.cpus_per_trial, opts.gpus_per_trial, local_nodes())
    except BadInput:
        return opts.cpus_per_trial or 1, opts.gpus_per_trial or 0


def local_nodes_or_none(prep: Any) -> list | None:
    import os

    from tuner.forecast import local_nodes

    if prep.options.address or os.environ.get("RAY_ADDRESS"):
        return None
    return local_nodes()


def dry_run_json(prep: Any, forecast: Any, plan: PackPlan) -> str:
    """`--dry-run --json` with the sweep's packing (on this machine, or the cluster's
    shape unknown: counts null)."""
    from tuner.plan_json import dry_run_document

    nodes = local_nodes_or_none(prep)
    packing = layout(plan, *pack_resources(prep), nodes or [])
    if nodes is None:
        packing["packs_at_once"] = packing["trials_at_once"] = None
    document = {**dry_run_document(prep, forecast), "packing": packing}
    return json.dumps(document, indent=2, default=str)


def make_trainable(prep: Any, data: Any, cpu: float, gpu: float) -> Any:
    """The sweep's trainable: the task's own (unpacked), or thin clients of packs that a
    pack directory owned by this driver hands out. `cpu`, `gpu`: one unpacked trial's."""
    from tuner.tune_setup import make_trainable as unpacked

    plan = plan_packs(prep)
    if not plan.packed:
        return unpacked(prep, data, cpu, gpu)
    from ray import tune

    from trainables.packing.actor import start_directory
    from trainables.packing.client import packed_function

    cpu_t, gpu_t = trial_share(plan, cpu, gpu)
    share = {"cpu": cpu_t, "gpu": gpu_t}
    directory = start_directory(plan.size, data, max(1, int(cpu)), share)
    return tune.with_resources(packed_function(directory, prep.task.name), share)
