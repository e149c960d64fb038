"""Training samples/s: the project's training loop vs a minimal plain-PyTorch loop.

    python bench/trainable_step.py [--threads 2] [--rounds 3] [--epochs 6]
    python bench/trainable_step.py --device cuda --model real [--peak-tflops 989]
    python bench/trainable_step.py --device cuda --model /path/to/kosmos-2-checkout

Writes demo episodes (default size) to a temporary folder, loads them at the model's image
size (cache inside that folder), keeps `steps_per_epoch x batch_size` training windows and
trains the same freshly built policy (same seed, config, windows, window order, batch and
micro-batches) two ways:

  project - `trainables.mobile_vla.trainable.train()` itself. Timed per optimizer step:
            one iteration of its loop, i.e. `FrameBatches` (gather + copy to the device)
            for every micro-batch, then `Trainer.step` with `count_targets` /
            `batch_loss` (autocast, scaled backward, one `.item()` per micro-batch,
            unscale, clip, scaler, LR scheduler, zero_grad, `float(grad_norm)`).
            Not timed, as in train()'s own `train_seconds`: set-up (data, model build,
            optimizer) and, after each epoch, validation (off here: no validation
            windows), metrics, checkpoint saving and the report.
  plain   - the same policy and data in a loop written directly in PyTorch: per
            micro-batch gather from the numpy arrays and copy, forward under the same
            autocast, masked Huber sum / real-target count of the whole step, backward;
            then clip_grad_norm_, AdamW.step, zero_grad. No guards, no scheduler, no
            scaler, no `.item()`.

Both first run `--warmup-epochs` untimed epochs (they include the project's first-step
guard), then `--epochs` timed epochs of `--steps-per-epoch` optimizer steps. The LR
schedule is constant without warmup and weight decay is 0, so both loops compute the same
thing; their mean losses are printed side by side as a check (equal on CPU without
dropout; the tiny model has none).

How the two are alternated (`--interleave`), `--rounds` times, each round on freshly
built models:
  step (default on CPU, where the machine is shared and noisy): both models live side by
       side; train() runs in a worker thread that the benchmark releases one optimizer
       step at a time (its `epoch_steps` is wrapped, nothing else changes), alternating
       with one plain step (the order flips every pair). Reported: samples/s from each
       one's median step time; `project / plain` is the median of the paired per-step
       ratios. On CUDA the plain loop then synchronizes once per step for its timing.
  run  (default on CUDA): whole runs alternate: train() untouched (its own
       `train_seconds`), then the plain loop timed over all its timed steps at once.
       Reported: medians over rounds and their ratio.

`--model real` (CUDA only) writes a Kosmos-2 with transformers' default `Kosmos2Config()`
sizes (kosmos-2-patch14-224: text 24 layers x 2048, ViT-L/14 at 224, 64 image tokens)
and random weights to a temporary directory with `save_backbone`, then loads it through
`ModelConfig(model=dir)` like a real checkout. On CUDA both loops train under bf16
autocast, and the output adds achieved model TFLOP/s and their share of `--peak-tflops`.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import Kosmos2Config, Kosmos2Model

import trainables.mobile_vla.trainable as trainable_module
from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
from trainables.mobile_vla.dataset import DataConfig, MobileVLAData, load_dataset
from trainables.mobile_vla.demo_data import write_demo_episodes
from trainables.mobile_vla.modeling_mobile_vla import (
    MobileVLAPolicy,
    build_policy,
    cast_frozen,
    save_backbone,
)
from trainables.mobile_vla.tokenizer import encode_instructions, train_instruction_tokenizer
from trainables.mobile_vla.trainable import parse_config, train
from trainables.mobile_vla.windows import Windows

REAL = "real"
TINY = "tiny"
# Defaults per model size: (batch_size, micro_batch_size). The tiny CPU default keeps the
# run under ~3 minutes on 2 busy cores and still accumulates over 4 micro-batches; the
# real one is the grid's smallest batch with micro-batches that fit an 80 GB GPU easily.
DEFAULT_BATCH = {TINY: (32, 8), REAL: (128, 16)}
METHODS = ("project", "plain")


class BenchError(RuntimeError):
    """A set-up this benchmark cannot run; printed as one line."""


# ---------------------------------------------------------------------------------------
# model FLOPs


FLOPS_FORMULA = """\
FLOPs/frame = sum over linear/conv weights of 2*P*T*(1 + a + w)
            + sum over attention layers of 4*T^2*d*(1 + 2a)
  P weight size, T tokens per frame in that tower, d its width; a = 1 where the gradient
  flows back through the tower (text: always, the trained action token sits at its
  input; vision / connector: only with trainable weights there or below); w = 1 for
  trainable weights (LoRA A/B). A frozen text tower thus counts (2 fwd + 2 act-grad) x P
  x T, a frozen vision tower under a text-only LoRA 2 x P x T (forward only: autograd
  never goes back into it). Ignored: head (LSTM + MLP), embeddings, norms, softmax,
  LoRA's extra activation-grad matmuls. samples/s x window x FLOPs/frame = FLOP/s."""


