"""Instruction tokens for the policy.

The tiny backbone gets a word-level tokenizer trained on the dataset's instructions with
`tokenizers`: no hub, a vocabulary of tens of words, and special-token ids that match
Kosmos-2's (<s>=0, <pad>=1, </s>=2), so the tiny text model uses the same padding index as
the real one. A pretrained backbone brings its own tokenizer from its directory.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

BOS, PAD, EOS, UNK = "<s>", "<pad>", "</s>", "<unk>"
SPECIAL_TOKENS = (BOS, PAD, EOS, UNK)  # ids 0..3, as in Kosmos-2's vocabulary


def train_instruction_tokenizer(instructions: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the distinct instructions.

    Deterministic given the instruction list: duplicates and order do not matter (the
    trainer ranks words by count, then alphabetically, over the sorted distinct strings).
    """
    if not instructions:
        raise ValueError("instructions: need at least one instruction to build a tokenizer")
    backend = Tokenizer(models.WordLevel(unk_token=UNK))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(
        special_tokens=list(SPECIAL_TOKENS), min_frequency=0, show_progress=False
    )
    backend.train_from_iterator(sorted(set(instructions)), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="right",
    )


def encode_instructions(
    tokenizer: PreTrainedTokenizerBase, instructions: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (N, L) int64, one row per instruction.

    Each row is [BOS] + the instruction's tokens, right-padded to the longest row. Each
    distinct string is tokenized once. The policy inserts the image tokens after BOS and
    its action token after the last real token.
    """
    if tokenizer.bos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError("tokenizer: needs a BOS and a PAD token")
    distinct = sorted(set(instructions))
    encoded = tokenizer(distinct, add_special_tokens=False)["input_ids"]
    rows = {
        text: [tokenizer.bos_token_id, *ids] for text, ids in zip(distinct, encoded, strict=True)
    }
    length = max((len(r) for r in rows.values()), default=1)
    input_ids = torch.full((len(instructions), length), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(instructions), length), dtype=torch.long)
    for i, text in enumerate(instructions):
        row = rows[text]
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask
