"""Prompt template, tokenization and the response-only loss mask.

A training sequence is `[BOS] + prompt + response + [EOS]`, where the prompt is the
template filled with the command. Only response and EOS tokens are targets: the model
is never taught to produce the command it was given, and learning to emit EOS is what
lets greedy decoding stop. Prompt and response are tokenized separately and joined, so
the boundary is exact (a BPE merge across it would blur which token is the first
target) and the prompt tokens at generation time are the very ones seen in training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # transformers is imported by whoever builds a tokenizer
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # label of a position that is not a target (PyTorch's CE default)
PLACEHOLDER = "{input}"
DEFAULT_TEMPLATE = "### Command:\n{input}\n### Code:\n"

log = logging.getLogger(__name__)


@dataclass
class PromptConfig:
    # Filled by replacing "{input}" (not str.format: code and commands may hold braces).
    prompt_template: str = DEFAULT_TEMPLATE
    max_length: int = 256  # tokens per training sequence, BOS and EOS included

    def __post_init__(self) -> None:
        if self.prompt_template.count(PLACEHOLDER) != 1:
            raise ValueError(
                f"prompt_template: must contain {PLACEHOLDER} exactly once, "
                f"got {self.prompt_template!r}"
            )
        if isinstance(self.max_length, bool) or self.max_length < 2:
            raise ValueError(f"max_length: must be >= 2 (BOS + one target), got {self.max_length}")

    def render(self, command: str) -> str:
        return self.prompt_template.replace(PLACEHOLDER, command)


@dataclass
class Encoded:
    """Tokenized records, right-padded into (N, L) arrays (L = the longest record)."""

    input_ids: np.ndarray  # int64, pad id beyond each row's length
    labels: np.ndarray  # int64, IGNORE_INDEX except at response and EOS tokens
    lengths: np.ndarray  # int64 (N,), tokens per record after truncation
    prompt_lengths: np.ndarray  # int64 (N,), BOS + prompt tokens (before truncation)
    truncated: int  # records cut at max_length
    kept: np.ndarray  # int64 indices (into the input lists) of records with a target left

    def __len__(self) -> int:
        return len(self.kept)


def special_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int | None, int, int]:
    """(bos or None, eos, pad): EOS is required (decoding must stop); PAD falls back to
    EOS, as Llama tokenizers have none (padding is masked out either way)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer: has no EOS token; greedy decoding could never stop")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return tokenizer.bos_token_id, tokenizer.eos_token_id, pad


def tokenize_prompts(
    tokenizer: PreTrainedTokenizerBase, cfg: PromptConfig, commands: list[str]
) -> list[list[int]]:
    """[BOS] + prompt tokens per command: the exact prefix training used."""
    bos, _, _ = special_ids(tokenizer)
    prompts = [cfg.render(c) for c in commands]
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"] if prompts else []
    head = [bos] if bos is not None else []
    return [head + ids for ids in encoded]


def encode_records(
    tokenizer: PreTrainedTokenizerBase,
    cfg: PromptConfig,
    commands: list[str],
    responses: list[str],
) -> Encoded:
    """Token ids and response-only labels, truncated on the right at max_length.

    A record whose prompt alone fills max_length keeps no target; it is left out (its
    index is missing from `kept`) rather than padding every step with a no-op row.
    """
    _, eos, pad = special_ids(tokenizer)
    prompts = tokenize_prompts(tokenizer, cfg, commands)
    answers = tokenizer(responses, add_special_tokens=False)["input_ids"] if responses else []
    rows, targets, prompt_lengths, kept, truncated = [], [], [], [], 0
    for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        ids = prompt + answer + [eos]
        labels = [IGNORE_INDEX] * len(prompt) + answer + [eos]
        if len(ids) > cfg.max_length:
            truncated += 1
            ids, labels = ids[: cfg.max_length], labels[: cfg.max_length]
        prompt_lengths.append(len(prompt))
        if len(prompt) >= len(ids):
            continue
        kept.append(i)
        rows.append(ids)
        targets.append(labels)
    width = max((len(r) for r in rows), default=1)
    input_ids = np.full((len(rows), width), pad, dtype=np.int64)
    label_arr = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
    for row, (ids, labels) in enumerate(zip(rows, targets, strict=True)):
        input_ids[row, : len(ids)] = ids
        label_arr[row, : len(labels)] = labels
    return Encoded(
        input_ids=input_ids,
        labels=label_arr,
        lengths=np.asarray([len(r) for r in rows], dtype=np.int64),
        prompt_lengths=np.asarray(prompt_lengths, dtype=np.int64)[kept],
        truncated=truncated,
        kept=np.asarray(kept, dtype=np.int64),
    )


def warn_truncated(encoded: Encoded, total: int, split: str, max_length: int) -> None:
    """One warning line per split with truncated records; silent when none were."""
    if not encoded.truncated:
        return
    dropped = total - len(encoded)
    line = (
        f"{encoded.truncated} of {total} {split} records are longer than "
        f"max_length={max_length} tokens and were truncated"
    )
    if dropped:
        line += f" ({dropped} kept no response token and were left out)"
    log.warning(line)


def collate(encoded: Encoded, rows: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    """A micro-batch of rows, trimmed to its own longest record (dynamic padding)."""
    width = int(encoded.lengths[rows].max())
    positions = np.arange(width)[None, :]
    batch = {
        "input_ids": torch.from_numpy(encoded.input_ids[rows, :width]),
        "labels": torch.from_numpy(encoded.labels[rows, :width]),
        "attention_mask": torch.from_numpy(
            (positions < encoded.lengths[rows, None]).astype(np.int64)
        ),
    }
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def count_targets(batch: dict[str, torch.Tensor]) -> int:
    """Target tokens in a batch (what the loss sums over), without a forward pass."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def left_pad(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) for generation: prompts end at the same column, so the
    first new token of every row is predicted at the last position."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids, mask