@dataclass
class TowerFlops:
    name: str
    tokens: int
    frozen: int  # frozen linear/conv weights
    trainable: int  # trainable linear/conv weights (LoRA A/B, unfrozen bases)
    backward: bool  # does the gradient flow back through it
    flops: float


def tower_flops(
    name: str, module: nn.Module, tokens: int, backward: bool, layers: int, width: int
) -> TowerFlops:
    frozen = trainable = 0
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Conv2d)):
            if sub.weight.requires_grad:
                trainable += sub.weight.numel()
            else:
                frozen += sub.weight.numel()
    a = int(backward)
    linear = 2 * tokens * (frozen * (1 + a) + trainable * (2 + a))
    attention = 4 * tokens**2 * width * layers * (1 + 2 * a)
    return TowerFlops(name, tokens, frozen, trainable, backward, float(linear + attention))


def model_flops(policy: MobileVLAPolicy, text_tokens: int) -> list[TowerFlops]:
    """Per-frame training FLOPs of the backbone, tower by tower (see FLOPS_FORMULA)."""
    kosmos = policy.kosmos
    vision_cfg, text_cfg = kosmos.config.vision_config, kosmos.config.text_config
    height, width = policy.image_size()
    vision_tokens = (height // vision_cfg.patch_size) * (width // vision_cfg.patch_size) + 1

    def trains(module: nn.Module) -> bool:
        return any(p.requires_grad for p in module.parameters())

    vision_backward = trains(kosmos.vision_model)
    connector_backward = vision_backward or trains(kosmos.image_to_text_projection)
    text = tower_flops(
        "text", kosmos.text_model, text_tokens, True, text_cfg.layers, text_cfg.embed_dim
    )
    vision = tower_flops(
        "vision",
        kosmos.vision_model,
        vision_tokens,
        vision_backward,
        vision_cfg.num_hidden_layers,
        vision_cfg.hidden_size,
    )
    # The connector's dense layer reads every vision token; its cross-attention's q/out
    # see only the latent queries, so this over-counts a little (it is small).
    connector = tower_flops(
        "connector", kosmos.image_to_text_projection, vision_tokens, connector_backward, 0, 0
    )
    return [text, vision, connector]


# ---------------------------------------------------------------------------------------
# results


@dataclass
class RoundResult:
    """One round of one method: timed samples and seconds (per step in step mode)."""

    samples: int = 0
    seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list)  # step mode only
    loss: float = float("nan")  # mean per-step training loss over the timed epochs
    peak_mem_mb: float | None = None  # CUDA, run mode only (step mode: both resident)
    towers: list[TowerFlops] = field(default_factory=list)  # plain: the model's FLOPs
    trainable: int = 0  # plain: trainable parameters

    @property
    def rate(self) -> float:
        return self.samples / self.seconds


# ---------------------------------------------------------------------------------------
# set-up


