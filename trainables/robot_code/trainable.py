"""One trial: LoRA fine-tune of a causal code LM on command -> robot-code records.

    train(config, report, data=None, checkpoint_dir=None)

`config` is the flat dict a search space produces; `report(metrics, checkpoint_dir)` is
the one hook to the outside (Ray Tune's report, or a printed line when standalone).
`data` is what `load_data(config)` returns, loaded once by the tuner and shared. Set-up
is a handful of named steps; the loop below is the whole of training.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from trainables.config import ConfigError
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
from trainables.robot_code.trial_config import RunOptions, TrialConfig, parse_config
from trainables.training import (
    BatchPlan,
    TrainConfig,
    Trainer,
    TrainingError,
    autocast,
    epoch_order,
    load_training_state,
    peak_memory_mb,
    plan_batches,
    resolve_device,
    resolve_precision,
    save_training_state,
    step_batches,
    trial_metrics,
)

Report = Callable[[dict[str, Any], str], None]
LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}


def load_data(config: dict[str, Any]) -> RobotCodeData:
    """The records a trial of this config trains on: plain strings, for the object store.
    Without data_path, the demo set (generated once into the cache)."""
    return load_dataset(parse_config(config).data)


def training_texts(data: RobotCodeData, prompt: PromptConfig) -> list[str]:
    """What the tiny tokenizer learns from: the training records, and the template."""
    return [*data.train.inputs, *data.train.outputs, prompt.render("")]


def causal_lm_loss(model: PeftModel) -> Callable:
    """Sum of token cross-entropies over response tokens, and their count (fp32)."""

    def loss_fn(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        loss = F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(),
            labels.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        return loss, (labels != IGNORE_INDEX).sum()

    return loss_fn


def save_checkpoint(
    directory: Path,
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    cfg: TrialConfig,
    trainer: Trainer,
    epoch: int,
    flat: dict[str, Any],
) -> None:
    """LoRA adapter (PEFT format) + tokenizer + optimizer/scheduler/scaler + RNG + position."""
    save_trainable(model, tokenizer, cfg.model, directory)
    save_training_state(directory, trainer, epoch, flat)


def restore_checkpoint(directory: Path, model: PeftModel, trainer: Trainer) -> int:
    """Load a checkpoint into the built model and trainer; returns epochs already done."""
    load_trainable(model, directory)
    return load_training_state(directory, trainer)


def apply_run_options(run: RunOptions) -> None:
    if run.torch_threads:
        torch.set_num_threads(run.torch_threads)


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


def describe(plan: BatchPlan, trainer: Trainer, model: PeftModel, prepared: Prepared) -> dict:
    """Derived values worth logging beside the hyperparameters."""
    counts = parameter_counts(model)
    return {
        "micro_batch_size": plan.micro_batch_size,
        "accumulation": plan.accumulation,
        "steps_per_epoch": plan.steps_per_epoch,
        "warmup_steps": plan.warmup_steps,
        "precision": trainer.precision,
        "device": str(trainer.device),
        "trainable_params": counts["trainable"],
        "lora_params": counts["lora"],
        "total_params": counts["total"],
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
    apply_run_options(cfg.run)
    if data is None:
        data = load_dataset(cfg.data)
    model, tokenizer = build(cfg, data)
    device = resolve_device(cfg.train.device)
    model.to(device)
    prepared = prepare(cfg, data, tokenizer)
    precision = resolve_precision(cfg.train.precision, device)
    return evaluate(model, tokenizer, cfg, data, prepared, device, precision)


def train(
    config: dict[str, Any],
    report: Report,
    data: RobotCodeData | None = None,
    checkpoint_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run the trial to max_epochs (or on from a checkpoint); returns the derived values."""
    cfg = parse_config(config)
    apply_run_options(cfg.run)

    # --- set-up: data, model, batches, optimizer, position
    if data is None:
        data = load_dataset(cfg.data)
    model, tokenizer = build(cfg, data)
    prepared = prepare(cfg, data, tokenizer)
    if not len(prepared.train):
        raise TrainingError(
            f"no training record keeps a response token within max_length="
            f"{cfg.prompt.max_length}: every prompt fills it"
        )
    plan = plan_batches(cfg.train, len(prepared.train))
    trainer = Trainer(model, cfg.train, plan)
    model.to(trainer.device)
    loss_fn = causal_lm_loss(model)
    start_epoch = restore_checkpoint(Path(checkpoint_dir), model, trainer) if checkpoint_dir else 0
    derived = describe(plan, trainer, model, prepared)

    # --- the loop: one epoch = one report
    for epoch in range(start_epoch, cfg.train.max_epochs):
        started = time.perf_counter()
        losses, norms, tokens = [], [], 0
        order = epoch_order(len(prepared.train), cfg.train.seed, epoch)
        for micro_rows in step_batches(order, plan, cfg.train.batch_size):
            micro_batches = [collate(prepared.train, rows, trainer.device) for rows in micro_rows]
            loss, norm = trainer.step(micro_batches, loss_fn, count_targets)
            losses.append(loss)
            norms.append(norm)
            tokens += sum(int(prepared.train.lengths[rows].sum()) for rows in micro_rows)
        train_seconds = time.perf_counter() - started

        samples = plan.steps_per_epoch * cfg.train.batch_size
        metrics = trial_metrics(epoch, losses, norms, trainer, samples, train_seconds)
        metrics["tokens_per_s"] = tokens / train_seconds
        if len(data.val):
            metrics |= evaluate(
                model, tokenizer, cfg, data, prepared, trainer.device, trainer.precision
            )
        metrics["peak_mem_mb"] = peak_memory_mb(trainer.device)
        metrics["derived"] = derived  # constant per trial: the tuner logs them as params
        with tempfile.TemporaryDirectory(prefix="robot-code-ckpt-") as tmp:
            save_checkpoint(Path(tmp), model, tokenizer, cfg, trainer, epoch, config)
            report(metrics, tmp)
    return derived
