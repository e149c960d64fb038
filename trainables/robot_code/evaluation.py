"""Validation: loss on every validation record, greedy decoding on a fixed subset.

Exact match compares the decoded response with the reference after stripping leading
and trailing whitespace (a SentencePiece tokenizer may add a leading space), nothing
else: `speed=1.0` and `speed=1` are different programs to a robot API reviewer.
Parse rate is the share of responses `ast.parse` accepts: a model that has learned the
shape of a call but not yet the arguments shows here first.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # keeps EvalConfig importable without peft (~5 s): config checks
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

from trainables.robot_code.dataset import UNCATEGORIZED, Records
from trainables.robot_code.prompt import (
    Encoded,
    PromptConfig,
    collate,
    left_pad,
    special_ids,
    tokenize_prompts,
)

AUTO_NEW_TOKENS_MARGIN = 16


@dataclass
class EvalConfig:
    # validation records decoded greedily each epoch (a fixed subset); 0: all of them
    eval_samples: int = 128
    # generation cap; 0: the subset's longest reference + 16 (no exact match can be longer)
    max_new_tokens: int = 0
    # prompts per generate call and rows per validation forward: a memory choice (it
    # changes scores by float noise at most). Decoding is one small forward per token, so
    # wide batches keep it cheap: 48 untrained prompts x 73 new tokens take 1.0 s in one
    # batch and 2.5 s in batches of 16 (tiny model, one CPU core).
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.eval_batch_size, bool) or self.eval_batch_size < 1:
            raise ValueError(
                f"eval_batch_size: must be an integer >= 1, got {self.eval_batch_size}"
            )
        for key in ("eval_samples", "max_new_tokens"):
            value = getattr(self, key)
            if isinstance(value, bool) or value < 0:
                raise ValueError(f"{key}: must be an integer >= 0, got {value}")


def eval_subset(num_val: int, eval_samples: int, seed: int) -> np.ndarray:
    """Indices of the decoded subset: fixed by (size, seed) so every epoch and every
    trial of a sweep is scored on the same records, and drawn at random so a file sorted
    by category still gives every category its share."""
    if eval_samples == 0 or eval_samples >= num_val:
        return np.arange(num_val)
    return np.sort(np.random.default_rng([seed, 1]).permutation(num_val)[:eval_samples])


def metric_suffix(category: str) -> str:
    """`exact_match_<suffix>`: lower-case letters, digits and underscores only, so the
    name is valid in MLflow and in a shell."""
    if category == UNCATEGORIZED:
        return "uncategorized"
    return re.sub(r"[^a-z0-9]+", "_", category.lower()).strip("_") or "uncategorized"


def parses(code: str) -> bool:
    """Whether the stripped response is a non-empty Python module (stripped, as exact
    match compares: a leading space would otherwise be an IndentationError)."""
    code = code.strip()
    if not code:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # e.g. invalid escapes
            ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: null bytes
        return False
    return True


def score(predictions: list[str], references: list[str], categories: list[str]) -> dict:
    """exact_match and parse_rate overall and per category (`_<category>` suffix)."""
    exact = [p.strip() == r.strip() for p, r in zip(predictions, references, strict=True)]
    parsed = [parses(p) for p in predictions]
    metrics = {"exact_match": float(np.mean(exact)), "parse_rate": float(np.mean(parsed))}
    groups: dict[str, list[int]] = defaultdict(list)
    for i, category in enumerate(categories):
        groups[metric_suffix(category)].append(i)
    for suffix, rows in sorted(groups.items()):
        metrics[f"exact_match_{suffix}"] = float(np.mean([exact[i] for i in rows]))
        metrics[f"parse_rate_{suffix}"] = float(np.mean([parsed[i] for i in rows]))
    return metrics


def generation_budget(
    tokenizer: PreTrainedTokenizerBase, references: list[str], max_new_tokens: int
) -> int:
    if max_new_tokens:
        return max_new_tokens
    lengths = [len(ids) for ids in tokenizer(references, add_special_tokens=False)["input_ids"]]
    return max(lengths, default=0) + 1 + AUTO_NEW_TOKENS_MARGIN  # + 1: EOS


@torch.no_grad()
def greedy_decode(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int,
    autocast: Callable[[], AbstractContextManager],
) -> list[str]:
    """Responses (text after the prompt, up to EOS) for token-id prompts, in order."""
    _, eos, pad = special_ids(tokenizer)
    device = next(model.parameters()).device
    model.eval()
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[start : start + batch_size], pad)
        with autocast():
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                eos_token_id=eos,
                pad_token_id=pad,
            )
        for row in out[:, ids.shape[1] :].tolist():
            if eos in row:
                row = row[: row.index(eos)]
            texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return texts


@torch.no_grad()
def validation_loss(
    model: PeftModel,
    encoded: Encoded,
    loss_fn: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]],
    batch_size: int,
    device: torch.device,
) -> float:
    """Mean cross-entropy per response token over every (kept) validation record."""
    model.eval()
    loss_sum, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        rows = np.arange(start, min(start + batch_size, len(encoded)))
        batch_sum, n = loss_fn(collate(encoded, rows, device))
        loss_sum, count = loss_sum + batch_sum.item(), count + int(n)
    return loss_sum / count


def decode_and_score(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_cfg: PromptConfig,
    records: Records,
    max_new_tokens: int,
    batch_size: int,
    autocast: Callable[[], AbstractContextManager],
) -> tuple[dict[str, float], list[str]]:
    """Greedy responses for `records` and their scores."""
    prompts = tokenize_prompts(tokenizer, prompt_cfg, records.inputs)
    budget = generation_budget(tokenizer, records.outputs, max_new_tokens)
    predictions = greedy_decode(model, tokenizer, prompts, budget, batch_size, autocast)
    return score(predictions, records.outputs, records.categories), predictions