def subset_windows(windows: Windows, count: int, seed: int) -> Windows:
    """`count` windows spread over all episodes (a seeded sample, kept in order)."""
    if count > len(windows):
        raise BenchError(
            f"need {count} training windows (steps_per_epoch x batch_size), the data has "
            f"{len(windows)}: raise --episodes"
        )
    keep = np.sort(np.random.default_rng(seed).choice(len(windows), count, replace=False))
    return Windows(
        frames=windows.frames[keep],
        episode=windows.episode[keep],
        chunks=windows.chunks[keep],
        mask=windows.mask[keep],
    )


def write_random_kosmos2(
    directory: Path, instructions: list[str], config: Kosmos2Config, device: torch.device
) -> None:
    """A Kosmos-2 of `config` with random weights, saved so that `ModelConfig(model=dir)`
    loads it like a real checkout (weights, tokenizer, preprocessor config).

    Initialized on `device` (fast on a GPU) and saved in bf16 to halve the file;
    `load_backbone` reads it back as fp32. The tokenizer is the instruction tokenizer the
    tiny model uses; its ids (<s>=0, <pad>=1) are Kosmos-2's and fit its vocabulary.
    """
    tokenizer = train_instruction_tokenizer(instructions)
    if len(tokenizer) > config.text_config.vocab_size:
        raise BenchError("the instruction tokenizer does not fit the model's vocabulary")
    torch.manual_seed(0)
    with torch.device(device):
        kosmos = Kosmos2Model(config)
    kosmos.to(device="cpu", dtype=torch.bfloat16)
    save_backbone(kosmos, tokenizer, directory)
    del kosmos
    release_memory(device)


