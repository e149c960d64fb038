"""What the GPU session's prepared scripts compute, checked here without a GPU: the carried
wheels (repacked, installable), the sweep's space, passes and MLflow read-back, the
profile's arithmetic and the summary with its A5000 lines. The end-to-end CPU runs of
bench/gpu.py's new parts and of bench/gpu_sweep.py take minutes: marked `bench`, they
run only when asked for (`pytest -m bench tests/gpu/test_bench_cpu.py`)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))  # bench's scripts import each other by name

from gpu_report import (  # noqa: E402
    A5000_PEAK,
    CONFIRM_TRIAL_EPOCHS,
    GRID_TRIAL_EPOCHS,
    TEAM_TRAIN_WINDOWS,
    a5000_estimates,
    summary_of,
)
from gpu_sweep import pass_command, read_runs, space_yaml, summarize  # noqa: E402
from gpu_wheels import project_of, repack_wheel  # noqa: E402

RECORD = "demo-1.0.dist-info/RECORD"


def write_wheel(path: Path) -> dict[str, bytes]:
    files = {
        "demo/__init__.py": b"VALUE = 42\n",
        "demo/jars/big.jar": b"\0" * 10_000,
        "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
        "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }  # fmt: skip
    record = "".join(f"{name},,\n" for name in files) + f"{RECORD},,\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(RECORD, record)
    return files


def test_a_repacked_wheel_loses_the_stripped_part_and_still_installs(tmp_path):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    files = write_wheel(wheel)
    assert project_of(wheel) == "demo"
    assert repack_wheel(wheel, ("demo/jars/",)) > 0
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert "demo/jars/big.jar" not in names and "demo/__init__.py" in names
        assert all(i.compress_type == zipfile.ZIP_LZMA for i in z.infolist())
        assert z.read("demo/__init__.py") == files["demo/__init__.py"]
        assert "jars" not in z.read(RECORD).decode()
    assert repack_wheel(wheel, ("demo/jars/",)) == 0  # already repacked: left as it is
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
         "--no-compile", "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    assert (target / "demo" / "__init__.py").read_bytes() == files["demo/__init__.py"]
    assert not (target / "demo" / "jars").exists()


def test_the_sweeps_space_is_a_valid_space_at_the_grids_batches(tmp_path):
    from tuner.spaces import load_space

    path = tmp_path / "gpu_sweep.yaml"
    path.write_text(space_yaml((128, 256, 512), 1))
    space = load_space(str(path))
    assert space.trainable == "mobile_vla" and space.scheduler.type == "fifo"
    assert space.params["batch_size"].args == [128, 256, 512]
    assert space.fixed["max_epochs"] == 1


def test_passes_take_a_gpu_share_on_cuda_and_cpus_on_a_cpu(tmp_path):
    class Args:
        device = "cuda"

    cuda = pass_command(0.5, Args, tmp_path / "s.yaml", "data", "model", "sqlite:///x")
    assert cuda[cuda.index("--gpus-per-trial") + 1] == "0.5"
    assert cuda[cuda.index("--name") + 1] == "share-0.5" and "--confirm" in cuda
    Args.device = "cpu"
    cpu = pass_command(1.0, Args, tmp_path / "s.yaml", "data", "model", "sqlite:///x")
    assert "--gpus-per-trial" not in cpu and "--cpus-per-trial" in cpu


def test_the_summary_takes_the_worst_exit_and_the_ratio_furthest_off():
    passes = [{"exit": 0, "actual_over_forecast": 1.1}, {"exit": 0, "actual_over_forecast": 0.7}]
    assert summarize(passes) == {"sweep_exit": 0, "sweep_forecast_ratio": 0.7}
    passes.append({"exit": 124, "actual_over_forecast": None})
    assert summarize(passes) == {"sweep_exit": 124, "sweep_forecast_ratio": None}


def test_runs_are_read_back_from_a_real_mlflow_store(tmp_path):
    """A parent run with its forecast and wall time, a child per trial with the params and
    metric history the tuner logs: what the sweep's table shows."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("vla-tune")
    parent = client.create_run(experiment, run_name="share-0.5").info.run_id
    client.log_metric(parent, "forecast_s", 100.0)
    client.log_metric(parent, "wall_s", 120.0)
    child = client.create_run(
        experiment, run_name="bs=128", tags={"mlflow.parentRunId": parent}
    ).info.run_id
    for key, value in {"batch_size": 128, "device": "cuda:0", "gpu_share": 0.5}.items():
        client.log_param(child, key, value)
    for step, (rate, mfu) in enumerate([(10.0, 0.2), (12.0, 0.3)], start=1):
        client.log_metric(child, "samples_per_s", rate, step=step)
        client.log_metric(child, "mfu", mfu, step=step)
        client.log_metric(child, "train_loss", 1.0 / step, step=step)
    got = read_runs(uri, "share-0.5")
    assert got["actual_over_forecast"] == pytest.approx(1.2)
    (trial,) = got["trials"]
    assert trial["device"] == "cuda:0" and trial["gpu_share"] == "0.5"
    assert trial["samples_per_s"] == 12.0 and trial["mfu"] == 0.3 and trial["epochs"] == 2
    assert trial["peak_mem_mb"] is None
    assert read_runs(uri, "no-such-sweep") == {"trials": []}


