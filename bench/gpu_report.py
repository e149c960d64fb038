"""bench/gpu.py's table and its last `key=value` line, from the results it saved.

python bench/gpu_report.py results.json      # print a saved run again
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _mb(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1024:.1f} GiB" if value >= 1024 else f"{value:.0f} MB"


def _get(data: dict, *keys: Any) -> Any:
    for key in keys:
        if not isinstance(data, (dict, list)):
            return None
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


# The team's case for the estimate: 136 collector episodes of 18 frames, window 8 (11
# windows each), 10% of the episodes held out; grid_robovlms' 36 trials, max_epochs 6,
# ASHA grace 1, reduction factor 3: 81.4 trial-epochs expected under Ray's asynchronous
# ASHA (`tuner.forecast.stop_epochs(36, "asha", 6, 1, 3)`; not imported here: the GPU box
# has no Ray), plus the confirmation: the top 3 with 2 more seeds each, 6 epochs.
TEAM_TRAIN_WINDOWS = 122 * 11
GRID_TRIAL_EPOCHS = 81.4
CONFIRM_TRIAL_EPOCHS = 3 * 2 * 6
A5000_PEAK = 111.0


def a5000_estimate(samples_per_s: float, peak: float) -> str:
    """The grid's training time on one RTX A5000, from a trial's measured samples/s here
    scaled by the two cards' dense bf16 peaks (the same MFU assumed): an estimate."""
    a5000_rate = samples_per_s * A5000_PEAK / peak
    epochs = GRID_TRIAL_EPOCHS + CONFIRM_TRIAL_EPOCHS
    hours = epochs * TEAM_TRAIN_WINDOWS / a5000_rate / 3600
    return (
        f"estimate, not measured: grid_robovlms on 136 episodes ({TEAM_TRAIN_WINDOWS} training "
        f"windows) on one RTX A5000 ({A5000_PEAK:g} TFLOP/s): ~{GRID_TRIAL_EPOCHS:.0f} "
        f"trial-epochs under ASHA + {CONFIRM_TRIAL_EPOCHS} of confirmation at "
        f"{a5000_rate:.1f} samples/s = {hours:.1f} h of training, one trial at a time "
        "(validation and start-up not counted)"
    )


