"""The GPU path, measured on one card: full-size Kosmos-2 trials and a 7B Robot-LoRA step.

    PYTHONPATH=. python3 bench/gpu.py                 # on a CUDA box, at most ~8 minutes
    PYTHONPATH=. python3 bench/gpu.py --quick         # the same, smaller, ~3 minutes
    python bench/gpu.py --quick --device cpu          # small sizes, so it keeps working

Needs only torch, transformers, peft, h5py, numpy, pyyaml and pillow (no ray, mlflow,
optuna or psutil): a CUDA image with nothing else installed runs it as it is.

Mobile VLA: the default Kosmos2Config (the real 1.6B shape, random weights made on the
device and loaded back through the checkout path) on demo episodes written in the
collector's format (18 frames at 720x1280, BGR, gzip), window 8, the default LoRA:
  - samples/s, peak memory and MFU of the per-window, shared-frame and cached-feature
    paths, in bf16 and fp16 (FLOPs of one step counted with torch's FlopCounterMode, over
    the card's dense bf16 peak, looked up from its name or --peak-tflops);
  - gradient checkpointing off and on (cached path, one micro-batch of the whole batch);
  - the largest micro-batch that fits a 24 and a 16 GB card, checkpointing off and on;
  - a real trial (the trainable's own `train`, two epochs): its samples_per_s and choice;
  - 1, 2 and 4 trial processes sharing the card (each capped at its share), summed samples/s;
  - the latency of Policy.predict on one 8-frame window, loaded from the trial's checkpoint;
  - profile / batches (bench/gpu_profile.py): where a cached bf16 step's time goes, and MFU
    (counted and LitGPT's) and samples/s at the grid's 128, 256 and 512 windows.
Robot-LoRA: a Llama of CodeLlama-7B's shape, LoRA r=32 alpha=64 on attention, bf16, 4 x 256
tokens: peak memory and tokens/s, checkpointing off and on; llama16: the task's probe in 16 GB.
The JSON's `summary` holds issue 23's figures (with --sweep-json, bench/gpu_sweep.py's too).

A part that fails prints one line and the rest still run. The table is printed at the end
and written to --out as JSON; the last line is `key=value` pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from common import release_memory, write_random_kosmos2
from gpu_common import card_peak
from gpu_kosmos import Loaded, checkpointing_rates, largest_fit, path_rates
from gpu_llama import CODELLAMA_7B, SMALL, llama_in_budget, llama_rates
from gpu_profile import batches_part, profile_part
from gpu_report import summary_of
from transformers import Kosmos2Config

from trainables.mobile_vla.dataset import DataConfig, load_dataset
from trainables.mobile_vla.demo_data import write_demo_episodes
from trainables.training import resolve_device

HERE = Path(__file__).resolve().parent
SMALL_KOSMOS = dict(
    text_config=dict(embed_dim=64, layers=2, ffn_dim=256, attention_heads=4),
    vision_config=dict(
        hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        image_size=56, patch_size=14,
    ),
    latent_query_num=8,
)  # fmt: skip
GRID = (128, 256, 512)  # grid_robovlms' global batches (windows)


@dataclass
class Sizes:
    episodes: int
    height: int
    width: int
    batch: int  # windows per optimizer step
    micro_frames: int  # backbone frames per micro-batch in the path comparison
    steps: int  # timed steps per measurement
    fit_limit: int  # the largest micro-batch (windows) the fit search tries
    shares: tuple[int, ...]  # trial processes sharing the card
    share_seconds: float
    llama: dict


def sizes_for(quick: bool, device: torch.device) -> Sizes:
    if device.type == "cpu":
        return Sizes(4, 72, 128, 4, 32, 2, 0, (), 0, SMALL)
    if quick:
        return Sizes(8, 720, 1280, 32, 256, 3, 128, (1, 2), 8.0, CODELLAMA_7B)
    return Sizes(16, 720, 1280, 32, 256, 5, 256, (1, 2, 4), 20.0, CODELLAMA_7B)


def resized(sizes: Sizes, args: argparse.Namespace) -> Sizes:
    """--episodes and --frame-size over the defaults."""
    if args.episodes:
        sizes = replace(sizes, episodes=args.episodes)
    if args.frame_size:
        height, width = (int(v) for v in args.frame_size.lower().split("x"))
        sizes = replace(sizes, height=height, width=width)
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--quick", action="store_true", help="smaller: about 3 minutes on a GPU")
    p.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (TFLOP/s)")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--only", help="comma-separated parts to run (default: all)")
    p.add_argument("--episodes", type=int, help="demo episodes (the grid's 512 windows: 58)")
    p.add_argument("--frame-size", help="HxW of the episodes' frames (default 720x1280)")
    p.add_argument("--sweep-json", help="bench/gpu_sweep.py's results: the part `sweep`")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available here (use --quick --device cpu)")
    if args.device == "cpu" and not args.quick:
        p.error("--device cpu runs the small sizes only: add --quick")
    return args


class Results:
    """Each part's results (or its error) as it finishes; printed and saved at the end."""

    def __init__(self, out: str | None, only: set[str] | None):
        self.data: dict = {}
        self.out, self.only = out, only

    def run(self, name: str, part: Callable[[], object], needed: bool = False) -> object:
        if self.only and name not in self.only and not needed:
            return None
        started = time.perf_counter()
        print(f"-- {name}", flush=True)
        try:
            value = part()
            self.data[name] = value
        except Exception as exc:  # a bench part's failure is a result too
            line = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            self.data[name] = {"error": line}
            print(f"   failed: {line}", flush=True)
            traceback.print_exc(limit=-3)
            value = None
            if needed:
                raise SystemExit(f"bench/gpu.py: {name} failed; nothing else can run") from exc
        print(f"   {name}: {time.perf_counter() - started:.0f} s", flush=True)
        self.save()
        return value

    def save(self) -> None:
        """After every part, with the summary so far (a run cut short keeps what it has)."""
        self.data["summary"] = summary_of(self.data)
        if self.out:
            Path(self.out).write_text(json.dumps(self.data, indent=2, default=str))