def test_the_gpu_busy_time_is_the_union_of_the_kernels():
    from gpu_profile import union_us

    assert union_us([(0, 10), (5, 15), (20, 30), (21, 22)]) == 25
    assert union_us([]) == 0


def grid_data() -> dict:
    batches = [
        {"windows": w, "tflop_counted": 0.5 * w, "mfu_counted": m, "samples_per_s": 1.0}
        for w, m in ((128, 0.30), (256, 0.40), (512, 0.45))
    ]  # fmt: skip
    return {
        "card": {"name": "NVIDIA H100", "peak_tflops": 989.0},
        "batches": batches,
        "profile": {"windows": 32, "step_s": 0.16, "mfu_counted": 0.13,
                    "profile": {"gpu_busy_share": 0.6, "syncs_per_step": 3},
                    "double_batch": {"time_ratio": 1.4}},
        "llama16": {"micro_batch": 2, "peak_mb": 15 * 1024.0},
        "sweep": {"summary": {"sweep_exit": 0, "sweep_forecast_ratio": 1.1}},
    }  # fmt: skip


def test_the_a5000_lines_follow_from_the_counted_flops():
    """0.5 TFLOP per window counted at every batch; the grid's windows over its epochs."""
    data = grid_data()
    got = a5000_estimates(data)
    windows = TEAM_TRAIN_WINDOWS * (GRID_TRIAL_EPOCHS + CONFIRM_TRIAL_EPOCHS)
    floor = 0.5e12 * windows / (A5000_PEAK * 1e12) / 3600
    assert got["floor_h"] == pytest.approx(floor)
    assert got["mfu_used"] == 0.45 and got["at_big_card_mfu_h"] == pytest.approx(floor / 0.45)
    rate = 32 / 0.16 * A5000_PEAK / 989.0  # today's 32-window rate, scaled by the peaks
    assert got["ceiling_h"] == pytest.approx(windows / rate / 3600)
    assert got["floor_h"] < got["at_big_card_mfu_h"]
    assert a5000_estimates({}) is None


def test_the_summary_has_issue_23s_figures():
    summary = summary_of(grid_data())
    assert summary["mfu_cached_bf16_32"] == 0.13 and summary["mfu_cached_bf16_128"] == 0.30
    assert summary["mfu_cached_bf16_512"] == 0.45 and summary["double_batch_time_ratio_32"] == 1.4
    assert summary["sweep_exit"] == 0 and summary["sweep_forecast_ratio"] == 1.1
    assert summary["llama_16gb_peak_gib"] == 15.0
    assert summary["pack4_over_one"] is None  # bench/pack.py's part, when it runs
    empty = summary_of({})
    assert empty["mfu_cached_bf16_128"] is None and empty["llama_16gb_peak_gib"] is None


def run_bench(request, tmp_path: Path, script: str, *args: str) -> dict:
    """A bench script at CPU sizes, its JSON (--out) read back; skipped unless `-m bench`
    selects it (minutes on 2 cores)."""
    if "bench" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("minutes on 2 cores: run with -m bench")
    out = tmp_path / "out.json"
    command = [sys.executable, str(ROOT / "bench" / script), *args, "--out", str(out)]
    subprocess.run(command, check=True, cwd=tmp_path)
    return json.loads(out.read_text())


@pytest.mark.bench
def test_the_new_gpu_parts_run_on_a_cpu(request, tmp_path):
    """bench/gpu.py's profile, batches and llama16 at CPU sizes: JSON and summary."""
    parts = ("--quick", "--device", "cpu", "--only", "profile,batches,llama16")
    data = run_bench(request, tmp_path, "gpu.py", *parts)
    assert data["profile"]["double_batch"]["windows"] == 2 * data["profile"]["windows"]
    assert [b["windows"] for b in data["batches"]] == [8, 16]
    assert data["llama16"]["micro_batch"] > 0
    assert data["summary"]["llama_16gb_peak_gib"] is not None


@pytest.mark.bench
def test_the_sweep_runs_end_to_end_on_a_cpu(request, tmp_path):
    """bench/gpu_sweep.py --device cpu: both passes exit 0, every trial in MLflow."""
    args = ("--device", "cpu", "--batches", "16,32,64", "--episodes", "12", "--work", str(tmp_path))
    result = run_bench(request, tmp_path, "gpu_sweep.py", *args)
    assert result["summary"]["sweep_exit"] == 0
    for one in result["passes"]:
        assert sorted(int(t["batch_size"]) for t in one["trials"]) == [16, 32, 64]
        assert all(t["device"] == "cpu" and t["samples_per_s"] for t in one["trials"])
