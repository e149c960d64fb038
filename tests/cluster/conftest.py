"""A real two-node Ray cluster on 127.0.0.1 (token auth), stopped by the pids it started."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests import services
from tests.services import free_port
from trainables.tune_function import HOLD_FILE_ENV

RAY = str(Path(sys.executable).with_name("ray"))
# `ray start --address` refuses to join in Ray's loopback (macOS/Windows) mode, and Linux
# mode resolves 127.0.0.1 to the machine's address: the worker node's CLI runs in Linux
# mode with "the address of this machine" answered as 127.0.0.1.
WORKER_RAY = [
    sys.executable, "-c",
    "import sys; from ray._private import services; "
    "services.node_ip_address_from_perspective = lambda *a, **k: '127.0.0.1'; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())",
]  # fmt: skip


@dataclass
class Cluster:
    env: dict[str, str]  # for the `ray` CLI and drivers; each node adds its own
    gcs: str  # 127.0.0.1:<port>, for RAY_ADDRESS / --address
    dashboard: str  # http://127.0.0.1:<port>, for `ray job submit`
    logs: Path  # <node>.log: what each `ray start` printed
    release: Path  # trials on the head hold after each report until this file exists
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    started: set[int] = field(default_factory=set)  # every pid of ours, for the teardown

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [RAY, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start_node(self, name: str, cli: list[str], env: dict[str, str], *args: str) -> None:
        """`ray start` with one CPU; the node's worker processes inherit `env`. Workers take
        ports the OS picks: `ray start`'s 10002-19999 is the same for every Ray here."""
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(
            [*cli, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
             "--min-worker-port", "0", "--max-worker-port", "0", "--disable-usage-stats", *args],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()

    def remember(self) -> None:
        """Record every process our `ray start`s spawned (workers leave the process group)."""
        for proc in self.procs.values():
            try:
                parent = psutil.Process(proc.pid)
                self.started |= {parent.pid, *(c.pid for c in parent.children(recursive=True))}
            except psutil.NoSuchProcess:
                pass

    def raylet(self, name: str) -> psutil.Process:
        children = psutil.Process(self.procs[name].pid).children(recursive=True)
        return next(c for c in children if c.name() == "raylet")

    def alive_nodes(self) -> int:
        code = "import ray; ray.init(); print(sum(n['Alive'] for n in ray.nodes()))"
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**self.env, "RAY_ADDRESS": self.gcs},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        return int(out.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        self.remember()
        procs = []
        for pid in self.started:
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=30)
        for proc in self.procs.values():
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head and worker, one CPU each, every service on loopback, token auth on.

    Each node's trials hold after each report (VLA_TUNE_HOLD_FILE, trainables/tune_function):
    the worker's forever (its file is never written), the head's until the test writes
    `cluster.release`. A trial so keeps its node's only CPU, and a sweep of two trials runs
    one on each node, whatever the scheduler's order and however fast the trials are."""
    base = tmp_path_factory.mktemp("c")
    # Ray's unix sockets live in its session folder and allow 107 bytes: under pytest's
    # tmp_path a TMPDIR of ~20 characters already passes that, so Ray gets a short root.
    root = Path(tempfile.mkdtemp(prefix="vt", dir="/tmp"))
    try:
        yield from run_cluster(base, root)
    finally:
        shutil.rmtree(root)


def run_cluster(base: Path, root: Path):
    home = base / "home"
    temp_dir = root / "h"
    temp_dir.mkdir()
    # A node of its own: nodes sharing a temp dir share runtime_resources/, and the worker
    # node's cleanup would delete the job's working dir under the driver.
    worker_dir = root / "w"
    worker_dir.mkdir()
    cache = base / "cache"
    env = {
        **os.environ,
        # The job's `python` and Ray's own processes: this interpreter, activated or not.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        **services.isolated_env(home, cache, temp_dir),
        "RAY_AUTH_MODE": "token",
        # Ray's macOS/Windows mode keeps a node's servers on 127.0.0.1 (see start_ray).
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("RAY_ADDRESS", None)
    env.pop(HOLD_FILE_ENV, None)
    port, dashboard_port = free_port(), free_port()
    c = Cluster(
        env=env,
        gcs=f"127.0.0.1:{port}",
        dashboard=f"http://127.0.0.1:{dashboard_port}",
        logs=base,
        release=base / "release",
    )
    token = c.ray("get-auth-token", "--generate")
    assert token.returncode == 0, token.stderr
    assert (home / ".ray" / "auth_token").exists()
    # Every port our own: Ray's fixed defaults (the agent's 52365, the client server's
    # 10001) clash between our two nodes and with any other Ray on this machine.
    try:
        c.start_node(
            "head", [RAY], {**env, HOLD_FILE_ENV: str(c.release)},
            "--head", "--port", str(port), "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dashboard_port), "--temp-dir", str(temp_dir),
            "--dashboard-agent-listen-port", str(free_port()),
            "--ray-client-server-port", str(free_port()),
        )  # fmt: skip
        wait_for(lambda: c.ray("status", "--address", c.gcs).returncode == 0, "head node", c)
        # Jobs need the head's agent, registered after `ray status` answers.
        probe = ("job", "submit", "--address", c.dashboard, "--", "true")
        wait_for(lambda: c.ray(*probe).returncode == 0, "head's job agent", c)
        worker_env = {
            **env,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
            HOLD_FILE_ENV: str(base / "never-written"),
        }
        c.start_node(
            "worker", WORKER_RAY, worker_env, "--address", c.gcs, "--temp-dir", str(worker_dir),
            "--dashboard-agent-listen-port", str(free_port()),
        )  # fmt: skip
        wait_for(lambda: c.alive_nodes() == 2, "worker node", c)
        c.remember()
        yield c
    finally:
        c.stop()


def wait_for(check, what: str, cluster: Cluster, timeout: float = 300) -> None:
    """Poll `check` until true; the timeout only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                log = (cluster.logs / f"{name}.log").read_text()
                pytest.fail(f"ray start ({name}) exited {proc.returncode}: {log[-2000:]}")
        if check():
            return
        time.sleep(1)
    pytest.fail(f"the {what} was not ready in {timeout:.0f}s")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    with services.mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri
