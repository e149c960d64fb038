"""Many trials, one frozen base: up to `capacity` LoRA trials trained in one process.

    pack = Pack(4, data)
    pack.join("a", config_a); pack.join("b", config_b, checkpoint_dir)
    results = pack.run_epoch(["a", "b"])   # {key: EpochResult}
    pack.leave("a")

Each member is the unpacked trial itself (`MobileVLATrial`: its LoRA adapter, action
token, head, AdamW with its own schedule, batch size, seed and data order, GradScaler and
checkpoint format) built on a copy of the pack's base that holds the very same frozen
tensors. Per round, the members' next micro-batches run through the base's text model at
once (trainables.packing.rounds); each member steps its optimizer when its own global
batch is complete (`Trainer.finish_step`), so batch 128 and 512 pack together. A member
trains what it trains alone, within float rounding: its data order, LoRA initialization
and dropout draws come from its own seed and random numbers. Where the base itself draws
random numbers (a pretrained Kosmos-2's text dropout of 0.1), the packed rows draw them
from the pack's generator: the same distribution, not the same draws as alone.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainables.memory import TrialMemory, release_memory
from trainables.mobile_vla.trainable import MobileVLATrial
from trainables.packing.lora import MemberRNG
from trainables.packing.member import (
    Base,
    PackError,
    PackMember,
    base_mismatch,
    build_base,
    unpackable,
)
from trainables.packing.rounds import Member, describe, run_round
from trainables.training_state import rng_state
from trainables.trial_loop import epoch_report, restore_checkpoint, save_checkpoint

__all__ = ["EpochResult", "Pack", "PackError", "unpackable"]


@dataclass
class EpochResult:
    # What trainables.trial_loop.run_epochs reports for that epoch, plus "pack_size".
    metrics: dict[str, Any] | None
    checkpoint_dir: str | None  # the epoch's checkpoint (the caller deletes it after use)
    error: str | None  # the member raised or its loss turned NaN: removed, alone
    finished: bool  # the member reached max_epochs


class Pack:
    """One frozen base held once; up to `capacity` member trials trained together."""

    def __init__(self, capacity: int, data: Any = None, threads: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity: must be >= 1, got {capacity}")
        self.capacity, self.data = capacity, data
        if threads:
            torch.set_num_threads(threads)
        self.base: Base | None = None
        self.members: dict[str, Member] = {}
        self.memory: TrialMemory | None = None

    def join(
        self, key: str, config: dict[str, Any], checkpoint_dir: str | Path | None = None
    ) -> None:
        """Build the member from its flat trial config as the unpacked trial would, and
        restore it from `checkpoint_dir` (the unpacked trial's format)."""
        if key in self.members:
            raise PackError(f"{key}: already in this pack")
        if len(self.members) >= self.capacity:
            raise PackError(f"{key}: this pack is full ({self.capacity} members)")
        reason = unpackable(config)
        if reason:
            raise PackError(reason)
        cfg = MobileVLATrial.parse_config(config)
        if self.base is not None:
            mismatch = base_mismatch(self.base.cfg, cfg)
            if mismatch:
                raise mismatch
        else:
            if self.data is None:
                self.data = MobileVLATrial.load_dataset(cfg.data)
            self.base = build_base(cfg, self.data)
            self.memory = TrialMemory(self.base.device).__enter__()
        rng = MemberRNG(rng_state())
        with rng.active():  # as `train` does: seed, build, then restore
            torch.manual_seed(cfg.train.seed)
            trial = PackMember(cfg, self.data, self.base)
            epoch = restore_checkpoint(Path(checkpoint_dir), trial) if checkpoint_dir else 0
        features = trial.batches.features
        if features is not None and self.data.image_features is None:  # the next ones share
            self.data = dataclasses.replace(self.data, image_features=features)
        self.base.attach(key, trial.policy, rng)
        self.members[key] = Member(key, trial, rng, dict(config), epoch)

    def leave(self, key: str) -> None:
        """Free the slot and the member's memory (no-op for an unknown key)."""
        if self.members.pop(key, None) is None:
            return
        self.base.detach(key)
        release_memory(self.base.device)

    def close(self) -> None:
        """Leave every member and stop measuring memory (the base goes with the Pack)."""
        for key in list(self.members):
            self.leave(key)
        if self.memory is not None:
            self.memory.__exit__(None, None, None)
            self.memory = None

    def run_epoch(self, keys: Sequence[str]) -> dict[str, EpochResult]:
        """Train the next epoch of each listed member together, then validate each and
        save its checkpoint to a fresh temporary directory."""
        members = [self.members[k] for k in dict.fromkeys(keys) if k in self.members]
        results: dict[str, EpochResult] = {}
        for member in members:
            try:
                member.start_epoch()
            except Exception as exc:  # noqa: BLE001 - that member fails alone
                results[member.key] = self.fail(member, exc)
        running = [m for m in members if m.key not in results]
        started = time.perf_counter()
        while running:
            work = []
            for member in list(running):
                try:
                    batch, total, last = next(member.batches)
                except StopIteration:
                    running.remove(member)
                    continue
                except Exception as exc:  # noqa: BLE001
                    running.remove(member)
                    results[member.key] = self.fail(member, exc)
                    continue
                work.append((member, batch, total, last))
            if not work:
                break
            errors = run_round(self.base, [(m, b, t) for m, b, t, _ in work])
            for member, batch, total, last in work:
                error = errors.get(member.key) or self.after_micro_batch(member, batch, total, last)
                if error:
                    running.remove(member)
                    results[member.key] = self.fail(member, error)
        seconds = time.perf_counter() - started
        trained = [m for m in members if m.key not in results]
        for member in trained:
            results[member.key] = self.finish_epoch(member, seconds, len(members))
        return results

    def after_micro_batch(self, member: Member, batch: dict, total: int, last: bool) -> str:
        """Count the micro-batch; step the member's optimizer when its step is complete.
        Returns the error that fails the member, or ""."""
        member.micro += 1
        member.work += batch["rows"]
        if not last:
            return ""
        try:
            loss, norm = member.trial.trainer.finish_step(member.step_loss.item(), total)
        except Exception as exc:  # noqa: BLE001 - that member fails alone
            return describe(exc)
        member.step_loss = None
        member.losses.append(loss)
        member.norms.append(norm)
        return ""

    def finish_epoch(self, member: Member, seconds: float, size: int) -> EpochResult:
        """Validate, report as run_epochs does (+ pack_size), save the checkpoint."""
        trial = member.trial
        try:
            metrics = epoch_report(
                trial,
                member.epoch,
                member.losses,
                member.norms,
                member.work,
                member.micro,
                seconds,
                self.memory,
            )
            metrics["pack_size"] = size
            directory = tempfile.mkdtemp(prefix=trial.checkpoint_prefix)
            with member.rng.active():
                save_checkpoint(Path(directory), trial, member.epoch, member.flat)
        except Exception as exc:  # noqa: BLE001 - that member fails alone
            return self.fail(member, exc)
        member.epoch += 1
        member.batches = None
        finished = member.epoch >= trial.trainer.cfg.max_epochs
        return EpochResult(metrics, directory, None, finished)

    def fail(self, member: Member, error: BaseException | str) -> EpochResult:
        """Remove a failed member; the others go on unchanged."""
        message = error if isinstance(error, str) else describe(error)
        self.leave(member.key)
        return EpochResult(None, None, message, False)
