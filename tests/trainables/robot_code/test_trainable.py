"""The robot-code trial end to end on CPU: learning, resume, the adapter, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoTokenizer

from tests.exactness import (
    assert_same_adamw_weights,
    assert_same_first_step,
    assert_same_loss,
    chain_terms,
    checkpoint_optimizer,
)
from trainables.config import ConfigError
from trainables.robot_code.__main__ import main
from trainables.robot_code.dataset import Records, RobotCodeData, split_records
from trainables.robot_code.demo_data import generate_records
from trainables.robot_code.evaluation import decode_and_score, eval_subset
from trainables.robot_code.modeling_robot_code import (
    build_model,
    load_base,
    load_trainable,
    save_base_model,
)
from trainables.robot_code.trainable import (
    baseline_metrics,
    parse_config,
    train,
    training_texts,
)
from trainables.training import Trainer, TrainingError, plan_batches
from trainables.training_state import STATE_FILE, TRIAL_CONFIG_FILE

# One xdist worker runs this module, so its module-scoped set-up is built once;
# that set-up is long, so the module is scheduled first (tests/conftest.py).
pytestmark = [pytest.mark.xdist_group("robot_code_trainable"), pytest.mark.sweep]

# The default tiny model with batch 8 and a higher learning rate: 216 steps on 576 demo
# records take exact match from 0 to ~0.6 (3 epochs, ~10 s on one core).
LEARN = {"torch_threads": 1, "batch_size": 8, "learning_rate": 5e-3, "eval_samples": 32}
# Mechanics only (resume, splitting, saving): a smaller model, short decoding.
FAST = {
    "torch_threads": 1,
    "tiny_hidden": 32,
    "tiny_intermediate": 64,
    "tiny_vocab_size": 320,
    "eval_samples": 4,
    "max_new_tokens": 12,
}


ADAPTER = "adapter/adapter_model.safetensors"
# The reductions along FAST's tiny Llama, forward and backward (tests.exactness.chain_terms),
# their lengths added: two layers of norms, q/k/v, attention over <= 256 tokens (the
# prompt's max_length), out, and the SwiGLU's 32 and 64 (~700 a layer), the head and the
# softmax over 320 tokens; twice.
MODEL_CHAIN = 2 * (2 * 700 + 32 + 320)
SEQUENCE = 256  # tokens a sequence has at most: a step's rows are sequences x this


def assert_same_training(run, reference, rows: int, epochs: int = 2) -> None:
    """Two runs of one step an epoch, their steps' gradients accumulated differently
    (`rows`: the tokens a step sums over): the first step's moments up to reordering, the
    weights within AdamW's bound, each epoch's loss up to reordering (tests.exactness)."""
    terms = chain_terms(rows, MODEL_CHAIN)
    first = [checkpoint_optimizer(r.checkpoint(1)) for r in (run, reference)]
    assert_same_first_step(*first, terms)
    lr = parse_config(FAST).train.learning_rate
    for epoch in range(1, epochs + 1):
        ours, theirs = (load_file(r.checkpoint(epoch) / ADAPTER) for r in (run, reference))
        assert_same_adamw_weights(ours, theirs, lr, steps=epoch)
        losses = (r.metrics[epoch - 1]["train_loss"] for r in (run, reference))
        assert_same_loss(*losses, terms)


class Recorder:
    """A report hook that keeps metrics and copies every checkpoint."""

    def __init__(self, root, stop_after: int | None = None):
        self.root, self.stop_after, self.metrics = root, stop_after, []

    def __call__(self, metrics, checkpoint_dir):
        self.metrics.append(metrics)
        shutil.copytree(checkpoint_dir, self.root / f"epoch{metrics['epoch']}")
        if self.stop_after == metrics["epoch"]:
            raise KeyboardInterrupt("simulated crash")

    def checkpoint(self, epoch):
        return self.root / f"epoch{epoch}"


def records(n: int, seed: int = 0) -> Records:
    rows = generate_records(n, seed)
    return Records(
        inputs=[r["input"] for r in rows],
        outputs=[r["output"] for r in rows],
        categories=[r["category"] for r in rows],
    )


def small_data(n_train: int, n_val: int) -> RobotCodeData:
    every = records(n_train + n_val, seed=5)
    return RobotCodeData(
        train=every.take(range(n_train)),
        val=every.take(range(n_train, n_train + n_val)),
        source="test",
    )


@pytest.fixture(scope="module")
def demo_records() -> RobotCodeData:
    train_records, val_records = split_records(records(640), 0.1, seed=0)
    return RobotCodeData(train=train_records, val=val_records, source="demo")


@pytest.fixture(scope="module")
def learned(demo_records, tmp_path_factory):
    """Baseline metrics, then a 3-epoch run on 576 demo records (shared by tests)."""
    config = {**LEARN, "max_epochs": 3}
    before = baseline_metrics(config, demo_records)
    record = Recorder(tmp_path_factory.mktemp("learned"))
    derived = train(config, record, data=demo_records)
    return config, before, record, derived


def test_exact_match_rises_from_near_zero(learned, demo_records):
    _, before, record, derived = learned
    first, last = record.metrics[0], record.metrics[-1]
    assert before["exact_match"] <= 0.05
    assert last["exact_match"] >= 0.3 and last["exact_match"] > first["exact_match"]
    assert last["val_loss"] < 0.5 * before["val_loss"]
    assert last["parse_rate"] >= 0.9
    assert [m["epoch"] for m in record.metrics] == [1, 2, 3]
    categories = {"movement", "turning", "manipulation", "navigation", "sequence"}
    expected = {"epoch", "train_loss", "val_loss", "lr", "samples_per_s", "exact_match"}
    expected |= {"parse_rate", "grad_norm", "peak_mem_mb"}
    expected |= {f"exact_match_{c}" for c in categories} | {f"parse_rate_{c}" for c in categories}
    assert set(last) >= expected
    assert derived["train_records"] == len(demo_records.train) == 576
    assert derived["eval_samples"] == 32 and derived["truncated_records"] == 0
    assert derived["steps_per_epoch"] == 576 // 8 and derived["precision"] == "fp32"


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # peft 0.21
def test_checkpoint_holds_a_peft_adapter_that_reproduces_greedy_outputs(learned, demo_records):
    config, _, record, _ = learned
    checkpoint = record.checkpoint(3)
    assert json.loads((checkpoint / TRIAL_CONFIG_FILE).read_text()) == config
    assert sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file()) < 5 * 2**20
    cfg = parse_config(config)

    # The base model as train() built it, plus the adapter, through PEFT's own loader.
    torch.manual_seed(cfg.train.seed)
    base, _ = load_base(cfg.model, training_texts(demo_records, cfg.prompt))
    from_peft = PeftModel.from_pretrained(base, checkpoint / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(checkpoint / "tokenizer")

    # The same through the trainable's own resume path.
    torch.manual_seed(cfg.train.seed)
    resumed, _ = build_model(cfg.model, training_texts(demo_records, cfg.prompt))
    load_trainable(resumed, checkpoint)

    # Decode the trial's own validation subset: the scores it reported come back exactly.
    subset = demo_records.val.take(eval_subset(len(demo_records.val), 32, cfg.data.split_seed))
    runs = [
        decode_and_score(m, tokenizer, cfg.prompt, subset, 0, 64, torch.no_grad)
        for m in (from_peft, resumed)
    ]
    assert runs[0][1] == runs[1][1]
    reported = record.metrics[-1]
    assert runs[0][0] == {k: reported[k] for k in runs[0][0]}
    assert runs[0][0]["exact_match"] >= 0.3  # the trained outputs, not the base model's


def test_resumed_run_matches_uninterrupted_run_exactly(tmp_path):
    data = small_data(64, 12)
    config = {**FAST, "max_epochs": 3, "warmup_ratio": 0.5, "lora_dropout": 0.1}
    straight = Recorder(tmp_path / "straight")
    train(config, straight, data=data)

    crashed = Recorder(tmp_path / "crashed", stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        train(config, crashed, data=data)
    resumed = Recorder(tmp_path / "resumed")
    train(config, resumed, data=data, checkpoint_dir=crashed.checkpoint(2))

    assert [m["epoch"] for m in resumed.metrics] == [3]
    timing = {"samples_per_s", "tokens_per_s", "train_seconds", "eval_seconds", "peak_mem_mb"}
    expected = {k: v for k, v in straight.metrics[2].items() if k not in timing}
    assert {k: v for k, v in resumed.metrics[0].items() if k not in timing} == expected
    final = load_file(resumed.checkpoint(3) / "adapter" / "adapter_model.safetensors")
    reference = load_file(straight.checkpoint(3) / "adapter" / "adapter_model.safetensors")
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in reference)
    state = torch.load(resumed.checkpoint(3) / STATE_FILE, weights_only=True)
    assert state["epochs_done"] == 3 and state["trainer"]["global_step"] == 12


def test_micro_batches_do_not_change_the_step(tmp_path):
    data = small_data(8, 2)
    base = {**FAST, "batch_size": 8, "max_epochs": 1}
    whole, split = Recorder(tmp_path / "whole"), Recorder(tmp_path / "split")
    train({**base, "micro_batch_size": 8}, whole, data=data)
    train({**base, "micro_batch_size": 2}, split, data=data)
    assert_same_training(split, whole, rows=8 * SEQUENCE, epochs=1)


def test_bf16_autocast_runs_on_cpu_with_fp32_trainable_weights(tmp_path):
    data = small_data(16, 2)
    record = Recorder(tmp_path)
    derived = train({**FAST, "precision": "bf16", "max_epochs": 1}, record, data=data)
    assert derived["precision"] == "bf16"
    assert torch.isfinite(
        torch.tensor([record.metrics[0]["train_loss"], record.metrics[0]["val_loss"]])
    ).all()
    weights = load_file(record.checkpoint(1) / "adapter" / "adapter_model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float32}


def test_low_precision_model_keeps_what_trains_in_fp32():
    cfg = parse_config(FAST)
    model, _ = build_model(cfg.model, training_texts(small_data(8, 1), cfg.prompt), torch.bfloat16)
    Trainer(model, cfg.train, plan_batches(cfg.train, 16))  # it makes what trains fp32
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert dtypes["base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"] == (
        torch.bfloat16
    )
    assert {d for n, d in dtypes.items() if model.get_parameter(n).requires_grad} == {torch.float32}
    assert any("lora_A" in n for n in dtypes) and any("modules_to_save" in n for n in dtypes)


def test_a_saved_base_model_loads_through_from_pretrained(tmp_path):
    """The real-model path (a local checkout) on a tiny model saved like one."""
    data = small_data(16, 2)
    cfg = parse_config(FAST)
    torch.manual_seed(0)
    base, tokenizer = load_base(cfg.model, training_texts(data, cfg.prompt))
    save_base_model(base, tokenizer, tmp_path / "checkout")

    config = {**FAST, "model": str(tmp_path / "checkout"), "max_epochs": 1}
    record = Recorder(tmp_path / "run")
    derived = train(config, record, data=data)
    adapter_config = json.loads(
        (record.checkpoint(1) / "adapter" / "adapter_config.json").read_text()
    )
    assert adapter_config["modules_to_save"] is None  # a pretrained model keeps its embeddings
    assert derived["trainable_params"] == derived["lora_params"] > 0
    loaded, _ = load_base(parse_config(config).model)
    assert torch.equal(loaded.lm_head.weight, base.lm_head.weight)


def test_bad_configs_are_named(tmp_path):
    data = small_data(16, 2)
    with pytest.raises(
        ConfigError, match="unknown config key 'lora_rank' \\(did you mean 'lora_r'"
    ):
        parse_config({"lora_rank": 8})
    with pytest.raises(ConfigError, match="lora_target: v_prj names no linear layer of this "):
        train({**FAST, "lora_target": "q_proj,v_prj"}, Recorder(tmp_path), data=data)
    with pytest.raises(ConfigError, match="model: .* is neither 'tiny' nor a local directory"):
        parse_config({"model": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="max_length: must be >= 2"):
        parse_config({"max_length": 1})
    with pytest.raises(TrainingError, match="zero optimizer steps per epoch"):
        train({**FAST, "batch_size": 32}, Recorder(tmp_path), data=data)


def write_records(path, rows) -> str:
    path.write_text(json.dumps(rows))
    return str(path)


def test_cli_trains_resumes_and_exits_2_with_one_line(tmp_path, capsys):
    rows = generate_records(40, seed=9)
    data_path = write_records(tmp_path / "commands.json", rows)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(
        "".join(f"{k}: {v}\n" for k, v in FAST.items()) + f"data_path: {data_path}\nbatch_size: 8\n"
    )
    out = str(tmp_path / "out")
    assert main(["--config", str(cfg_file), "--set", "max_epochs=1", "--out", out]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"data: 36 training and 4 validation records from {data_path}"
    assert lines[1].startswith("epoch 1/1  train_loss ") and "exact_match" in lines[1]
    assert (tmp_path / "out" / "checkpoint" / "adapter" / "adapter_config.json").exists()

    assert main(["--config", str(cfg_file), "--set", "max_epochs=2", "--out", out, "--resume"]) == 0
    assert [line.split("  ")[0] for line in capsys.readouterr().out.splitlines()[1:]] == [
        "epoch 2/2"
    ]

    bad = write_records(tmp_path / "bad.json", [*rows[:3], {"input": "stop", "output": 7}])
    cases = [
        (["--set", "lerning_rate=1"], "unknown config key 'lerning_rate' (did you mean"),
        (["--set", f"data_path={bad}"], f"{bad}: record 3: 'output' must be a string"),
        (["--set", "batch_size=64"], "zero optimizer steps per epoch"),
    ]
    for extra, message in cases:
        assert main(["--config", str(cfg_file), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_cli_as_a_module_exits_2_without_a_traceback(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "trainables.robot_code", "--set", "lora_r=0"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr == "error: lora_r: expected an integer >= 1, got 0\n"