def print_report(data: dict[str, Any]) -> None:
    card = data.get("card", {})
    peak = card.get("peak_tflops")
    memory = "resident growth" if card.get("name") == "cpu" else "CUDA allocated peak"
    over = f"{peak:g} TFLOP/s dense bf16" if peak else "no known peak"
    print(f"\n## {card.get('name')} (torch {card.get('torch')}); MFU over {over}; memory: {memory}")
    summary: dict[str, float] = {}
    rates: dict[tuple[str, str], float] = {}
    rows = [r for key in ("paths_bf16", "paths_fp16", "paths_fp32") for r in data.get(key) or []
            if isinstance(r, dict) and "method" in r]  # fmt: skip
    if rows:
        print("\n| path | precision | samples/s | frames/window | peak memory | TFLOP/step | MFU |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        tflops = r["tflops_per_step"] / r["step_s"]
        mfu = f"{100 * tflops / peak:.1f}%" if peak else "-"
        rates[(r["method"], r["precision"])] = r["samples_per_s"]
        print(f"| {r['method']} | {r['precision']} | {r['samples_per_s']:.1f} | "
              f"{r['frames_per_window']:.2f} | {_mb(r['peak_mb'])} | "
              f"{r['tflops_per_step']:.2f} | {mfu} |")  # fmt: skip
        if peak and r["method"] == "cached" and r["precision"] == "bf16":
            summary["mfu_cached_bf16"] = tflops / peak
    if ("cached", "fp16") in rates and ("cached", "bf16") in rates:
        summary["fp16_over_bf16"] = rates[("cached", "fp16")] / rates[("cached", "bf16")]
    if ("shared-frame", "bf16") in rates:
        summary["shared_over_per_window"] = (
            rates[("shared-frame", "bf16")] / rates[("per-window", "bf16")]
        )

    ckpt = data.get("checkpointing")
    if isinstance(ckpt, dict) and "False" in ckpt:
        off, on = ckpt["False"], ckpt["True"]
        print(f"\ngradient checkpointing (cached path, one micro-batch of the whole batch): "
              f"off {off['samples_per_s']:.1f} samples/s, {_mb(off['peak_mb'])}; "
              f"on {on['samples_per_s']:.1f} samples/s, {_mb(on['peak_mb'])}")  # fmt: skip
        summary["checkpointing_speed"] = on["samples_per_s"] / off["samples_per_s"]
        if off["peak_mb"] and on["peak_mb"]:
            summary["checkpointing_memory"] = on["peak_mb"] / off["peak_mb"]

    fits = [f for f in data.get("fits") or [] if isinstance(f, dict) and "windows" in f]
    if fits:
        print("\n| card | checkpointing | largest micro-batch (windows) | its frames |")
        print("| --- | --- | --- | --- |")
    for f in fits:
        more = "+" if f["windows"] == f["tried_up_to"] else ""
        print(f"| {f['budget_gb']:g} GB | {'on' if f['checkpointing'] else 'off'} | "
              f"{f['windows']}{more} | {f['frames']} |")  # fmt: skip
        key = f"fit{f['budget_gb']:g}gb{'_gc' if f['checkpointing'] else ''}_windows"
        summary[key] = f["windows"]

    trial = data.get("trial")
    if isinstance(trial, dict) and "samples_per_s" in trial:
        print(f"\ntrial (the trainable's own train, epoch 2): {trial['samples_per_s']:.1f} "
              f"samples/s, peak {_mb(trial['peak_mem_mb'])}, chose {trial['derived']}")  # fmt: skip
        step = rates.get(("cached", "bf16")) or rates.get(("cached", "fp32"))
        if step:
            summary["trial_over_step"] = trial["samples_per_s"] / step
        if peak:
            print(a5000_estimate(trial["samples_per_s"], peak))
    latency = _get(data, "predict", "median_ms")
    if latency is not None:
        print(f"Policy.predict, one {data['predict']['frames']}-frame window: {latency:.1f} ms")
        summary["predict_ms"] = latency

    sharing = data.get("sharing")
    if isinstance(sharing, dict) and "error" not in sharing:
        print("\n| trials on the card | summed samples/s | each | peak memory each |")
        print("| --- | --- | --- | --- |")
        for n, s in sharing.items():
            print(f"| {n} | {s['summed_samples_per_s']:.1f} | {s['each']} | "
                  f"{[f'{m / 1024:.1f}' for m in s['peak_mb_each']]} GiB |")  # fmt: skip
        one = _get(sharing, "1", "summed_samples_per_s") or _get(sharing, 1, "summed_samples_per_s")
        for n, s in sharing.items():
            if one and str(n) != "1":
                summary[f"share{n}_over_1"] = s["summed_samples_per_s"] / one

    llama = [r for r in data.get("llama") or [] if isinstance(r, dict)]
    for r in llama:
        print(f"Llama {r['params_b']:.2f}B shape, LoRA r=32, checkpointing "
              f"{'on' if r['checkpointing'] else 'off'}: peak {_mb(r['peak_mb'])}, "
              f"{r['tokens_per_s']:.0f} tokens/s")  # fmt: skip
        if r["peak_mb"]:
            summary[f"llama_peak_gib{'_gc' if r['checkpointing'] else ''}"] = r["peak_mb"] / 1024

    print_grid_report(data)
    failed = [k for k, v in data.items() if isinstance(v, dict) and "error" in v]
    if failed:
        print(f"\nfailed parts: {', '.join(failed)}")
    print(f"\nwhole run: {data.get('seconds', 0):.0f} s")
    summary |= {k: v for k, v in summary_of(data).items() if v is not None}
    print(" ".join(f"{k}={v:.3g}" for k, v in summary.items()) or "no_results=1")


if __name__ == "__main__":
    print_report(json.loads(open(sys.argv[1]).read()))


def a5000_estimates(data: dict[str, Any]) -> dict[str, Any] | None:
    """Three labelled estimates of the grid's training on one RTX A5000, from the FLOPs
    counted per window at the grid's batches (their mean: the grid has as many trials at
    each): a floor at its full dense bf16 peak (no card beats it), at the MFU this card
    reached on the grid's batches (the step near compute-bound), and a ceiling that
    scales the rate of today's 32-window step by the two cards' peaks (its idle time kept)."""
    batches = [b for b in data.get("batches") or [] if isinstance(b, dict) and "tflop_counted" in b]
    if not batches:
        return None
    per_window = sum(b["tflop_counted"] * 1e12 / b["windows"] for b in batches) / len(batches)
    windows = TEAM_TRAIN_WINDOWS * (GRID_TRIAL_EPOCHS + CONFIRM_TRIAL_EPOCHS)
    total = per_window * windows
    floor_h = total / (A5000_PEAK * 1e12) / 3600
    out: dict[str, Any] = {"grid_pflop": total / 1e15, "floor_h": floor_h}
    mfus = [b["mfu_counted"] for b in batches if b.get("mfu_counted")]
    if mfus:
        out["mfu_used"] = max(mfus)
        out["at_big_card_mfu_h"] = floor_h / max(mfus)
    peak, step = _get(data, "card", "peak_tflops"), data.get("profile")
    if peak and isinstance(step, dict) and "step_s" in step:
        rate = step["windows"] / step["step_s"] * A5000_PEAK / peak
        out["ceiling_h"] = windows / rate / 3600
    return out


def summary_of(data: dict[str, Any]) -> dict[str, Any]:
    """The figures issue 23 asks for, on top of the JSON; None where a part did not run."""
    grid = {b.get("windows"): b for b in data.get("batches") or [] if isinstance(b, dict)}
    profile, llama = data.get("profile") or {}, data.get("llama16") or {}
    sweep = _get(data, "sweep", "summary") or {}
    peak_mb = llama.get("peak_mb") if llama.get("micro_batch") else None
    summary = {
        "mfu_cached_bf16_32": profile.get("mfu_counted"),
        "mfu_cached_bf16_128": grid.get(128, {}).get("mfu_counted"),
        "mfu_cached_bf16_256": grid.get(256, {}).get("mfu_counted"),
        "mfu_cached_bf16_512": grid.get(512, {}).get("mfu_counted"),
        "gpu_busy_share_32": _get(profile, "profile", "gpu_busy_share"),
        "double_batch_time_ratio_32": _get(profile, "double_batch", "time_ratio"),
        "syncs_per_step_32": _get(profile, "profile", "syncs_per_step"),
        "sweep_exit": sweep.get("sweep_exit"),
        "sweep_forecast_ratio": sweep.get("sweep_forecast_ratio"),
        "llama_16gb_micro_batch": llama.get("micro_batch"),
        "llama_16gb_peak_gib": peak_mb / 1024 if peak_mb else None,
        "pack4_over_one": _get(data, "pack", "pack4_over_one"),  # the pack part, if run
    }
    a5000 = a5000_estimates(data) or {}
    for key in ("floor_h", "at_big_card_mfu_h", "ceiling_h"):
        summary[f"a5000_grid_{key}"] = a5000.get(key)
    return summary


def print_grid_report(data: dict[str, Any]) -> None:
    """The profile, the grid's batches, the 7B shape in 16 GB, the sweep, the A5000 line."""
    profile = data.get("profile")
    if isinstance(profile, dict) and "profile" in profile:
        p = profile["profile"]
        busy = p["gpu_busy_share"]
        print(f"\nprofile, cached step of {profile['windows']} windows ({profile['frames']} "
              f"frames): {profile['step_s'] * 1e3:.0f} ms, GPU busy "
              f"{'-' if busy is None else f'{100 * busy:.0f}%'}, {p['kernels_per_step']:.0f} "
              f"kernels, {p['syncs_per_step']:.0f} syncs ({p['scalar_reads_per_step']:.0f} "
              f"scalar reads) per step; twice the windows: x"
              f"{profile['double_batch']['time_ratio']:.2f} the time")  # fmt: skip
        for k in p["top_kernels"]:
            print(f"  {k['ms_per_step']:8.2f} ms {k['calls_per_step']:6.0f}x  {k['name'][:90]}")
        for site, times in (profile.get("sync_sites") or {}).items():
            print(f"  syncs: {times}x at {site}")
        adamw = profile.get("adamw_ms") or {}
        if adamw:
            print(f"  AdamW step over the trainable parameters: default {adamw['default']:.2f} ms"
                  f", fused {adamw['fused']:.2f} ms")  # fmt: skip
    rows = [b for b in data.get("batches") or [] if isinstance(b, dict)]
    if rows:
        print(
            "\n| windows | frames | checkpointing | samples/s | peak | MFU (FlopCounterMode) "
            "| MFU (LitGPT 2x frozen, 3x trainable) |\n| --- | --- | --- | --- | --- | --- | --- |"
        )
    for b in rows:
        if "error" in b:
            print(f"| {b['windows']} | {b['error']} |")
            continue
        pct = lambda k, b=b: f"{100 * b[k]:.1f}%" if b.get(k) else "-"  # noqa: E731
        print(f"| {b['windows']} | {b['frames']} | {'on' if b['checkpointing'] else 'off'} | "
              f"{b['samples_per_s']:.1f} | {_mb(b['peak_mb'])} | {pct('mfu_counted')} | "
              f"{pct('mfu_litgpt')} |")  # fmt: skip
    llama = data.get("llama16")
    if isinstance(llama, dict) and "micro_batch" in llama:
        print(f"\nCodeLlama-7B shape in {llama['budget_gb']:g} GB: the probe chose "
              f"{llama['micro_batch']} of {llama['batch']} x {llama['tokens']} tokens, "
              f"checkpointing {'on' if llama['checkpointing'] else 'off'}: peak "
              f"{_mb(llama['peak_mb'])}, {llama['tokens_per_s'] or 0:.0f} tokens/s")  # fmt: skip
    a5000 = a5000_estimates(data)
    if a5000:
        print(f"\nestimates, not measured: grid_robovlms on {TEAM_TRAIN_WINDOWS} windows, one "
              f"RTX A5000 ({A5000_PEAK:g} TFLOP/s dense bf16), {a5000['grid_pflop']:.0f} PFLOP "
              f"counted: floor (full peak) {a5000['floor_h']:.2f} h")  # fmt: skip
        if "at_big_card_mfu_h" in a5000:
            print(
                f"  at this card's MFU on the grid's batches ({100 * a5000['mfu_used']:.0f}%): "
                f"{a5000['at_big_card_mfu_h']:.2f} h"
            )
        if "ceiling_h" in a5000:
            print(f"  ceiling (today's 32-window rate x peak ratio): {a5000['ceiling_h']:.2f} h")
