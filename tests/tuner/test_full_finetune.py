"""A full fine-tune (lora_enable: false) start to finish: a team's RoboVLMs fork config as the
sweep's base, then its summary, MLflow artifacts, tuner.evaluate, tuner.export --merge and
the RoboVLMs export. Such a checkpoint holds the trained weights themselves, no adapter."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from tests.services import cli, sweep_runs
from trainables.mobile_vla.checkpoint import ADAPTER_DIR, HEAD_FILE
from trainables.mobile_vla.inference import BACKBONE_DIR, MERGED_DIR, Policy
from trainables.mobile_vla.robovlms_import import from_robovlms, load_robovlms
from tuner.checks import BadInput, check_precision
from tuner.disk import human_bytes
from tuner.evaluate import main as evaluate_main
from tuner.export import main as export_main

FORK = Path(__file__).parent / "robovlms_configs" / "mobile_vla_full_finetune.json"
TWO_RATES = """
description: two learning rates
trainable: mobile_vla
metric: val_loss
mode: min
search: grid
params:
  learning_rate: [1.0e-4, 1.0e-5]
scheduler:
  type: asha
  grace_period: 1
  reduction_factor: 2
"""
MB = 1e6  # human_bytes' unit


@pytest.mark.sweep
def test_the_team_full_fine_tune_ends_like_any_sweep(capsys, sweep_args, write_space, tmp_path):
    # The fork trains in 16-mixed on a GPU; fp16 needs CUDA, so here the trials run in fp32.
    args = sweep_args(write_space(TWO_RATES), "--from-robovlms", FORK, "--model", "tiny")
    run = cli(
        "tuner.run", *args, "--name", "full", "--max-epochs", "1", "--confirm", "0",
        "--set", "precision=auto", "--cpus-per-trial", "1",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "lora_enable=False" in out and "train_vision=True" in out
    assert "trainer.max_steps 100: not used" in out
    assert "2 trials: 2 completed, 0 stopped early by ASHA, 0 failed" in out

    best = json.loads((tmp_path / "results" / "full" / "best.json").read_text())
    checkpoint = Path(best["checkpoint"])
    assert best["config"]["lora_enable"] is False
    assert not (checkpoint / ADAPTER_DIR).exists() and (checkpoint / HEAD_FILE).is_file()
    size = sum((checkpoint / name).stat().st_size for name in ("model_config.json", HEAD_FILE))
    assert f"  weights  {checkpoint}: model_config.json, {HEAD_FILE} ({human_bytes(size)})" in out
    # The header's estimate (fp32 weights + AdamW's two moments of everything that trains)
    # is what a checkpoint weighs: it is rounded to 0.1 MB (under 0.1% of ~70 MB) and the
    # checkpoint adds kilobytes of config, scheduler and RNG state.
    each = float(re.search(r"checkpoints: ~([\d.]+) MB each", out).group(1)) * MB
    on_disk = sum(f.stat().st_size for f in checkpoint.iterdir())
    assert abs(on_disk / each - 1) < 0.01, (on_disk, each)
    assert "up to 4 at once" in out and "2 kept after" in out

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, parents, children = sweep_runs(uri)
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert {c.info.status for c in children} == {"FINISHED"} and len(children) == 2
    assert {c.data.params["lora_enable"] for c in children} == {"False"}
    parent = parents[0].info.run_id
    assert {"results.csv", "best_config.json", "learning_curves.png",
            "parallel_coordinates.png"} <= artifacts(client, parent)  # fmt: skip
    assert artifacts(client, best["mlflow_run_id"]) == {
        "model_config.json",
        HEAD_FILE,
        "trial_config.json",
    }

    storage = ["--storage-path", str(tmp_path / "results"), "--name", "full"]
    assert evaluate_main([*storage, "--out", str(tmp_path / "evaluation")]) == 0
    assert f"mlflow: logged to run {parent} under evaluation/" in capsys.readouterr().out
    summary = json.loads((tmp_path / "evaluation" / "summary.json").read_text())
    assert len(summary["episodes"]) == 2  # the two validation episodes
    assert "evaluation/summary.json" in artifacts(client, parent, "evaluation")

    exported = tmp_path / "exported"
    assert export_main([*storage, "--out", str(exported), "--merge"]) == 0
    printed = capsys.readouterr().out
    assert f"{MERGED_DIR}/: nothing to merge (lora_enable is false" in printed
    assert {p.name for p in exported.iterdir()} == {
        "config.json", "trial_config.json", "export.json", "model_config.json", HEAD_FILE,
        BACKBONE_DIR, MERGED_DIR,
    }  # fmt: skip
    # The RoboVLMs export is the fork's file with what the sweep chose (here also the
    # precision, set for this CPU).
    doc = json.loads((exported / "config.json").read_text())
    fork = json.loads(FORK.read_text())
    assert without(doc["train_setup"], "precision") == without(fork["train_setup"], "precision")
    assert doc["learning_rate"] == best["config"]["learning_rate"]
    assert doc["trainer"]["max_steps"] == -1 and doc["trainer"]["max_epochs"] == 1
    assert doc["act_head"] == fork["act_head"]
    # merged/ is the trained backbone itself in fp16 (a cast, so exact), loadable without peft.
    trained = load_file(checkpoint / HEAD_FILE)
    merged = load_file(exported / MERGED_DIR / "model.safetensors")
    backbone = {k[9:]: v for k, v in trained.items() if k.startswith("backbone.")}
    assert backbone.keys() == merged.keys()
    assert all(torch.equal(backbone[k].half(), merged[k]) for k in merged)
    policy = Policy.from_export(exported)  # the merged form, as on the robot
    assert not any(name.startswith("backbone.") for name in load_file(
        exported / MERGED_DIR / HEAD_FILE))  # fmt: skip
    assert policy.predict(np.zeros((1, 72, 128, 3), np.uint8), "go forward").shape == (10, 2)


def without(section: dict, key: str) -> dict:
    return {k: v for k, v in section.items() if k != key}


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


def test_a_full_size_full_fine_tune_checkpoint_is_many_gigabytes(tmp_path):
    """What the dry run prints per checkpoint, from the config alone (no weights): Kosmos-2
    has 1.6B parameters (its model card); a full fine-tune keeps each in fp32 with AdamW's
    two moments, 12 bytes, while LoRA keeps a few percent."""
    from transformers import Kosmos2Config

    from trainables.mobile_vla.saved_size import BYTES_PER_TRAINABLE, trainable_parameters

    Kosmos2Config().save_pretrained(tmp_path / "kosmos-2")
    base = {"data_dir": str(tmp_path), "model": str(tmp_path / "kosmos-2")}
    fork = {**base, "lora_enable": False, "freeze_backbone": False, "train_vision": True,
            "train_text_embedding": True}  # fmt: skip
    full = BYTES_PER_TRAINABLE * trainable_parameters(fork, [])
    lora = BYTES_PER_TRAINABLE * trainable_parameters(base, [])
    assert full > BYTES_PER_TRAINABLE * 1.6e9 and lora < full / 10


def test_the_fork_in_fp16_without_a_gpu_is_refused_before_any_trial():
    """Its 16-mixed would make every trial fail at start, one after another: tuner.run
    refuses once Ray says the trials get no GPU, before anything is written."""
    fork = from_robovlms(load_robovlms(FORK))
    assert fork.flat["precision"] == "fp16"
    with pytest.raises(BadInput) as refused:
        check_precision(fork.flat, gpus=0)
    assert str(refused.value) == (
        "precision fp16 (RoboVLMs' 16-mixed) needs a CUDA device, and these trials get "
        "no GPU: use --set precision=auto (fp32 on a CPU, bf16 or fp16 on a GPU)"
    )
    check_precision(fork.flat, gpus=0.5)  # a GPU share: fp16 runs
    check_precision({**fork.flat, "precision": "auto"}, gpus=0)
