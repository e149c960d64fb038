"""One trial: LoRA fine-tune of a causal code LM on command -> robot-code records.

    train(config, report, data=None, checkpoint_dir=None)

`config` is the flat dict a search space produces; `report(metrics, checkpoint_dir)` is
the one hook to the outside (Ray Tune's report, or a printed line when standalone).
`data` is what the task's `load_data(config)` returns, loaded once by the tuner and
shared. Set-up is a handful of named steps (`RobotCodeTrial`); the loop is the shared
one (trainables/trial_loop.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from trainables.config import ConfigError
from trainables.gradient_checkpointing import checkpointed_layers
from trainables.micro_batch import (
    choice_line,
    largest_fitting,
    probe_wanted,
    simulate_oom,
    try_micro_batch,
)
from trainables.robot_code.dataset import RobotCodeData, load_dataset
from trainables.robot_code.evaluation import (
    decode_and_score,
    eval_subset,
    validation_loss,
)
from trainables.robot_code.modeling_robot_code import (
    ModelError,
    build_model,
    load_trainable,
    parameter_counts,
    save_trainable,
)
from trainables.robot_code.prompt import (
    IGNORE_INDEX,
    Encoded,
    PromptConfig,
    collate,
    count_targets,
    encode_records,
    warn_truncated,
)
from trainables.robot_code.trial_config import TrialConfig, parse_config
from trainables.training import (
    TrainConfig,
    Trainer,
    TrainingError,
    autocast,
    epoch_order,
    largest_divisor,
    plan_batches,
    resolve_device,
    resolve_precision,
    step_batches,
    with_micro_batch,
)
from trainables.trial_loop import Trial, apply_run_options, derived_values, trial_function

LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}


def training_texts(data: RobotCodeData, prompt: PromptConfig) -> list[str]:
    """What the tiny tokenizer learns from: the training records, and the template."""
    return [*data.train.inputs, *data.train.outputs, prompt.render("")]


def causal_lm_loss(model: PeftModel) -> Callable:
    """Sum of token cross-entropies over response tokens, and their count (fp32)."""

    def loss_fn(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        # No KV cache: one full pass, never extended (and none is kept under checkpointing).
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).logits
        labels = batch["labels"][:, 1:]
        loss = F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(),
            labels.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        return loss, (labels != IGNORE_INDEX).sum()

    return loss_fn


def load_dtype(cfg: TrainConfig) -> torch.dtype:
    """The frozen weights' dtype: what autocast computes in, decided before loading so
    a 7B model never sits in memory in fp32."""
    precision = resolve_precision(cfg.precision, resolve_device(cfg.device))
    return LOW_PRECISION.get(precision, torch.float32)


def build(cfg: TrialConfig, data: RobotCodeData) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """The model a trial of `cfg` starts from (seeded: the tiny weights, LoRA's A)."""
    torch.manual_seed(cfg.train.seed)
    try:
        return build_model(cfg.model, training_texts(data, cfg.prompt), load_dtype(cfg.train))
    except ModelError as exc:
        raise ConfigError(str(exc)) from None


@dataclass
class Prepared:
    """Everything a trial's loop and evaluation read, built once."""

    train: Encoded
    val: Encoded
    subset_ids: np.ndarray  # validation records decoded greedily


def prepare(cfg: TrialConfig, data: RobotCodeData, tokenizer: PreTrainedTokenizerBase) -> Prepared:
    """Tokenize both splits once (warning about truncation) and fix the decoded subset."""
    train = encode_records(tokenizer, cfg.prompt, data.train.inputs, data.train.outputs)
    val = encode_records(tokenizer, cfg.prompt, data.val.inputs, data.val.outputs)
    warn_truncated(train, len(data.train), "training", cfg.prompt.max_length)
    warn_truncated(val, len(data.val), "validation", cfg.prompt.max_length)
    subset = eval_subset(len(data.val), cfg.eval.eval_samples, cfg.data.split_seed)
    return Prepared(train=train, val=val, subset_ids=subset)


def evaluate(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    cfg: TrialConfig,
    data: RobotCodeData,
    prepared: Prepared,
    device: torch.device,
    precision: str,
) -> dict[str, float]:
    """val_loss, and exact match / parse rate (overall and per category) on the subset."""
    started = time.perf_counter()
    batch_size = cfg.eval.eval_batch_size
    val_loss = float("nan")  # when every validation prompt fills max_length (warned)
    if len(prepared.val):
        with autocast(device, precision):
            loss_fn = causal_lm_loss(model)
            val_loss = validation_loss(model, prepared.val, loss_fn, batch_size, device)
    metrics, _ = decode_and_score(
        model,
        tokenizer,
        cfg.prompt,
        data.val.take(prepared.subset_ids),
        cfg.eval.max_new_tokens,
        batch_size,
        lambda: autocast(device, precision),
    )
    return {"val_loss": val_loss, **metrics, "eval_seconds": time.perf_counter() - started}


def describe(trainer: Trainer, model: PeftModel, prepared: Prepared) -> dict:
    """Derived values worth logging beside the hyperparameters."""
    counts, plan = parameter_counts(model), trainer.plan
    return {
        "micro_batch_size": plan.micro_batch_size,
        "accumulation": plan.accumulation,
        **derived_values(trainer, counts, checkpointed_layers(model)),
        "lora_params": counts["lora"],
        "train_records": len(prepared.train),
        "val_records": len(prepared.val),
        "eval_samples": len(prepared.subset_ids),
        "truncated_records": prepared.train.truncated + prepared.val.truncated,
    }


def baseline_metrics(config: dict[str, Any], data: RobotCodeData | None = None) -> dict:
    """Validation metrics of the model a trial starts from, untrained.

    LoRA's B starts at zero and modules_to_save start as copies, so this is the base
    model's score, the same for every trial of a sweep that shares model, seed and
    data: the figure the trained trials are compared with.
    """
    cfg = parse_config(config)
    apply_run_options(cfg.run, cfg.train.device)
    if data is None:
        data = load_dataset(cfg.data)
    model, tokenizer = build(cfg, data)
    device = resolve_device(cfg.train.device)
    model.to(device)
    prepared = prepare(cfg, data, tokenizer)
    precision = resolve_precision(cfg.train.precision, device)
    return evaluate(model, tokenizer, cfg, data, prepared, device, precision)


class RobotCodeTrial(Trial):
    """The code LM, its optimizer and the tokenized records; the loop is
    trainables.trial_loop's."""

    parse_config = staticmethod(parse_config)
    load_dataset = staticmethod(load_dataset)
    checkpoint_prefix = "robot-code-ckpt-"
    unit = "sequence"

    def __init__(self, cfg: TrialConfig, data: RobotCodeData):
        """Set-up in order: model, tokenized records, plan, optimizer."""
        self.cfg, self.data = cfg, data
        self.model, self.tokenizer = build(cfg, data)
        self.prepared = prepared = prepare(cfg, data, self.tokenizer)
        if not len(prepared.train):
            raise TrainingError(
                f"no training record keeps a response token within max_length="
                f"{cfg.prompt.max_length}: every prompt fills it"
            )
        plan = plan_batches(cfg.train, len(prepared.train))
        self.trainer = Trainer(self.model, cfg.train, plan)
        self.model.to(self.trainer.device)
        self.lm_loss = causal_lm_loss(self.model)
        if not cfg.train.micro_batch_size and probe_wanted(self.trainer.device):
            self.measure_micro_batch()
        self.derived = describe(self.trainer, self.model, prepared)

    def measure_micro_batch(self) -> None:
        """The largest micro-batch (a divisor of batch_size) of the longest sequences that
        fits, halving from batch_size down to one sequence; before the first epoch."""
        train, trainer = self.prepared.train, self.trainer
        batch_size = self.cfg.train.batch_size
        longest = np.argsort(-train.lengths, kind="stable")

        def try_size(size: int) -> None:
            rows = longest[: largest_divisor(batch_size, size)]
            try_micro_batch(trainer, collate(train, rows, trainer.device), self.loss)

        what = f"one sequence ({int(train.lengths[longest[0]])} tokens)"
        size = largest_fitting(try_size, batch_size, 1, what, trainer.device)
        micro = largest_divisor(batch_size, size)
        trainer.plan = with_micro_batch(trainer.plan, micro, batch_size)
        print(choice_line("micro_batch_size", micro, batch_size), flush=True)

    def steps(self, epoch: int) -> Iterator[tuple[list[dict], int]]:
        train, device = self.prepared.train, self.trainer.device
        order = epoch_order(len(train), self.cfg.train.seed, epoch)
        for micro_rows in step_batches(order, self.trainer.plan, self.cfg.train.batch_size):
            micro_batches = [collate(train, rows, device) for rows in micro_rows]
            yield micro_batches, sum(int(train.lengths[rows].sum()) for rows in micro_rows)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        simulate_oom(len(batch["input_ids"]))
        return self.lm_loss(batch)

    def split(self, batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Halves by row, each trimmed to its own longest sequence."""
        size = len(batch["input_ids"])
        if size < 2:
            return [batch]
        halves = []
        for rows in (slice(0, size // 2), slice(size // 2, size)):
            width = int(batch["attention_mask"][rows].sum(dim=1).max())
            halves.append({k: v[rows, :width] for k, v in batch.items()})
        return halves

    def count_targets(self, batch: dict[str, torch.Tensor]) -> int:
        return count_targets(batch)

    def throughput(self, tokens: int, samples: int, seconds: float) -> dict[str, float]:
        return {"tokens_per_s": tokens / seconds}

    def validate(self) -> dict[str, float]:
        if not len(self.data.val):
            return {}
        trainer = self.trainer
        return evaluate(
            self.model,
            self.tokenizer,
            self.cfg,
            self.data,
            self.prepared,
            trainer.device,
            trainer.precision,
        )

    def save_weights(self, directory: Path) -> None:
        save_trainable(self.model, self.tokenizer, self.cfg.model, directory)

    def load_weights(self, directory: Path) -> None:
        load_trainable(self.model, directory)


train = trial_function(RobotCodeTrial)
