"""One round of a pack: every member's next micro-batch through the base at once.

Per member (its own random numbers): image tokens and text sequences with its own action
token. Then the frozen text model runs once over the concatenated rows, each packed
linear adding each member's LoRA delta to its rows. Per member again: its features,
head and loss on its own rows. A member whose part raises or whose loss is not finite
fails alone: its rows are left out of the backward, which then reaches no one's weights
but through their own rows (rows do not mix in the text model).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from trainables.errors import TrainingError
from trainables.micro_batch import simulate_oom
from trainables.mobile_vla.modeling_mobile_vla import action_features, text_hidden
from trainables.packing.lora import MemberRNG
from trainables.packing.member import Base, PackMember


@dataclass
class Member:
    """A member and where it stands: its trial, random numbers and epoch position."""

    key: str
    trial: PackMember
    rng: MemberRNG
    flat: dict  # its flat config, saved with each checkpoint
    epoch: int = 0  # epochs done
    # this epoch's run
    batches: Iterator[tuple[dict, int, bool]] | None = None
    losses: list[float] = field(default_factory=list)
    norms: list[float] = field(default_factory=list)
    work: int = 0
    micro: int = 0
    step_loss: torch.Tensor | None = None

    def start_epoch(self) -> None:
        if self.epoch >= self.trial.trainer.cfg.max_epochs:
            raise TrainingError(f"{self.key}: already trained its {self.epoch} epochs")
        self.batches = micro_batches(self.trial, self.epoch)
        self.losses, self.norms, self.work, self.micro = [], [], 0, 0
        self.step_loss = None


def micro_batches(trial: PackMember, epoch: int) -> Iterator[tuple[dict, int, bool]]:
    """(micro-batch, its step's real targets, last of its step) over the epoch, in the
    order the unpacked trial runs them."""
    for step, _ in trial.steps(epoch):
        total = sum(trial.count_targets(batch) for batch in step)
        if total == 0:
            raise TrainingError("an optimizer step has no real (unmasked) targets")
        for index, batch in enumerate(step):
            yield batch, total, index == len(step) - 1


@dataclass
class Rows:
    """One member's text-model inputs for a micro-batch (see build_sequences)."""

    image_embeds: torch.Tensor
    embeds: torch.Tensor
    mask: torch.Tensor
    image_positions: torch.Tensor
    action_positions: torch.Tensor


def member_rows(member: Member, batch: dict, device: torch.device) -> Rows:
    policy = member.trial.policy
    simulate_oom(batch["rows"])
    with member.rng.drawing(device):
        image = batch.get("image_embeds")
        if image is None:  # the member's own vision tower (its LoRA, if any): not shared
            image = policy.encode_images(batch["pixels"])
        built = policy.build_sequences(batch["input_ids"], batch["attention_mask"])
    return Rows(image, *built)


def member_loss(member: Member, batch: dict, rows: Rows, hidden: torch.Tensor) -> torch.Tensor:
    """The member's loss sum over its rows of the packed hidden states (its head: fp32)."""
    policy = member.trial.policy
    features = action_features(hidden, rows.action_positions)
    with member.rng.drawing(hidden.device):
        pred = policy.head(features[batch["windows"]])
    batch_sum, _ = policy.compute_loss(pred, batch["target"], batch["mask"])
    return batch_sum


def run_round(base: Base, work: list[tuple[Member, dict, int]]) -> dict[str, str]:
    """Forward and backward of one micro-batch per member; `work` holds (member, batch,
    its step's real targets). Adds each member's scaled loss gradient to its `.grad`
    and its loss to `step_loss`; returns {key: error} of the members that failed."""
    errors: dict[str, str] = {}
    device = base.device
    autocast = work[0][0].trial.trainer.autocast
    inputs: list[tuple[Member, dict, int, Rows]] = []
    with autocast():
        for member, batch, total in work:
            member.trial.policy.train()
            try:
                inputs.append((member, batch, total, member_rows(member, batch, device)))
            except Exception as exc:  # noqa: BLE001 - that member fails, not the pack
                errors[member.key] = describe(exc)
        if not inputs:
            return errors
        base.segments.set([(m.key, rows.embeds.shape[0]) for m, _, _, rows in inputs])
        base.packed.train()
        try:
            hidden = text_hidden(
                base.packed.text_model,
                torch.cat([rows.embeds for *_, rows in inputs]),
                torch.cat([rows.mask for *_, rows in inputs]),
                torch.cat([rows.image_embeds for *_, rows in inputs]),
                torch.cat([rows.image_positions for *_, rows in inputs]),
            )
        except Exception as exc:  # noqa: BLE001 - the shared part: this round's members
            return errors | {member.key: describe(exc) for member, *_ in inputs}
        finally:
            base.segments.set([])
        scaled, start = [], 0
        for member, batch, total, rows in inputs:
            stop = start + rows.embeds.shape[0]
            try:
                batch_sum = member_loss(member, batch, rows, hidden[start:stop])
                if not torch.isfinite(batch_sum).item():
                    raise TrainingError(f"the loss is {batch_sum.item()} (not finite)")
            except Exception as exc:  # noqa: BLE001 - that member fails, not the pack
                errors[member.key] = describe(exc)
            else:
                scaled.append(member.trial.trainer.scaled_loss(batch_sum, total))
                loss = batch_sum.detach().float()
                member.step_loss = loss if member.step_loss is None else member.step_loss + loss
            start = stop
    if scaled:
        base.segments.set([(m.key, rows.embeds.shape[0]) for m, _, _, rows in inputs])
        try:  # a checkpointed layer runs its packed linears again in backward
            torch.stack(scaled).sum().backward()
        except Exception as exc:  # noqa: BLE001 - the shared part: this round's members
            return errors | {member.key: describe(exc) for member, *_ in inputs}
        finally:
            base.segments.set([])
    return errors


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
