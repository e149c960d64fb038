"""The Ray side of packing: a pack actor that trains its members' epochs in rounds, and
the sweep's pack directory that hands each thin-client trial a place in a pack on its
own node (trainables/packing/client.py is the trial's side).

Rounds. A member asks for its next epoch (`epoch`) and waits. The pack's one round thread
starts a round when every member has asked, or once a short grace period has passed since
the first ask (a member may still be reporting, held, or stopped by ASHA); the members that
asked then train that epoch together (`Pack.run_epoch`). Members are independent, so how
they are grouped into rounds changes only the speed, never a result. Joins and leaves are
queued and applied by the round thread between rounds: only that thread touches the Pack.

Places. Each member holds a lease that its client renews every few seconds; a member whose
lease ran out (its trial's process died) is removed like one that left, so a stopped or lost
trial never keeps its place. Every wait here is bounded and ends in a clear error.

Resources. A pack actor asks Ray for nothing (num_cpus=0, num_gpus=0): the K thin trials
in it hold the pack's share (CPUs/K and GPUs/K each), so Tune still runs packs x K trials
and the directory never makes more packs on a node (or card) than those trials fill. Ray
leaves CUDA_VISIBLE_DEVICES alone for an actor with no GPU: the pack sets it to the card
its first trial was given, so it trains on the card its members hold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

LEASE_S = 30.0  # a member not renewed for this long is gone (its client renews every 3 s)
RENEW_S = 3.0
# A round waits this share of the last round's time for members still reporting, within
# these bounds: grouping only changes the speed.
GRACE_SHARE, MIN_GRACE_S, MAX_GRACE_S = 0.25, 0.5, 10.0
# The longest a join or an epoch may take (a real model's epoch on a slow device),
# overridable for very long epochs: a bound, so that nothing ever waits forever.
ROUND_TIMEOUT_S = float(os.environ.get("VLA_TUNE_PACK_TIMEOUT_S", 6 * 3600))
START_TIMEOUT_S = 600.0  # a new pack actor's imports, or a place freeing on a full node


class PackTimeout(RuntimeError):
    """A pack did not answer within its bound."""


@dataclass
class Member:
    config: dict[str, Any] | None = None  # set by join; applied by the round thread
    checkpoint_dir: str | None = None
    joined: bool = False
    error: str | None = None  # the join failed (PackError): said to the client
    asked: float | None = None  # when it asked for its next epoch
    result: dict[str, Any] | None = None
    renewed: float = 0.0
    calls: int = 0  # its client's join or epoch calls in flight: it lives while they run
    leaving: bool = False


class PackHost:
    """One Pack behind a round thread (a threaded Ray actor: clients wait in parallel)."""

    def __init__(
        self, capacity: int, data: Any, threads: int, cuda_devices: str | None = None
    ) -> None:
        if cuda_devices is not None:  # before anything initializes CUDA in this process
            os.environ["CUDA_VISIBLE_DEVICES"] = cuda_devices
        from trainables.packing.pack import Pack

        self.pack = Pack(capacity, data=data, threads=threads)
        self.capacity = capacity
        self.members: dict[str, Member] = {}
        self.cond = threading.Condition()
        self.last_round_s = 0.0
        self.broken: str | None = None  # the round thread died: every wait ends with it
        threading.Thread(target=self._loop, name="pack-rounds", daemon=True).start()

    # -- called by the directory and the clients -----------------------------------------

    def reserve(self, key: str) -> bool:
        """Take a free place for `key` (the directory's call); False when full."""
        with self.cond:
            self._expire(time.monotonic())
            present = [m for m in self.members.values() if not m.leaving]
            if key not in self.members and len(present) >= self.capacity:
                return False
            self.members.setdefault(key, Member(renewed=time.monotonic()))
            return True

    def join(self, key: str, config: dict[str, Any], checkpoint_dir: str | None) -> str | None:
        """Join the reserved place with the trial's config (and checkpoint to restore);
        waits until the round thread applied it. Returns None, or why it failed."""
        with self.cond:
            member = self.members.get(key)
            if member is None or member.leaving or self.broken:
                return gone(key, self.broken)["error"]
            member.config, member.checkpoint_dir = config, checkpoint_dir
            self.cond.notify_all()
            with self._call(member):
                done = self.cond.wait_for(
                    lambda: member.joined or member.error or self._lost(key, member),
                    ROUND_TIMEOUT_S,
                )
            if not done:
                raise PackTimeout(f"pack member {key}: not joined in {ROUND_TIMEOUT_S:.0f} s")
            if self._lost(key, member) and not member.error:
                return gone(key, self.broken)["error"]
            return member.error

    def epoch(self, key: str) -> dict[str, Any]:
        """Ask for the member's next epoch and wait for it: EpochResult as a dict."""
        with self.cond:
            member = self.members.get(key)
            if member is None or not member.joined or member.leaving or self.broken:
                return gone(key, self.broken)
            member.asked, member.result = time.monotonic(), None
            self.cond.notify_all()
            with self._call(member):
                done = self.cond.wait_for(
                    lambda: member.result is not None or self._lost(key, member),
                    ROUND_TIMEOUT_S,
                )
            if not done:
                raise PackTimeout(f"pack member {key}: no epoch in {ROUND_TIMEOUT_S:.0f} s")
            return member.result or gone(key, self.broken)

    def renew(self, key: str) -> bool:
        with self.cond:
            member = self.members.get(key)
            if member is not None:
                member.renewed = time.monotonic()
            return member is not None and not member.leaving

    def leave(self, key: str) -> None:
        """Give up the place (the round thread frees it before the next round)."""
        with self.cond:
            if key in self.members:
                self.members[key].leaving = True
                self.cond.notify_all()

    @contextlib.contextmanager
    def _call(self, member: Member) -> Iterator[None]:
        """A client waiting in a call is alive: its lease counts from the call's end."""
        member.calls += 1
        try:
            yield
        finally:
            member.calls -= 1
            member.renewed = time.monotonic()

    def _lost(self, key: str, member: Member) -> bool:
        """The member is no longer this pack's (its lease ran out), or the pack broke."""
        return self.members.get(key) is not member or self.broken is not None

    # -- the round thread ------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        for member in self.members.values():
            if member.calls == 0 and now - member.renewed > LEASE_S:
                member.leaving = True

    def _grace_s(self) -> float:
        return min(MAX_GRACE_S, max(MIN_GRACE_S, GRACE_SHARE * self.last_round_s))

    def _waiting(self, now: float) -> tuple[list[str], list[str], list[str]]:
        """(leaving, joining, epoch keys of a round that should start now)."""
        self._expire(now)
        leaving = [k for k, m in self.members.items() if m.leaving]
        joining = [k for k, m in self.members.items() if m.config is not None and not m.joined]
        active = {k: m for k, m in self.members.items() if m.joined and not m.leaving}
        asked = [k for k, m in active.items() if m.asked is not None and m.result is None]
        if asked and len(asked) < len(active):
            first = min(active[k].asked for k in asked)
            if now - first < self._grace_s():
                asked = []
        return leaving, joining, asked

    def _loop(self) -> None:
        try:
            while True:
                self._step()
        except BaseException as exc:  # noqa: BLE001 - said to every member, never a hang
            with self.cond:
                self.broken = f"the pack's round thread failed: {type(exc).__name__}: {exc}"
                self.cond.notify_all()

    def _step(self) -> None:
        """Apply the queued leaves and joins, then run a round if one is due."""
        with self.cond:
            while True:
                leaving, joining, keys = self._waiting(time.monotonic())
                if leaving or joining or keys:
                    break
                self.cond.wait(timeout=MIN_GRACE_S / 2)
            for key in leaving:
                del self.members[key]
            joins = {k: self.members[k] for k in joining}
        for key in leaving:
            self.pack.leave(key)
        for key, member in joins.items():
            self._apply_join(key, member)
        if keys:
            self._round(keys)

    def _apply_join(self, key: str, member: Member) -> None:
        from trainables.packing.pack import PackError

        error = None
        try:
            self.pack.join(key, member.config, member.checkpoint_dir)
        except PackError as exc:  # names the key
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - e.g. a bad checkpoint: its trial's failure
            error = f"{type(exc).__name__}: {exc}"
        with self.cond:
            member.joined, member.error = error is None, error
            if error is not None:
                self.members.pop(key, None)
            self.cond.notify_all()

    def _round(self, keys: list[str]) -> None:
        started = time.monotonic()
        try:
            results = {k: dataclasses.asdict(r) for k, r in self.pack.run_epoch(keys).items()}
        except Exception as exc:  # noqa: BLE001 - the pack itself failed: its members say so
            text = f"the pack failed in a round of {len(keys)}: {type(exc).__name__}: {exc}"
            results = {k: failed(text) for k in keys}
        self.last_round_s = time.monotonic() - started
        with self.cond:
            for key in keys:
                member = self.members.get(key)
                if member is None:
                    continue
                member.result = results.get(key) or failed(f"no result for {key}")
                member.asked = None
                if member.result["error"] or member.result["finished"]:
                    member.leaving = True  # a failed member was removed by the Pack
            self.cond.notify_all()


def failed(error: str) -> dict[str, Any]:
    return {"metrics": None, "checkpoint_dir": None, "error": error, "finished": False}


def gone(key: str, broken: str | None = None) -> dict[str, Any]:
    return failed(broken or f"pack member {key}: not in the pack (it left, or its lease ran out)")


@dataclass(frozen=True)
class Group:
    """Where packs form: one node, and on a GPU node one card (its visible devices)."""

    node_id: str
    node_ip: str
    cuda_devices: str | None

    def label(self, index: int) -> str:
        card = f"/gpu{self.cuda_devices}" if self.cuda_devices else ""
        return f"{self.node_ip}{card}/pack-{index}"


def packs_per_group(node_resources: dict[str, float], client: dict[str, float], size: int) -> int:
    """Most packs a node (or, with GPUs, one card) needs: as many as its thin trials fill."""
    if client.get("gpu"):
        trials = math.floor(1 / client["gpu"] + 1e-9)  # per card
    elif client.get("cpu"):
        trials = math.floor(node_resources.get("CPU", 0) / client["cpu"] + 1e-9)
    else:
        trials = size
    return max(1, math.ceil(trials / size))


class PackDirectory:
    """The sweep's packs, by node and card: a trial's place is in the first pack of its
    group with room, else in a new pack there (never more packs than its trials fill)."""

    def __init__(self, size: int, data: list[Any], threads: int, client: dict[str, float]):
        self.size, self.data, self.threads, self.client = size, data, threads, client
        self.packs: dict[Group, list[tuple[str, Any]]] = {}
        self.count = 0
        self.lock = threading.Lock()

    def place(self, key: str, group: Group) -> tuple[Any, str]:
        """(pack actor, its label) with a place reserved for `key`; waits while the
        group's packs are full and it has as many as its trials can fill."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with self.lock:
                found = self._reserve(key, group)
                if found is None and len(self.packs.get(group, [])) < self._most(group):
                    self._start(group)
                    found = self._reserve(key, group)
            if found is not None:
                return found
            time.sleep(1.0)  # full: a lost trial's place frees when its lease runs out
        raise PackTimeout(f"no place in a pack on {group.node_ip} in {START_TIMEOUT_S:.0f} s")

    def _reserve(self, key: str, group: Group) -> tuple[Any, str] | None:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        for label, pack in list(self.packs.get(group, [])):
            try:
                if ray.get(pack.reserve.remote(key), timeout=START_TIMEOUT_S):
                    return pack, label
            except RayActorError:  # the pack died (its trials failed and are retried)
                self.packs[group].remove((label, pack))
            except GetTimeoutError:
                continue
        return None

    def _most(self, group: Group) -> int:
        import ray

        node = next((n for n in ray.nodes() if n["NodeID"] == group.node_id), {})
        return packs_per_group(node.get("Resources", {}), self.client, self.size)

    def _start(self, group: Group) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.count += 1
        label = group.label(self.count)
        pack = (
            ray.remote(PackHost)
            .options(
                num_cpus=0,
                num_gpus=0,
                max_concurrency=4 * self.size + 8,  # waiting members, renewals, the directory
                scheduling_strategy=NodeAffinitySchedulingStrategy(group.node_id, soft=False),
            )
            .remote(self.size, self.data[0], self.threads, group.cuda_devices)
        )
        self.packs.setdefault(group, []).append((label, pack))


def start_directory(size: int, data: Any, threads: int, client: dict[str, float]) -> Any:
    """The sweep's pack directory, owned by this driver (it and its packs end with it), on
    the driver's node: Ray may place an actor that asks for nothing on any node, and a lost
    worker node must take only its own packs, never the directory every trial asks."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ref = ray.put(data)  # once in the object store; each pack maps it
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return (
        ray.remote(PackDirectory)
        .options(num_cpus=0, max_concurrency=64, scheduling_strategy=here)
        .remote(size, [ref], threads, client)
    )
