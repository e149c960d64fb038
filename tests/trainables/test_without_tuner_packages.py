"""The standalone trainers run where only torch, transformers, peft and h5py are (a GPU
box without ray, mlflow, optuna or psutil): a subprocess in which those imports fail."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.services import ROOT, TUNER_ONLY, cli, without_packages
from trainables.robot_code.demo_data import generate_records

CHECK = (
    "import importlib.util, sys\n"
    "for name in sys.argv[1:]:\n"
    "    assert importlib.util.find_spec(name) is None, name\n"
    "    try:\n"
    "        __import__(name)\n"
    "    except ModuleNotFoundError:\n"
    "        continue\n"
    "    raise SystemExit(f'{name} imported')\n"
    "from transformers.utils import is_psutil_available\n"
    "assert not is_psutil_available()\n"
    "print('blocked')\n"
)


@pytest.fixture
def bare_env(tmp_path) -> dict[str, str]:
    """The blocking itself is checked, or a test below could pass with the packages there."""
    env = without_packages(tmp_path / "site")
    check = subprocess.run(
        [sys.executable, "-c", CHECK, *TUNER_ONLY], capture_output=True, text=True, env=env
    )
    assert check.stdout == "blocked\n", check.stderr
    return env


def test_mobile_vla_trains_without_tuner_packages(bare_env, demo_dir):
    run = cli(
        "trainables.mobile_vla",
        "--set", f"data_dir={demo_dir}", "--set", "max_epochs=1", "--set", "batch_size=32",
        env=bare_env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("epoch 1/1  train_loss "), run.stdout


def test_robot_code_trains_without_tuner_packages(bare_env, tmp_path):
    data_path = tmp_path / "commands.json"
    data_path.write_text(json.dumps(generate_records(40, seed=9)))
    run = cli(
        "trainables.robot_code",
        "--set", f"data_path={data_path}", "--set", "max_epochs=1", "--set", "batch_size=8",
        "--set", "tiny_hidden=32", "--set", "tiny_intermediate=64",
        "--set", "tiny_vocab_size=320", "--set", "eval_samples=4", "--set", "max_new_tokens=12",
        env=bare_env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[-1].startswith("epoch 1/1  train_loss ") and "exact_match" in lines[-1], lines


def test_the_gpu_benchmark_runs_without_tuner_packages(bare_env, tmp_path):
    """bench/gpu.py at its CPU sizes, one part beside the set-up it always runs: the GPU
    box has none of the tuner's packages either. Its JSON and last line come out."""
    out = tmp_path / "gpu.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--quick", "--device", "cpu",
         "--only", "llama", "--out", str(out)],
        capture_output=True, text=True, env=bare_env, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())
    assert [r["checkpointing"] for r in results["llama"]] == [False, True]
    assert all(r["tokens_per_s"] > 0 for r in results["llama"])
    assert "failed parts" not in run.stdout
    assert run.stdout.splitlines()[-1].startswith("llama_peak_gib=")
