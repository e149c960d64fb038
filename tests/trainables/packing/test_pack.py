"""A packed trial trains what it trains alone; a failing member fails alone.

One pack of four members trains two epochs on a 32-window subset of the demo data: two
that differ in learning rate, weight decay, warmup, schedule, batch size, seed and LoRA
(rank, dropout), one whose loss turns NaN, one whose loss raises. Each healthy member's
per-step losses, epoch metrics and final weights are compared with the unpacked trial's
(`trainables.mobile_vla.trainable.train`, same config), and checkpoints cross over both
ways.
"""

from __future__ import annotations

import dataclasses
import shutil
import weakref

import pytest
import torch
from safetensors.torch import load_file

from trainables.mobile_vla.trainable import train
from trainables.mobile_vla.windows import Windows
from trainables.packing.pack import Pack, PackError, unpackable
from trainables.training import Trainer

# Float tolerance. A member's rows go through the same ops as alone, but its matmuls run
# inside larger ones over every member's rows, where the library may sum a dot product in
# another order: each result then differs by at most n*u relatively (n terms, u = 2**-24
# for fp32). The longest dot product of the tiny model is the FFN's (4 x 64 = 256 terms);
# about 16 such ops lie between a weight and the loss (2 layers x 6 matmuls, head, loss).
U = 2.0**-24
LOSS_RTOL = 16 * 256 * U  # 2.4e-4
# An AdamW step moves a weight by lr * m/(sqrt(v) + eps), |m/sqrt(v)| <= 1 for steady
# gradients: a relative gradient error r moves it by about r * lr per step, so after S
# steps by S * r * lr (a wrong gradient would move it by up to S * lr: 4000x more).
STEPS = 8  # the most optimizer steps a member takes here (2 epochs of 32 / 8)

COMMON = {"torch_threads": 2, "max_epochs": 2, "lr_schedule": "cosine"}
MEMBERS = {
    "a": {"batch_size": 8, "learning_rate": 1e-3, "warmup_ratio": 0.25, "seed": 0},
    "b": {
        "batch_size": 16,
        "learning_rate": 3e-4,
        "weight_decay": 0.1,
        "warmup_ratio": 0.5,
        "lr_schedule": "constant",
        "seed": 1,
        "lora_r": 8,
        "lora_dropout": 0.1,  # drawn from the member's own generator
    },
}
NAN = {"batch_size": 8, "learning_rate": float("inf"), "seed": 2}  # NaN after one step
RAISES = {"batch_size": 16, "seed": 3}


def subset(data, n_train, n_val):
    """The first n_train training and n_val validation windows (a short run)."""

    def first(w: Windows, n: int) -> Windows:
        return Windows(w.frames[:n], w.episode[:n], w.chunks[:n], w.mask[:n])

    return dataclasses.replace(data, train=first(data.train, n_train), val=first(data.val, n_val))


class StepLosses:
    """Every optimizer step's mean loss, per trial (told apart by their seeds)."""

    def __init__(self):
        self.losses: dict[int, list[float]] = {}

    def install(self, patch: pytest.MonkeyPatch) -> None:
        finish = Trainer.finish_step

        def recording(trainer, loss_sum, total):
            loss, norm = finish(trainer, loss_sum, total)
            self.losses.setdefault(trainer.cfg.seed, []).append(loss)
            return loss, norm

        patch.setattr(Trainer, "finish_step", recording)


def weights(checkpoint) -> dict[str, torch.Tensor]:
    found = load_file(checkpoint / "policy_head.safetensors")
    return found | load_file(checkpoint / "adapter" / "adapter_model.safetensors")


def config(demo_dir, **values):
    return {"data_dir": str(demo_dir), **COMMON, **values}


@pytest.fixture(scope="module")
def runs(demo_dir, demo_data, tmp_path_factory):
    """(unpacked, packed): per member, step losses, epoch metrics and checkpoints."""
    root = tmp_path_factory.mktemp("pack")
    data = subset(demo_data, 32, 8)
    unpacked = {"steps": StepLosses(), "metrics": {}, "ckpt": {}}
    packed = {"steps": StepLosses(), "metrics": {}, "ckpt": {}, "results": []}
    with pytest.MonkeyPatch.context() as patch:
        unpacked["steps"].install(patch)
        for key, values in MEMBERS.items():
            metrics = unpacked["metrics"][key] = []

            def report(m, directory, key=key, metrics=metrics):
                metrics.append(m)
                shutil.copytree(directory, root / f"alone-{key}-{m['epoch']}")

            train(config(demo_dir, **values), report, data=data)
    with pytest.MonkeyPatch.context() as patch:
        packed["steps"].install(patch)
        pack = Pack(4, data)
        for key, values in {**MEMBERS, "nan": NAN, "raises": RAISES}.items():
            pack.join(key, config(demo_dir, **values))

        def boom(*args):
            raise RuntimeError("boom: a member's own failure")

        pack.members["raises"].trial.policy.compute_loss = boom
        for _ in range(2):
            results = pack.run_epoch(list(pack.members))
            packed["results"].append(results)
            for key, result in results.items():
                if result.metrics:
                    packed["metrics"].setdefault(key, []).append(result.metrics)
                    epoch = result.metrics["epoch"]
                    shutil.move(result.checkpoint_dir, root / f"packed-{key}-{epoch}")
    yield {"alone": unpacked, "packed": packed, "pack": pack, "data": data, "root": root}
    pack.close()


