"""Response-only loss mask, truncation, padding, and the byte-level tokenizer."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from trainables.robot_code.prompt import (
    IGNORE_INDEX,
    PromptConfig,
    collate,
    count_targets,
    encode_records,
    left_pad,
    tokenize_prompts,
)
from trainables.robot_code.tokenizer import train_bpe, train_code_tokenizer

TEXTS = [
    "move forward 3 meters",
    "robot.move_forward(distance=3.0, speed=1.0)",
    "pick up the red cube",
    'robot.pick_up(object="cube", color="red")',
]
TEMPLATE = "Command: {input}\nCode:\n"


@pytest.fixture(scope="module")
def tokenizer():
    return train_code_tokenizer([*TEXTS, TEMPLATE.replace("{input}", "")], 320)


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_only_response_and_eos_are_targets(tokenizer):
    cfg = PromptConfig(prompt_template=TEMPLATE, max_length=256)
    command, code = TEXTS[0], TEXTS[1]
    encoded = encode_records(tokenizer, cfg, [command], [code])

    prompt = [tokenizer.bos_token_id, *ids(tokenizer, f"Command: {command}\nCode:\n")]
    response = [*ids(tokenizer, code), tokenizer.eos_token_id]
    assert encoded.input_ids[0].tolist() == prompt + response
    assert encoded.labels[0].tolist() == [IGNORE_INDEX] * len(prompt) + response
    assert encoded.lengths.tolist() == [len(prompt) + len(response)]
    assert encoded.prompt_lengths.tolist() == [len(prompt)]
    assert encoded.truncated == 0 and encoded.kept.tolist() == [0]
    # The response decodes back to the reference exactly: exact match depends on it.
    assert tokenizer.decode(response[:-1]) == code
    assert tokenize_prompts(tokenizer, cfg, [command]) == [prompt]


def test_padding_is_masked_and_batches_trim_to_their_longest_row(tokenizer):
    cfg = PromptConfig(prompt_template=TEMPLATE)
    encoded = encode_records(tokenizer, cfg, [TEXTS[0], TEXTS[2]], [TEXTS[1], "robot.stop()"])
    short = int(np.argmin(encoded.lengths))
    assert (encoded.labels[short, encoded.lengths[short] :] == IGNORE_INDEX).all()
    assert (encoded.input_ids[short, encoded.lengths[short] :] == tokenizer.pad_token_id).all()

    batch = collate(encoded, np.array([short]), torch.device("cpu"))
    assert batch["input_ids"].shape == (1, encoded.lengths[short])
    assert batch["attention_mask"].all()
    both = collate(encoded, np.array([0, 1]), torch.device("cpu"))
    assert both["attention_mask"].sum(dim=1).tolist() == encoded.lengths.tolist()
    response_tokens = [len(ids(tokenizer, t)) + 1 for t in (TEXTS[1], "robot.stop()")]
    assert count_targets(both) == sum(response_tokens)


def test_truncation_is_counted_and_prompt_only_records_are_left_out(tokenizer, caplog):
    long_code = "\n".join([TEXTS[1]] * 20)
    prompt_len = 1 + len(ids(tokenizer, TEMPLATE.replace("{input}", TEXTS[0])))
    cfg = PromptConfig(prompt_template=TEMPLATE, max_length=prompt_len + 5)
    commands = [TEXTS[0], TEXTS[0], TEXTS[0] + " " + TEXTS[2] * 5]
    encoded = encode_records(tokenizer, cfg, commands, [TEXTS[1], long_code, TEXTS[3]])
    assert len(ids(tokenizer, TEXTS[1])) > 5  # so every record is cut
    assert encoded.truncated == 3
    assert encoded.kept.tolist() == [0, 1]  # the third record's prompt fills max_length
    assert encoded.input_ids.shape[1] == cfg.max_length
    assert encoded.labels[1].tolist()[prompt_len:] == ids(tokenizer, long_code)[:5]

    from trainables.robot_code.prompt import warn_truncated

    with caplog.at_level(logging.WARNING):
        warn_truncated(encoded, 3, "training", cfg.max_length)
    assert f"of 3 training records are longer than max_length={cfg.max_length} tokens" in (
        caplog.text
    )
    assert "(1 kept no response token and were left out)" in caplog.text


def test_generation_prompts_are_left_padded():
    input_ids, mask = left_pad([[1, 5, 6], [1, 7]], pad=3)
    assert input_ids.tolist() == [[1, 5, 6], [3, 1, 7]]
    assert mask.tolist() == [[1, 1, 1], [0, 1, 1]]


@pytest.mark.parametrize("template", ["no placeholder", "{input} and {input}"])
def test_template_needs_one_placeholder(template):
    with pytest.raises(ValueError, match="prompt_template: must contain"):
        PromptConfig(prompt_template=template)


def test_braces_in_commands_and_templates_are_literal():
    cfg = PromptConfig(prompt_template='{"cmd": "{input}"}\n')
    assert cfg.render("say {hi}") == '{"cmd": "say {hi}"}\n'


TOKENIZER_HASH = """
import hashlib, sys
from trainables.robot_code.tokenizer import train_bpe
print(hashlib.sha256(train_bpe(sys.argv[1:], 320).to_str().encode()).hexdigest())
"""


def test_tokenizer_round_trips_and_is_the_same_in_another_process(tokenizer):
    for text in [*TEXTS, 'x = "é"\n\tprint({x})  ', "  two  spaces"]:
        assert tokenizer.decode(ids(tokenizer, text)) == text
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<unk>", "<s>", "</s>", "<pad>"]
    # Rebuilt on resume in a new process (new hash seeds): must be the very same tokenizer.
    texts = [*reversed(TEXTS), TEMPLATE.replace("{input}", ""), TEXTS[0]]
    out = subprocess.run(
        [sys.executable, "-c", TOKENIZER_HASH, *texts], capture_output=True, text=True, check=True
    )
    here = train_bpe(texts, 320)
    assert out.stdout.strip() == hashlib.sha256(here.to_str().encode()).hexdigest()
    assert here.get_vocab() == tokenizer.get_vocab()
