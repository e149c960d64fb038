"""Stopping the services tests start, by the handle they were started with; the
environments test subprocesses run in."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Only the tuner may use these: a GPU box that runs trials may have none of them installed.
TUNER_ONLY = ("ray", "mlflow", "optuna", "psutil")


def isolated_env(home: Path | str, cache: Path, ray_tmpdir: Path | str) -> dict[str, str]:
    """The variables that keep a process's home-directory and cache writes (HF, torch,
    matplotlib, MLflow, Ray, our decode cache) under the given folders, the HF hub offline.
    `ray_tmpdir` must be short: Ray's unix sockets allow 107 characters."""
    cache = Path(cache)
    return {
        "HOME": str(home),
        "XDG_CACHE_HOME": str(cache),
        "VLA_TUNE_CACHE": str(cache / "vla-tune"),
        "HF_HOME": str(cache / "huggingface"),
        "TORCH_HOME": str(cache / "torch"),
        "MPLCONFIGDIR": str(cache / "mpl"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RAY_TMPDIR": str(ray_tmpdir),
    }


# What tests/conftest.py makes in every test's tmp_path: the link to the import times
# measured once a session.
HARNESS_PATHS = (
    "cache",
    "cache/vla-tune",
    "cache/vla-tune/calibration",
    "cache/vla-tune/calibration/imports",
)


def written(root: Path) -> list[str]:
    """What a test's commands wrote under `root`: every path but the harness's."""
    found = (str(p.relative_to(root)) for p in root.rglob("*"))
    return sorted(p for p in found if p not in HARNESS_PATHS)


def without_packages(folder: Path, names: tuple[str, ...] = TUNER_ONLY) -> dict[str, str]:
    """os.environ for a subprocess in which importing `names` fails as if they were not
    installed: a sitecustomize.py in `folder` (first on PYTHONPATH, then this project) sets
    `sys.modules[name] = None`, so `import` raises ModuleNotFoundError and
    `importlib.util.find_spec` returns None (transformers' optional-import checks agree)."""
    folder.mkdir(parents=True, exist_ok=True)
    blocks = "".join(f"sys.modules[{name!r}] = None\n" for name in names)
    (folder / "sitecustomize.py").write_text(f"import sys\n\n{blocks}")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}


def cli(module: str, *args, **kwargs) -> subprocess.CompletedProcess:
    """`python -m module args` with its output captured as text; `kwargs` go to
    subprocess.run (env, cwd, timeout)."""
    command = [sys.executable, "-m", module, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def sweep_runs(uri: str):
    """(client, parent runs, trial runs) of the sweeps tracked at MLflow `uri` (none yet
    when the experiment does not exist)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("vla-tune")
    if experiment is None:
        return client, [], []
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    parents = [r for r in runs if r.data.tags.get("vla_tune.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("vla_tune.role") == "trial"]
    return client, parents, children


def by_phase(children) -> tuple[list, list]:
    """A sweep's trial runs split into (search, confirmation) by their phase tag."""
    search = [c for c in children if c.data.tags.get("vla_tune.phase") == "search"]
    confirm = [c for c in children if c.data.tags.get("vla_tune.phase") == "confirm"]
    return search, confirm


def stop_group(proc: subprocess.Popen) -> None:
    """Stop the process group we started (start_new_session=True): politely, then for sure
    (a loaded machine can take its time to shut gunicorn's workers down)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def start_group(
    command: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen:
    """`command` in a process group of its own (stop it with kill_group); its output goes
    to `log`, else nowhere."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - the child holds it
    return subprocess.Popen(
        command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a group from start_group: a sweep's driver and the local Ray it started."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_for(proc: subprocess.Popen, condition, what: str, timeout: float = 300) -> None:
    """Poll until `condition()` holds while `proc` runs; fail if it ends first or in time.
    `condition` may raise while what it reads does not exist yet (an MLflow store)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if proc.poll() is not None:
            pytest.fail(f"{what}: the command ended first")
        try:
            if condition():
                return
        except Exception:  # noqa: BLE001 - not there yet
            continue
    pytest.fail(f"{what}: not reached in {timeout:.0f} s")


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(base: Path) -> Iterator[str]:
    """A real MLflow tracking server on 127.0.0.1 with its store under `base`; yields its
    URI and stops its process group."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{base / 'server.db'}",
         "--default-artifact-root", str(base / "server-artifacts"), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start")
        yield uri
    finally:
        stop_group(server)
