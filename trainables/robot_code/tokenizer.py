"""A byte-level BPE tokenizer for the tiny code model, trained on the dataset's text.

Byte-level, because exact match compares decoded text with the reference character by
character: every string (spaces, newlines, quotes, any Unicode) must come back from
`decode(encode(s))` unchanged, which a word-level tokenizer cannot promise. BPE, because
a few hundred merges turn `robot.`, `distance=` and `speed=1.0` into single tokens, so
responses are ~20 tokens instead of ~60 characters and greedy decoding is short.

Special-token ids follow Llama's vocabulary (<unk>=0, <s>=1, </s>=2), plus <pad>=3.
Training is deterministic given the texts: they are deduplicated and sorted first, and
the BPE trainer breaks count ties by the pair itself (checked across processes in the
tests), so a resumed trial rebuilds the very same tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = (UNK, BOS, EOS, PAD)  # ids 0..3


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """The `tokenizers` model alone: byte-level BPE over the distinct texts, at most
    `vocab_size` tokens in all."""
    distinct = sorted(set(texts))
    if not distinct:
        raise ValueError("texts: need at least one text to train a tokenizer")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(distinct, trainer=trainer)
    return backend


def train_code_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """`train_bpe` wrapped as a transformers tokenizer (what models and PEFT expect)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(texts, vocab_size),
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
