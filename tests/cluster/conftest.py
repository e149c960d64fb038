"""A real two-node Ray cluster on 127.0.0.1 (token auth), stopped by the pids it started.

A test may kill the worker node (`Cluster.kill_worker`); a later test that needs both
nodes asks the `two_nodes` fixture, which starts a fresh worker from what the cluster
itself knows (it killed one), not from GCS's count of alive nodes: GCS notices a node's
death only after its health checks fail, and until then still counts the dead node.
Every wait has a deadline and fails naming what it waited for, with the nodes' log tails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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
# GCS declares a node dead after this many failed health checks, one a second (Ray's
# defaults: 5, every 3 s, i.e. 15 s and more): a killed raylet refuses the check at once,
# so the death is noticed in seconds; a live but busy one has the default timeout (10 s)
# to answer each of them.
HEALTH_CHECKS = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
START_S = 180  # a deadline for a node to start or be noticed dead: far above the seconds
# it takes, even on a loaded 2-core machine; it only turns a hang into a failure


@dataclass
class Cluster:
    env: dict[str, str]  # for the `ray` CLI and drivers; each node adds its own
    gcs: str  # 127.0.0.1:<port>, for RAY_ADDRESS / --address
    dashboard: str  # http://127.0.0.1:<port>, for `ray job submit`
    logs: Path  # <node>.log: what each `ray start` printed
    release: Path  # trials on the head hold after each report until this file exists
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    started: set[int] = field(default_factory=set)  # every pid of ours, for the teardown
    # How to start the worker node again: (cli, env, args) of `start_node`.
    worker_start: tuple[list[str], dict[str, str], tuple[str, ...]] | None = None
    worker_killed: bool = False  # by kill_worker: its node is dead or dying
    retired: list[subprocess.Popen] = field(default_factory=list)  # killed nodes' `ray start`
    temp_dirs: dict[str, Path] = field(default_factory=dict)  # each node's --temp-dir

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [RAY, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start_node(self, name: str, cli: list[str], env: dict[str, str], *args: str) -> None:
        """`ray start` with one CPU; the node's worker processes inherit `env`. Workers take
        ports the OS picks: `ray start`'s 10002-19999 is the same for every Ray here."""
        log = open(self.logs / f"{name}.log", "a")  # noqa: SIM115 - a restart appends
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
        """The nodes GCS counts alive now (a killed one until its health checks fail)."""
        code = "import ray; ray.init(); print(sum(n['Alive'] for n in ray.nodes()))"
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**self.env, "RAY_ADDRESS": self.gcs},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:] + self.log_tails()
        return int(out.stdout.strip().splitlines()[-1])

    def start_worker(self) -> None:
        """A worker node (first or fresh) joining the head, with ports of its own."""
        assert self.worker_start is not None
        cli, env, args = self.worker_start
        port = str(free_port())
        self.start_node("worker", cli, env, *args, "--dashboard-agent-listen-port", port)

    def kill_worker(self) -> None:
        """Kill the worker node's raylet, as a machine lost mid-sweep: its node dies and
        its processes are orphaned (remembered first, for the teardown)."""
        self.remember()
        self.raylet("worker").kill()
        self.worker_killed = True
        self.retired.append(self.procs.pop("worker"))

    def ensure_worker(self) -> None:
        """Both nodes alive. After kill_worker: wait until GCS reports the dead node gone
        (else it would count it as one of two), then start a fresh worker."""
        if self.worker_killed:
            wait_for(lambda: self.alive_nodes() == 1, "killed worker noticed dead by GCS", self)
            self.start_worker()
            self.worker_killed = False
        wait_for(lambda: self.alive_nodes() == 2, "worker node alive", self)
        self.remember()

    def log_tails(self, chars: int = 2000) -> str:
        """What each node's `ray start` printed and the end of its raylet's log."""
        parts = []
        for name, temp in self.temp_dirs.items():
            files = [self.logs / f"{name}.log", *temp.glob("session_*/logs/raylet.out")]
            for path in files:
                if path.exists():
                    parts.append(f"\n--- {name}: {path.name} ---\n{path.read_text()[-chars:]}")
        return "".join(parts)

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
        for proc in [*self.procs.values(), *self.retired]:
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
        temp_dirs={"head": temp_dir, "worker": worker_dir},
    )
    token = c.ray("get-auth-token", "--generate")
    assert token.returncode == 0, token.stderr
    assert (home / ".ray" / "auth_token").exists()
    # Every port our own: Ray's fixed defaults (the agent's 52365, the client server's
    # 10001) clash between our two nodes and with any other Ray on this machine.
    try:
        c.start_node(
            "head", [RAY], {**env, **HEALTH_CHECKS, HOLD_FILE_ENV: str(c.release)},
            "--head", "--port", str(port), "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dashboard_port), "--temp-dir", str(temp_dir),
            "--dashboard-agent-listen-port", str(free_port()),
            "--ray-client-server-port", str(free_port()),
        )  # fmt: skip
        wait_for(lambda: c.ray("status", "--address", c.gcs).returncode == 0, "head node up", c)
        # Jobs need the head's agent, registered after `ray status` answers.
        probe = ("job", "submit", "--address", c.dashboard, "--", "true")
        wait_for(lambda: c.ray(*probe).returncode == 0, "head's job agent up", c)
        worker_env = {
            **env,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
            HOLD_FILE_ENV: str(base / "never-written"),
        }
        c.worker_start = (
            WORKER_RAY,
            worker_env,
            ("--address", c.gcs, "--temp-dir", str(worker_dir)),
        )
        c.start_worker()
        c.ensure_worker()
        yield c
    finally:
        c.stop()


def wait_for(
    check: Callable[[], bool], what: str, cluster: Cluster, timeout: float = START_S
) -> None:
    """Poll `check` until true; fail when a node's `ray start` ends or at the deadline
    (which only turns a hang into a failure), with the nodes' log tails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                pytest.fail(f"ray start ({name}) exited {proc.returncode}" + cluster.log_tails())
        if check():
            return
        time.sleep(1)
    pytest.fail(f"{what}: not so within {timeout:.0f} s" + cluster.log_tails())


@pytest.fixture
def two_nodes(cluster) -> Cluster:
    """The module's cluster with both nodes alive: a worker an earlier test killed is
    replaced by a fresh one."""
    cluster.ensure_worker()
    return cluster


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    with services.mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri
