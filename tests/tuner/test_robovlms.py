"""RoboVLMs configs in (`--from-robovlms`) and out (`tuner.export`), in the real schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tuner.conftest import SMALL_GRID, run_main
from trainables.config import ConfigError
from trainables.mobile_vla.checkpoint import HEAD_FILE
from trainables.mobile_vla.inference import Policy
from trainables.mobile_vla.robovlms_config import split_batch, to_robovlms
from trainables.mobile_vla.robovlms_import import check_final, from_robovlms, load_robovlms
from tuner.export import main as export_main
from tuner.run import main
from tuner.storage import BEST_FILE, SWEEP_FILE, Storage

CONFIGS = Path(__file__).parent / "robovlms_configs"
MOBILE = CONFIGS / "mobile_vla.json"
CALVIN = CONFIGS / "calvin_finetune.json"


def test_mobile_vla_config_maps_key_by_key():
    imported = from_robovlms(load_robovlms(MOBILE))
    assert imported.flat == {
        "window_size": 16, "fwd_pred_next_n": 2, "precision": "fp16", "lr_schedule": "cosine",
        "learning_rate": 1e-4, "min_lr_scale": 0.01, "weight_decay": 0.01, "warmup_ratio": 0.25,
        "seed": 123, "model": ".vlms/kosmos-2-patch14-224", "action_bound": 1.15,
        "train_vision": True, "freeze_backbone": False, "train_text_embedding": True,
        "lora_enable": False, "lora_r": 64, "lora_alpha": 16, "lora_dropout": 0.05,
        "gradient_checkpointing": False, "head_hidden": 1024, "grad_clip": 1.0,
        "max_epochs": 10, "batch_size": 32,
    }  # fmt: skip
    assert imported.ignored == [
        "robovlm_name", "model", "vlm", "train_dataset", "train_setup.predict_action",
        "train_setup.freeze_resampler", "act_head.down_sample", "trainer.accelerator",
        "trainer.strategy",
    ]  # fmt: skip


def test_calvin_config_merges_its_parent_and_counts_devices():
    raw = load_robovlms(CALVIN)
    assert "parent" not in raw and raw["tokenizer"]["type"] == "AutoProcessor"
    imported = from_robovlms(raw)
    flat = imported.flat
    assert (flat["window_size"], flat["fwd_pred_next_n"], flat["precision"]) == (8, 10, "bf16")
    assert flat["learning_rate"] == 2e-5 and flat["max_epochs"] == 5  # from the parent
    assert flat["batch_size"] == 2 * 2 * 4 and imported.devices == 4
    assert imported.ignored == ["model", "tokenizer", "train_dataset"]


def test_top_level_window_overwrites_the_heads():
    raw = {"window_size": 12, "act_head": {"window_size": 4, "fwd_pred_next_n": 3}}
    assert from_robovlms(raw).flat == {"window_size": 12, "fwd_pred_next_n": 3}


@pytest.mark.parametrize(
    "patch,message",
    [
        ({"act_head": {"history_type": "pre"}}, "act_head.history_type: 'pre'"),
        ({"act_head": {"type": "FCDecoder"}}, "act_head.type: 'FCDecoder'"),
        ({"act_head": {"with_history": False}}, "act_head.with_history: False"),
        ({"train_setup": {"lora_bias": "all"}}, "train_setup.lora_bias: 'all'"),
        ({"scheduler": "step"}, "scheduler: 'step'"),
        ({"trainer": {"precision": "64"}}, "trainer.precision: '64'"),
        ({"warmup_steps": 500}, "warmup_steps: 500"),
        ({"trainer": {"max_steps": 2.5}}, "trainer.max_steps: 2.5"),
        ({"norm_action": False}, "norm_action: False"),
        ({"norm_min": -1.0}, "norm_min: -1.0"),
        ({"trainer": {"devices": "auto"}}, "trainer.devices: 'auto'"),
    ],
)
def test_values_vla_tune_cannot_honour_exit_2(capsys, sweep_args, tmp_path, patch, message):
    raw = json.loads(MOBILE.read_text())
    for key, value in patch.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    space = tmp_path / "space.yaml"
    space.write_text(SMALL_GRID)
    args = sweep_args(space, "--from-robovlms", str(path), "--model", "tiny", "--dry-run")
    code, err = run_main(capsys, args)
    assert code == 2 and err.startswith(f"error: {path}: {message}: ")
    assert not (tmp_path / "results").exists()


def test_missing_relative_model_path_needs_model(capsys, sweep_args, write_space):
    args = sweep_args(write_space(SMALL_GRID), "--from-robovlms", str(CALVIN), "--dry-run")
    code, err = run_main(capsys, args)
    assert code == 2
    assert err == (
        f"error: {CALVIN}: model_path: '.vlms/kosmos-2-patch14-224': no such folder here "
        "(give --model)"
    )


def test_image_stats_must_match_a_real_model(tmp_path):
    from transformers import Kosmos2Config

    folder = tmp_path / "kosmos"
    Kosmos2Config().save_pretrained(folder)  # a config is all the check reads
    raw = load_robovlms(MOBILE)
    assert check_final(raw, {"model": str(folder)}, model_given=True) == [
        "act_head.action_dim 3: vla-tune trains on the episodes' 2 action dims (linear_x, linear_y)"
    ]  # 224 and CLIP's statistics: what the model preprocesses with
    with pytest.raises(ConfigError, match=r"image_size: 256: the model .* \[224, 224\]"):
        check_final({**raw, "image_size": 256}, {"model": str(folder)}, model_given=True)


def dry_run_json(capsys, args) -> dict:
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)  # stdout holds the document and nothing else


def test_precedence_and_json_dry_run(capsys, sweep_args, write_space):
    space = write_space(SMALL_GRID)  # searches learning_rate, weight_decay; fixes batch 32
    args = sweep_args(
        space, "--from-robovlms", str(MOBILE), "--model", "tiny", "--dry-run", "--json",
        "--set", "weight_decay=0.2", "--set", "batch_size=8",
    )  # fmt: skip
    doc = dry_run_json(capsys, args)
    assert doc["space"] == "space" and len(doc["trials"]) == 2  # weight_decay pinned
    for trial in doc["trials"]:
        assert trial["model"] == "tiny"  # --model wins over model_path
        assert trial["max_epochs"] == 10  # trainer.max_epochs wins over the space's fixed 2
        assert trial["batch_size"] == 8 and trial["weight_decay"] == 0.2  # --set wins
        assert (trial["window_size"], trial["precision"], trial["lr_schedule"]) == (
            16, "fp16", "cosine"
        )  # the file wins over the defaults  # fmt: skip
    assert [t["learning_rate"] for t in doc["trials"]] == [3e-3, 1e-5]  # the space searches
    assert doc["ignored"][:2] == ["robovlm_name", "model"]
    notes = "\n".join(doc["notes"])
    assert "image_size 224: the tiny demo model uses [56, 56]" in notes
    assert "act_head.action_dim 3" in notes
    assert "searched by the space, not taken from" in notes and "learning_rate=0.0001" in notes
    import torch

    assert ("precision fp16 needs a CUDA device" in notes) != torch.cuda.is_available()


def test_fresh_export_is_in_robovlms_schema():
    flat = {"data_dir": "/d", "batch_size": 128, "precision": "fp16", "lr_schedule": "cosine"}
    doc = to_robovlms(flat, devices=2)
    assert doc["batch_size"] * doc["trainer"]["accumulate_grad_batches"] * 2 == 128
    assert doc["batch_size"] == 32 and doc["trainer"]["devices"] == 2
    assert doc["scheduler"] == "cosine" and "lr_schedule" not in doc
    assert doc["trainer"]["precision"] == doc["train_setup"]["precision"] == "16-mixed"
    head = doc["act_head"]
    assert head["hidden_size"] == 64 and head["with_history"] is True
    assert head["history_type"] == "post" and doc["warmup_epochs"] == 0.25
    assert split_batch(96, 32, 4) == (24, 1) and split_batch(96, 5, 1) == (4, 24)


def reference_flat(path: Path) -> dict:
    return {**from_robovlms(load_robovlms(path)).flat, "model": "tiny", "data_dir": "/d"}


@pytest.mark.parametrize("path", [MOBILE, CALVIN])
def test_import_then_export_with_nothing_searched_is_the_file(path):
    raw = load_robovlms(path)
    assert to_robovlms(reference_flat(path), reference=raw) == raw


def test_export_changes_only_what_the_sweep_chose(tmp_path):
    raw = load_robovlms(MOBILE)
    flat = {**reference_flat(MOBILE), "learning_rate": 3e-5, "batch_size": 64}
    out = to_robovlms(flat, reference=raw)
    assert out["learning_rate"] == 3e-5
    assert (out["batch_size"], out["trainer"]["accumulate_grad_batches"]) == (32, 2)
    chosen = ("learning_rate", "batch_size", "trainer")
    assert out.keys() == raw.keys()
    assert {k: v for k, v in out.items() if k not in chosen} == {
        k: v for k, v in raw.items() if k not in chosen
    }
    assert {k: v for k, v in out["trainer"].items() if k != "accumulate_grad_batches"} == {
        k: v for k, v in raw["trainer"].items() if k != "accumulate_grad_batches"
    }
    assert out["trainer"]["precision"] == "16-mixed"  # untouched: the file's own spelling
    on_two = to_robovlms(flat, reference=raw, devices=2)
    assert on_two["batch_size"] * on_two["trainer"]["accumulate_grad_batches"] * 2 == 64


def test_tuner_export_starts_from_the_saved_file(tmp_path, capsys, demo_dir, tiny_checkpoint):
    checkpoint = tiny_checkpoint
    storage = Storage(str(tmp_path / "results"), "sweep")
    raw = load_robovlms(CALVIN)
    storage.write_json(SWEEP_FILE, {"space": "s", "from_robovlms": str(CALVIN), "robovlms": raw})
    # The tiny model's export carries its random backbone, built from the episodes' words.
    config = {**reference_flat(CALVIN), "weight_decay": 0.1, "data_dir": str(demo_dir)}
    storage.write_json(
        BEST_FILE,
        {"trial": "wd=0.1", "metric": "val_loss", "value": 0.2, "config": config,
         "checkpoint": str(checkpoint), "trainable": "mobile_vla"},
    )  # fmt: skip
    out = tmp_path / "out"
    assert export_main(["--storage-path", str(tmp_path / "results"), "--out", str(out)]) == 0
    exported = json.loads((out / "config.json").read_text())
    assert exported == {**raw, "weight_decay": 0.1}
    assert (out / HEAD_FILE).is_file()
    assert Policy.from_export(out).data.data_dir == str(demo_dir)


def test_gradient_checkpointing_comes_from_the_file_and_goes_back_to_it(
    capsys, sweep_args, tmp_path, write_space
):
    raw = load_robovlms(MOBILE)
    raw["train_setup"]["gradient_checkpointing"] = True
    path = tmp_path / "checkpointed.json"
    path.write_text(json.dumps(raw))
    args = sweep_args(write_space(SMALL_GRID), "--from-robovlms", str(path), "--model", "tiny")
    doc = dry_run_json(capsys, [*args, "--dry-run", "--json"])
    assert [t["gradient_checkpointing"] for t in doc["trials"]] == [True] * 4
    assert "train_setup.gradient_checkpointing" not in doc["ignored"]
    # Exported: fresh (the trial's value, the default included), and onto the file.
    assert to_robovlms({"data_dir": "/d"})["train_setup"]["gradient_checkpointing"] is False
    fresh = to_robovlms({"data_dir": "/d", "gradient_checkpointing": True})
    assert fresh["train_setup"]["gradient_checkpointing"] is True
    original = load_robovlms(MOBILE)
    flat = {**reference_flat(MOBILE), "gradient_checkpointing": True}
    assert to_robovlms(flat, reference=original) == raw  # only that value changed
    assert to_robovlms(reference_flat(path), reference=raw) == raw


def test_max_steps_beside_max_epochs_is_noted_and_exported_as_minus_one(
    capsys, sweep_args, write_space, tmp_path
):
    """A fork's config sets both (Lightning stops at whichever comes first): the sweep
    trains epochs, says how many steps that is, and the export lifts the step cap."""
    raw = load_robovlms(MOBILE)
    raw["trainer"] = {**raw["trainer"], "max_epochs": 1, "max_steps": 100}
    path = tmp_path / "fork.json"
    path.write_text(json.dumps(raw))
    args = sweep_args(
        write_space(SMALL_GRID), "--from-robovlms", str(path), "--model", "tiny",
        "--dry-run", "--json", "--set", "batch_size=8",
    )  # fmt: skip
    doc = dry_run_json(capsys, args)
    assert all(trial["max_epochs"] == 1 for trial in doc["trials"])
    steps = {plan["steps_per_epoch"] for plan in doc["plans"]}
    assert len(steps) == 1 and steps.pop() > 1  # one batch size: one step count
    notes = "\n".join(doc["notes"])
    assert "trainer.max_steps 100: not used" in notes and "max_steps: -1" in notes
    per_trial = doc["plans"][0]["steps_per_epoch"] * 1
    assert f"optimizer steps per trial: {per_trial} (steps per epoch x max_epochs)" in notes
    exported = to_robovlms({**reference_flat(path), "learning_rate": 3e-3}, reference=raw)
    assert exported["trainer"]["max_steps"] == -1
    assert exported["trainer"]["max_epochs"] == 1 and exported["learning_rate"] == 3e-3


def test_header_fixed_line_holds_only_keys_that_are_fixed(capsys, sweep_args, write_space):
    args = sweep_args(
        write_space(SMALL_GRID), "--from-robovlms", str(MOBILE), "--model", "tiny", "--dry-run"
    )
    assert main(args) == 0
    fixed = next(line for line in capsys.readouterr().out.splitlines() if "  fixed  " in line)
    assert "window_size=16" in fixed  # the file's value of a key the space does not search
    assert "learning_rate=" not in fixed and "weight_decay=" not in fixed  # searched


def test_json_needs_dry_run(capsys, sweep_args, write_space):
    code, err = run_main(capsys, sweep_args(write_space(SMALL_GRID), "--json"))
    assert code == 2 and err == "error: --json goes with --dry-run"