def write_inputs(root: Path, sizes: Sizes, kosmos: Kosmos2Config, device: torch.device):
    """Collector-format episodes, their decoded frames (the trials' cache), a random
    Kosmos-2 saved as a checkout. Returns (data, model dir, data dir, cache dir)."""
    data_dir, cache = root / "episodes", root / "cache"
    write_demo_episodes(data_dir, sizes.episodes, seed=0, height=sizes.height, width=sizes.width)
    size = kosmos.vision_config.image_size
    data_cfg = DataConfig(data_dir=str(data_dir), image_size=(size, size), cache_dir=str(cache))
    data = load_dataset(data_cfg, progress=False)
    model_dir = root / "kosmos2-random"
    write_random_kosmos2(model_dir, data.instructions, kosmos, device)
    return data, str(model_dir), str(data_dir), str(cache)


def trial_config(model: str, data_dir: str, cache: str, sizes: Sizes, device, **over) -> dict:
    return {
        "model": model,
        "data_dir": data_dir,
        "cache_dir": cache,
        "batch_size": sizes.batch,
        "precision": "bf16" if device.type == "cuda" else "fp32",
        "device": device.type,
        "max_epochs": 2,
        **over,
    }


def run_trial(flat: dict, root: Path) -> dict:
    """The trainable's own `train`, two epochs: its reports and its last checkpoint."""
    from trainables.mobile_vla.trainable import train

    reports, keep = [], root / "trial-checkpoint"

    def report(metrics: dict, checkpoint_dir: str) -> None:
        reports.append({k: v for k, v in metrics.items() if k != "val_loss_per_episode"})
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(checkpoint_dir, keep)

    derived = train(flat, report)
    last = reports[-1]
    return {
        "samples_per_s": last["samples_per_s"],
        "peak_mem_mb": last["peak_mem_mb"],
        "train_loss": [r["train_loss"] for r in reports],
        "derived": {k: v for k, v in derived.items() if isinstance(v, (int, float, str))},
        "checkpoint": str(keep),
    }


def predict_latency(checkpoint: str, device: torch.device, window: int, size: tuple) -> dict:
    """Policy.predict on one window of collector-size BGR frames (resize included)."""
    from trainables.mobile_vla.inference import Policy

    policy = Policy.from_checkpoint(checkpoint, device=str(device))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (window, *size, 3), dtype=np.uint8)
    instruction = "go to the red box"
    for _ in range(3):
        policy.predict(frames, instruction, color="bgr")
    seconds = []
    for _ in range(20):
        began = time.perf_counter()
        policy.predict(frames, instruction, color="bgr")
        seconds.append(time.perf_counter() - began)
    del policy
    release_memory(device)
    return {"median_ms": 1000 * float(np.median(seconds)), "frames": window}