def test_members_train_what_they_train_alone(runs):
    alone, packed, root = runs["alone"], runs["packed"], runs["root"]
    for key, values in MEMBERS.items():
        seed, lr = values["seed"], values["learning_rate"]
        assert len(packed["steps"].losses[seed]) == 32 // values["batch_size"] * 2
        torch.testing.assert_close(
            packed["steps"].losses[seed], alone["steps"].losses[seed], rtol=LOSS_RTOL, atol=0
        )
        for mine, theirs in zip(packed["metrics"][key], alone["metrics"][key], strict=True):
            for metric in ("train_loss", "val_loss", "mae_linear_x", "grad_norm", "lr"):
                assert mine[metric] == pytest.approx(theirs[metric], rel=LOSS_RTOL), metric
            assert mine["pack_size"] == 4 - 2 * (mine["epoch"] == 2)  # two failed in epoch 1
            assert mine["derived"]["steps_per_epoch"] == theirs["derived"]["steps_per_epoch"]
        final_packed, final_alone = (
            weights(root / f"packed-{key}-2"),
            weights(root / f"alone-{key}-2"),
        )
        assert final_packed.keys() == final_alone.keys()
        for name in final_alone:
            torch.testing.assert_close(
                final_packed[name], final_alone[name], rtol=0, atol=STEPS * LOSS_RTOL * lr
            )


def test_a_member_that_turns_nan_or_raises_fails_alone(runs):
    first, second = runs["packed"]["results"]
    assert "not finite" in first["nan"].error and first["nan"].metrics is None
    assert "boom" in first["raises"].error and first["raises"].checkpoint_dir is None
    assert set(second) == set(MEMBERS) and all(r.error is None for r in second.values())
    assert all(r.finished for r in second.values()) and not any(r.finished for r in first.values())
    assert set(runs["pack"].members) == set(MEMBERS)  # the failed ones were removed


def test_checkpoints_cross_between_packed_and_unpacked(runs, demo_dir):
    """A packed member's epoch-1 checkpoint goes on unpacked, and an unpacked one packed,
    both to the same epoch 2 as the trial that never changed."""
    data, root, alone = runs["data"], runs["root"], runs["alone"]["metrics"]
    cfg_a, cfg_b = config(demo_dir, **MEMBERS["a"]), config(demo_dir, **MEMBERS["b"])
    resumed = []
    train(cfg_a, lambda m, d: resumed.append(m), data=data, checkpoint_dir=root / "packed-a-1")
    assert [m["epoch"] for m in resumed] == [2]
    assert resumed[0]["val_loss"] == pytest.approx(alone["a"][1]["val_loss"], rel=LOSS_RTOL)

    pack = Pack(1, data)
    pack.join("b", cfg_b, checkpoint_dir=root / "alone-b-1")
    result = pack.run_epoch(["b"])["b"]
    assert result.finished and result.metrics["epoch"] == 2
    assert result.metrics["val_loss"] == pytest.approx(alone["b"][1]["val_loss"], rel=LOSS_RTOL)
    shutil.rmtree(result.checkpoint_dir)
    pack.close()


def test_join_refuses_another_base_and_a_full_pack_and_leave_frees(runs, demo_dir):
    pack = runs["pack"]  # holds a and b, of 4 places
    with pytest.raises(PackError, match="tiny_hidden"):
        pack.join("other", config(demo_dir, tiny_hidden=32))
    with pytest.raises(PackError, match="already"):
        pack.join("a", config(demo_dir, **MEMBERS["a"]))
    pack.join("c", config(demo_dir, batch_size=8, seed=5))
    pack.join("d", config(demo_dir, batch_size=8, seed=6))
    with pytest.raises(PackError, match="full"):
        pack.join("e", config(demo_dir, batch_size=8, seed=7))
    policy = weakref.ref(pack.members["c"].trial.policy)
    pack.leave("c")
    pack.leave("unknown")  # a no-op
    assert policy() is None  # its memory went with it
    pack.join("e", config(demo_dir, batch_size=8, seed=7))
    assert set(pack.members) == {"a", "b", "d", "e"}


def test_unpackable_says_why(demo_dir):
    assert unpackable(config(demo_dir)) is None
    assert "full fine-tune" in unpackable(config(demo_dir, lora_enable=False))
    assert "train_vision" in unpackable(config(demo_dir, train_vision=True))
    assert "robot_code" in unpackable(config(demo_dir), task="robot_code")
    both = config(demo_dir, lora_dropout=0.1, gradient_checkpointing=True)
    assert "gradient_checkpointing" in unpackable(both)
    pack = Pack(1)
    with pytest.raises(PackError, match="full fine-tune"):
        pack.join("f", config(demo_dir, lora_enable=False))