def trial_config(args: argparse.Namespace, data_dir: Path, model: str) -> dict[str, Any]:
    """The flat trial config both loops read (through the project's parse_config)."""
    return {
        "data_dir": str(data_dir),
        "val_ratio": 0.0,
        "model": model,
        "batch_size": args.batch_size,
        "micro_batch_size": args.micro_batch,
        "max_epochs": args.warmup_epochs + args.epochs,
        "learning_rate": 1e-4,
        "weight_decay": 0.0,  # plain AdamW then equals the project's two-group AdamW
        "warmup_ratio": 0.0,  # constant LR: the plain loop has no scheduler
        "lr_schedule": "constant",
        "grad_clip": 1.0,
        "precision": "bf16" if args.device == "cuda" else "fp32",
        "device": args.device,
        "seed": args.seed,
        "torch_threads": args.threads,
        # The plain loop runs every frame of iid windows: the project's reference path
        # (bench/frame_dedup.py measures frame sharing).
        "batch_grouping": "window",
        "frame_dedup": False,
        "feature_cache": False,
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


# ---------------------------------------------------------------------------------------
# plain: the minimal loop


class PlainLoop:
    """The same policy (same seed and build path), data and steps in bare PyTorch."""

    def __init__(self, config: dict[str, Any], data: MobileVLAData):
        cfg = parse_config(config)
        self.cfg, self.data = cfg, data
        self.device = torch.device(config["device"])
        torch.manual_seed(cfg.train.seed)
        self.policy, tokenizer = build_policy(cfg.model, data.instructions)
        self.policy.to(self.device)
        self.bf16 = cfg.train.precision == "bf16"
        if self.bf16:
            cast_frozen(self.policy, torch.bfloat16)
        self.input_ids, self.attention_mask = encode_instructions(tokenizer, data.instructions)
        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params, lr=cfg.train.learning_rate, weight_decay=0.0
        )
        self.step_losses: list[torch.Tensor] = []  # one 0-dim tensor per step, no sync
        # Tokens per frame in the text model, as build_sequences lays them out.
        text_tokens = self.input_ids.shape[1] + self.policy.num_image_tokens + 1
        self.towers = model_flops(self.policy, text_tokens)
        self.trainable = sum(p.numel() for p in self.params)

    def autocast(self) -> AbstractContextManager:
        if not self.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def to_device(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        tensor = torch.from_numpy(array) if isinstance(array, np.ndarray) else array
        return tensor.to(self.device, non_blocking=True)

    def steps(self) -> Iterator[int]:
        """Runs all epochs; yields the epoch index after every optimizer step."""
        windows, images, policy = self.data.train, self.data.images, self.policy
        batch_size, micro = self.cfg.train.batch_size, self.cfg.train.micro_batch_size
        steps, action_dim = len(windows) // batch_size, windows.chunks.shape[-1]
        delta, max_norm = self.cfg.model.huber_delta, self.cfg.train.grad_clip
        policy.train()
        for epoch in range(self.cfg.train.max_epochs):
            order = np.random.default_rng([self.cfg.train.seed, epoch]).permutation(len(windows))
            for step in range(steps):
                indices = order[step * batch_size : (step + 1) * batch_size]
                count = int(windows.mask[indices].sum()) * action_dim  # numpy: no sync
                step_loss = torch.zeros((), device=self.device)
                for start in range(0, batch_size, micro):
                    idx = indices[start : start + micro]
                    episodes = torch.from_numpy(windows.episode[idx])
                    target = self.to_device(windows.chunks[idx])
                    mask = self.to_device(windows.mask[idx])
                    with self.autocast():
                        pred = policy(
                            self.to_device(images[windows.frames[idx]]),
                            self.to_device(self.input_ids[episodes]),
                            self.to_device(self.attention_mask[episodes]),
                        )
                    error = F.huber_loss(pred.float(), target, reduction="none", delta=delta)
                    loss = (error * mask.unsqueeze(-1)).sum() / count
                    loss.backward()
                    step_loss += loss.detach()
                nn.utils.clip_grad_norm_(self.params, max_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step_losses.append(step_loss)
                yield epoch

    def mean_loss(self, skip_steps: int) -> float:
        return torch.stack(self.step_losses[skip_steps:]).mean().item()


# ---------------------------------------------------------------------------------------
# project: train() released one step at a time


class _Abort(Exception):
    """Raised inside the parked train() to end it when the benchmark stops early."""


class ProjectSteps:
    """train() in a worker thread that runs one optimizer step per `step()` call.

    `epoch_steps` in the trainable's module is wrapped: before handing out a step's
    micro-batch indices the worker parks until released, and the time from its release
    to train() asking for the next step is that step's time (one iteration of train()'s
    loop). Between steps the worker is parked, so nothing of it runs during a plain step.
    """

    def __init__(self, config: dict[str, Any], data: MobileVLAData):
        self.reports: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._parked = self._go = self._finished = self._abort = False
        self.steps_run = 0
        self._seconds: float | None = None
        self._error: BaseException | None = None
        self._original = trainable_module.epoch_steps
        self._patch = mock.patch.object(trainable_module, "epoch_steps", self._gated)
        self._patch.start()
        self._thread = threading.Thread(target=self._run, args=(config, data), daemon=True)
        self._thread.start()

    def _run(self, config: dict[str, Any], data: MobileVLAData) -> None:
        try:
            train(config, lambda metrics, _dir: self.reports.append(metrics), data=data)
        except _Abort:
            pass
        except BaseException as exc:  # handed to the driver thread
            self._error = exc
        finally:
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _gated(self, *args: Any, **kwargs: Any) -> Iterator:
        for micro_indices in self._original(*args, **kwargs):
            with self._cond:
                self._parked = True
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._go)
                self._go = self._parked = False
                if self._abort:
                    raise _Abort
            started = time.perf_counter()
            yield micro_indices
            seconds = time.perf_counter() - started
            with self._cond:
                self._seconds = seconds
                self.steps_run += 1
                self._cond.notify_all()

    def _check(self) -> None:
        if self._error is not None:
            raise BenchError(f"train() failed: {self._error!r}") from self._error

    def step(self) -> float:
        """Release one optimizer step, wait until the worker parks again; its seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self._parked or self._finished)
            self._check()
            if not self._parked:
                raise BenchError(
                    f"train() finished after {self.steps_run} steps, before the benchmark's "
                    "last one (0: its loop no longer calls trainable.epoch_steps?)"
                )
            self._seconds, self._go = None, True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._seconds is not None or self._finished)
            self._check()
            seconds = self._seconds
            # The worker goes on to the next park (or the end-of-epoch report): wait, so
            # that none of it overlaps the next timed plain step.
            self._cond.wait_for(lambda: self._parked or self._finished)
            self._check()
        if seconds is None:
            raise BenchError("train() stopped in the middle of a step")
        return seconds

    def close(self, abort: bool = False) -> None:
        """Wait for train() to finish (its last report); `abort` ends it at its next park."""
        if abort:
            with self._cond:
                self._abort = self._go = True
                self._cond.notify_all()
        self._thread.join()
        self._patch.stop()
        if not abort:
            self._check()


def mean_report_loss(reports: list[dict[str, Any]], warmup_epochs: int) -> float:
    return float(np.mean([m["train_loss"] for m in reports[warmup_epochs:]]))


# ---------------------------------------------------------------------------------------
# one round


def round_step_mode(
    config: dict[str, Any], data: MobileVLAData, warmup_epochs: int, parity: int
) -> dict[str, RoundResult]:
    """Both models side by side, one optimizer step each in turn."""
    device = torch.device(config["device"])
    batch_size = config["batch_size"]
    steps_per_epoch = len(data.train) // batch_size
    warm = warmup_epochs * steps_per_epoch
    total = config["max_epochs"] * steps_per_epoch
    plain = PlainLoop(config, data)  # built first: the two builds share torch's RNG
    plain_steps = plain.steps()
    project = ProjectSteps(config, data)

    def plain_step() -> float:
        synchronize(device)
        started = time.perf_counter()
        next(plain_steps)
        synchronize(device)
        return time.perf_counter() - started

    results = {name: RoundResult() for name in METHODS}
    try:
        for index in range(total):
            first_project = (index + parity) % 2 == 0
            timings = {}
            for name in ("project", "plain") if first_project else ("plain", "project"):
                timings[name] = project.step() if name == "project" else plain_step()
            if index >= warm:
                for name, seconds in timings.items():
                    results[name].step_seconds.append(seconds)
                    results[name].seconds += seconds
                    results[name].samples += batch_size
    except BaseException:
        project.close(abort=True)
        raise
    project.close()
    results["project"].loss = mean_report_loss(project.reports, warmup_epochs)
    results["plain"].loss = plain.mean_loss(warm)
    results["plain"].towers, results["plain"].trainable = plain.towers, plain.trainable
    return results  # the caller releases the models' memory


def run_project(config: dict[str, Any], data: MobileVLAData, warmup_epochs: int) -> RoundResult:
    """train() untouched; its own per-epoch train_seconds, warm-up epochs dropped."""
    device = torch.device(config["device"])
    reports: list[dict[str, Any]] = []
    release_memory(device)
    train(config, lambda metrics, _dir: reports.append(metrics), data=data)
    timed = reports[warmup_epochs:]
    return RoundResult(
        samples=round(sum(m["samples_per_s"] * m["train_seconds"] for m in timed)),
        seconds=sum(m["train_seconds"] for m in timed),
        loss=mean_report_loss(reports, warmup_epochs),
        peak_mem_mb=peak_memory(device),
    )


def run_plain(config: dict[str, Any], data: MobileVLAData, warmup_epochs: int) -> RoundResult:
    """The plain loop, timed from the first timed step to the last (synced at both ends)."""
    device = torch.device(config["device"])
    release_memory(device)
    plain = PlainLoop(config, data)
    steps_per_epoch = len(data.train) // config["batch_size"]
    warm = warmup_epochs * steps_per_epoch
    steps = plain.steps()
    for _ in range(warm):
        next(steps)
    synchronize(device)
    started = time.perf_counter()
    timed = sum(1 for _ in steps)
    synchronize(device)
    result = RoundResult(
        samples=timed * config["batch_size"],
        seconds=time.perf_counter() - started,
        loss=plain.mean_loss(warm),
        peak_mem_mb=peak_memory(device),
        towers=plain.towers,
        trainable=plain.trainable,
    )
    del plain, steps
    release_memory(device)
    return result


def round_run_mode(
    config: dict[str, Any], data: MobileVLAData, warmup_epochs: int, parity: int
) -> dict[str, RoundResult]:
    runners: dict[str, Callable[..., RoundResult]] = {
        "project": run_project,
        "plain": run_plain,
    }
    names = METHODS if parity == 0 else tuple(reversed(METHODS))
    return {name: runners[name](config, data, warmup_epochs) for name in names}


# ---------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--model",
        default=TINY,
        help="'tiny', 'real' (random Kosmos2Config() weights; CUDA only) or a Kosmos-2 dir",
    )
    parser.add_argument("--episodes", type=int, default=32, help="demo episodes to write")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: 32 (tiny), 128 (real / dir)"
    )
    parser.add_argument(
        "--micro-batch", type=int, default=None, help="default: 8 (tiny), 16 (real / dir)"
    )
    parser.add_argument("--steps-per-epoch", type=int, default=2)
    parser.add_argument("--warmup-epochs", type=int, default=1, help="untimed epochs first")
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds on fresh models")
    parser.add_argument(
        "--interleave",
        choices=("step", "run"),
        default=None,
        help="alternate per optimizer step or per whole run; default: step on CPU, run on CUDA",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100 SXM)"
    )
    args = parser.parse_args(argv)
    size = TINY if args.model == TINY else REAL
    if args.batch_size is None:
        args.batch_size = DEFAULT_BATCH[size][0]
    if args.micro_batch is None:
        args.micro_batch = min(DEFAULT_BATCH[size][1], args.batch_size)
    if args.interleave is None:
        args.interleave = "step" if args.device == "cpu" else "run"
    for key in ("episodes", "batch_size", "micro_batch", "steps_per_epoch", "epochs"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.rounds < 1 or args.threads < 1 or args.warmup_epochs < 0:
        parser.error("--rounds and --threads must be >= 1, --warmup-epochs >= 0")
    if args.batch_size % args.micro_batch:
        parser.error(f"--batch-size {args.batch_size} is not a multiple of --micro-batch")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here (torch.cuda.is_available())")
    if args.device == "cuda" and not torch.cuda.is_bf16_supported():
        parser.error("--device cuda: this GPU has no bf16; the benchmark compares bf16 loops")
    if args.model == REAL and args.device != "cuda":
        parser.error("--model real (1.6B parameters) needs --device cuda")
    if args.model not in (TINY, REAL) and not Path(args.model).is_dir():
        parser.error(f"--model: {args.model!r} is not 'tiny', 'real' or a directory")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench-trainable-") as tmp:
        root = Path(tmp)
        data_dir = root / "episodes"
        write_demo_episodes(data_dir, args.episodes)
        kosmos_config = Kosmos2Config() if args.model == REAL else None
        if kosmos_config is not None:
            size = kosmos_config.vision_config.image_size
            image_size = (size, size)
        else:
            image_size = ModelConfig(model=args.model).image_size()
        data = load_dataset(
            DataConfig(
                data_dir=str(data_dir),
                image_size=image_size,
                val_ratio=0.0,
                cache_dir=str(root / "cache"),
            ),
            progress=False,
        )
        model = args.model
        if kosmos_config is not None:
            started = time.perf_counter()
            model = str(root / "kosmos2-random")
            write_random_kosmos2(Path(model), data.instructions, kosmos_config, device)
            print(f"wrote a random Kosmos2Config() model in {time.perf_counter() - started:.0f} s")
        count = args.steps_per_epoch * args.batch_size
        data = dataclasses.replace(data, train=subset_windows(data.train, count, args.seed))
        config = trial_config(args, data_dir, model)
        one_round = round_step_mode if args.interleave == "step" else round_run_mode
        results: dict[str, list[RoundResult]] = {name: [] for name in METHODS}
        for index in range(args.rounds):
            outcome = one_round(config, data, args.warmup_epochs, index % 2)
            release_memory(device)
            for name in METHODS:
                result = outcome[name]
                results[name].append(result)
                print(
                    f"round {index + 1}/{args.rounds} {name:>7}: {result.rate:9.2f} samples/s "
                    f"({result.samples} samples in {result.seconds:.2f} s, "
                    f"loss {result.loss:.6f})",
                    flush=True,
                )
    report(args, config, data, results)


def report(
    args: argparse.Namespace,
    config: dict[str, Any],
    data: MobileVLAData,
    results: dict[str, list[RoundResult]],
) -> None:
    towers, trainable = results["plain"][0].towers, results["plain"][0].trainable
    window = data.train.frames.shape[1]
    print(
        f"\nmodel {args.model} on {args.device} ({config['precision']}, {args.threads} torch "
        f"threads), {trainable:,} trainable params; batch {args.batch_size} = "
        f"{args.batch_size // args.micro_batch} x micro {args.micro_batch}, window {window}; "
        f"{args.rounds} rounds of {args.warmup_epochs} warm-up + {args.epochs} timed epochs "
        f"x {args.steps_per_epoch} steps; interleaved per {args.interleave}"
    )
    print(
        "timed: project = train()'s loop body per step (FrameBatches for each micro-batch "
        "+ Trainer.step); plain = gather, forward, loss, backward, clip, AdamW. Not timed: "
        "set-up, warm-up epochs (incl. the first-step guard), end-of-epoch "
        "metrics/checkpoint/report (no validation windows)"
    )
    if args.interleave == "step":
        # Per-step times: a median is robust to a busy neighbour slowing a few steps.
        rates = {
            name: args.batch_size / statistics.median(s for r in runs for s in r.step_seconds)
            for name, runs in results.items()
        }
        pairs = [
            q / p
            for rp, rq in zip(results["project"], results["plain"], strict=True)
            for p, q in zip(rp.step_seconds, rq.step_seconds, strict=True)
        ]
        how = f"from the median of {len(pairs)} step times"
    else:
        rates = {name: statistics.median(r.rate for r in runs) for name, runs in results.items()}
        pairs = [p.rate / q.rate for p, q in zip(results["project"], results["plain"], strict=True)]
        how = f"median of {args.rounds} rounds"
    frame_flops = sum(t.flops for t in towers)
    for name, rate in rates.items():
        tflops = frame_flops * window * rate / 1e12
        line = f"{name:>7}: {rate:9.2f} samples/s ({how}), model {tflops:.3g} TFLOP/s"
        if args.device == "cuda":
            line += f" = {100 * tflops / args.peak_tflops:.1f}% of the {args.peak_tflops:g} peak"
            peaks = [r.peak_mem_mb for r in results[name] if r.peak_mem_mb is not None]
            if peaks:
                line += f", peak memory {max(peaks) / 1024:.1f} GiB"
        print(line)
    losses = {name: statistics.median(r.loss for r in runs) for name, runs in results.items()}
    print(
        f"same computation: mean timed train loss project {losses['project']:.6f}, "
        f"plain {losses['plain']:.6f}"
    )
    print("model FLOPs per frame (estimate):")
    for t in towers:
        print(
            f"  {t.name:>9}: T={t.tokens:4d}, frozen P={t.frozen:>13,}, trainable "
            f"P={t.trainable:>11,}, backward {'yes' if t.backward else 'no':>3}: "
            f"{t.flops / 1e9:10.3f} GFLOP"
        )
    print(f"  total {frame_flops / 1e9:.3f} GFLOP/frame, {window} frames per sample")
    print("  " + FLOPS_FORMULA.replace("\n", "\n  "))
    kind = "per-step" if args.interleave == "step" else "per-round"
    print(
        f"{kind} project / plain: median {statistics.median(pairs):.3f}, "
        f"min {min(pairs):.3f}, max {max(pairs):.3f} ({len(pairs)} pairs)"
    )
    if args.interleave == "step":
        # Neighbours' load swings step times far more than the loops differ; a pair runs
        # back to back, so the median of the pairs' ratios is the robust figure.
        print(f"ratio of the two rates above: {rates['project'] / rates['plain']:.2f}")
        ratio = statistics.median(pairs)
    else:
        ratio = rates["project"] / rates["plain"]
    print(f"project / plain = {ratio:.2f}")


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        sys.exit(f"bench/trainable_step.py: error: {exc}")