def policy_parts(
    results: Results, model: str, data, device: torch.device, cache: Path, sizes: Sizes
) -> None:
    """The parts that share one loaded policy (freed when this returns)."""
    run = results.run("load", lambda: Loaded.load(model, data, device, cache), needed=True)
    for precision in ("bf16", "fp16") if device.type == "cuda" else ("fp32",):
        results.run(
            f"paths_{precision}",
            lambda p=precision: [
                asdict(r) for r in path_rates(run, p, sizes.batch, sizes.micro_frames, sizes.steps)
            ],
        )
    precision = "bf16" if device.type == "cuda" else "fp32"
    results.run(
        "checkpointing",
        lambda: {
            str(on): asdict(result)
            for on, result in checkpointing_rates(run, sizes.batch, sizes.steps, precision).items()
        },
    )
    peak, grid = results.data["card"]["peak_tflops"], GRID if device.type == "cuda" else (8, 16)
    results.run("profile", lambda: profile_part(run, sizes.batch, sizes.steps, peak))
    results.run("batches", lambda: batches_part(run, grid, sizes.steps, peak))
    if device.type == "cuda":
        results.run(
            "fits",
            lambda: [
                asdict(largest_fit(run, gb, gc, sizes.fit_limit))
                for gb in (24, 16)
                for gc in (False, True)
            ],
        )


def pack_part(flat: dict, ks: tuple[int, ...]) -> dict:
    """K members of the trial above packed on one base (bench/pack.py), one epoch each;
    `pack4_over_one`: a pack of 4 over a pack of 1 (one trial alone), summed samples/s."""
    from pack import packed_only

    rows = packed_only(flat, ks, epochs=1, threads=os.cpu_count() or 1)
    rate = {row["k"]: row["packed_samples_per_s"] for row in rows}
    return {"rows": rows, "pack4_over_one": rate[4] / rate[1] if 4 in rate else None}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)  # a GPU with its index, as a trial's
    sizes = resized(sizes_for(args.quick, device), args)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = card_peak(name, args.peak_tflops) if device.type == "cuda" else None
    kosmos = Kosmos2Config(**SMALL_KOSMOS) if device.type == "cpu" else Kosmos2Config()
    only = set(args.only.split(",")) if args.only else None
    results = Results(args.out, only)
    results.data["card"] = {"name": name, "peak_tflops": peak, "torch": torch.__version__,
                            "sizes": asdict(sizes)}  # fmt: skip
    used = f"{peak:g} TFLOP/s" if peak else "unknown (pass --peak-tflops)"
    print(f"card {name}; dense bf16 peak used for MFU: {used}", flush=True)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("VLA_TUNE_CACHE", str(root / "vla-cache"))
        data, model, data_dir, cache = results.run(
            "inputs", lambda: write_inputs(root, sizes, kosmos, device), needed=True
        )
        results.data["inputs"] = {"frames": len(data.images), "train_windows": len(data.train)}
        policy_parts(results, model, data, device, Path(cache), sizes)
        release_memory(device)
        flat = trial_config(model, data_dir, cache, sizes, device)
        trial = results.run("trial", lambda: run_trial(flat, root))
        if trial:
            window, size = data.train.frames.shape[1], (sizes.height, sizes.width)
            results.run(
                "predict", lambda: predict_latency(trial["checkpoint"], device, window, size)
            )
        results.run("pack", lambda: pack_part(flat, (1, 2, 4, 8) if sizes.shares else (1, 2)))
        release_memory(device)
        precision = "bf16" if device.type == "cuda" else "fp32"
        tokens = 256 if device.type == "cuda" else 32
        results.run(
            "llama",
            lambda: [
                asdict(r)
                for r in llama_rates(sizes.llama, device, precision, 4, tokens, sizes.steps)
            ],
        )
        release_memory(device)  # the 7B model's cached blocks
        tokens = 256 if device.type == "cuda" else 32
        results.run(
            "llama16",
            lambda: asdict(llama_in_budget(sizes.llama, device, 16.0, 8, tokens, sizes.steps)),
        )
        release_memory(device)  # the sharing processes need the card
        if sizes.shares:
            shares, seconds = sizes.shares, sizes.share_seconds
            from gpu_share import share_card

            results.run("sharing", lambda: share_card(flat, shares, seconds, root))
    if args.sweep_json:  # whatever --only says: it is read, not run
        sweep = Path(args.sweep_json)
        results.data["sweep"] = json.loads(sweep.read_text()) if sweep.exists() else {
            "error": f"{sweep}: not found (the sweep wrote nothing)"}  # fmt: skip
    results.data["seconds"] = time.perf_counter() - began
    results.save()
    from gpu_report import print_report

    print_report(results.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
