"""A sweep on a real two-node Ray cluster on 127.0.0.1: `ray job submit`, MLflow server,
trials on both nodes, the worker node killed mid-sweep."""

from __future__ import annotations

import contextlib
import json
import textwrap
import time
from pathlib import Path

import psutil

from tests.services import cli, sweep_runs

REPO = Path(__file__).resolve().parents[2]
JOB_S = 300  # a deadline for the sweep job (about a minute): it only turns a hang into a failure
# What `ray job submit` must not upload (README: "Run on a cluster").
EXCLUDES = [".git", "data", "checkpoints", "mlruns", "ray_results", "demo_episodes",
            "*.egg-info", "__pycache__", ".ruff_cache", ".pytest_cache"]  # fmt: skip

SPACE = """
trainable: mobile_vla
metric: val_loss
mode: min
search: grid
params:
  learning_rate: [3.0e-3, 1.0e-4]
fixed:
  batch_size: 32
  max_epochs: 5
scheduler: fifo
"""


def write_space(folder: Path) -> Path:
    path = folder / "space.yaml"
    path.write_text(textwrap.dedent(SPACE))
    return path


def test_job_submit_sweep_survives_losing_the_worker_node(
    two_nodes, demo_dir, mlflow_server, tmp_path
):
    """Each trial holds its node's only CPU after a checkpoint (see the `cluster` fixture):
    one trial runs on each node, the worker's is still there when the worker dies, and the
    head's goes on once the test releases it."""
    cluster = two_nodes
    with stopping_the_job(cluster):
        sweep_survives_losing_the_worker_node(cluster, demo_dir, mlflow_server, tmp_path)


def test_local_storage_is_refused_on_a_multi_node_cluster(two_nodes, demo_dir, tmp_path):
    """Runs after the worker-loss test (file order): `two_nodes` has replaced the killed
    worker, and the tuner sees 2 nodes again."""
    cluster = two_nodes
    results = tmp_path / "results"
    run = cli(
        "tuner.run", "--space", write_space(tmp_path), "--data-dir", demo_dir,
        "--storage-path", results, "--name", "refused",
        "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--address", cluster.gcs,
        env=cluster.env, cwd=REPO, timeout=180,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-3000:] + cluster.log_tails()
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "2 nodes" in errors[0] and "--shared-storage" in errors[0]
    assert not (results / "refused").exists()  # nothing written, no MLflow run started
    assert sweep_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")[2] == []


@contextlib.contextmanager
def stopping_the_job(cluster):
    """A failed test leaves no sweep job holding the module's cluster."""
    try:
        yield
    finally:
        if job_status(cluster, check=False) == "running":
            cluster.ray("job", "stop", "--address", cluster.dashboard, "sweep")


def sweep_survives_losing_the_worker_node(cluster, demo_dir, mlflow_server, tmp_path):
    submit = cluster.ray(
        "job", "submit", "--address", cluster.dashboard, "--submission-id", "sweep",
        "--no-wait", "--working-dir", str(REPO),
        "--runtime-env-json", json.dumps({"excludes": EXCLUDES}),
        "--", "python", "-m", "tuner.run", "--space", str(write_space(tmp_path)),
        "--data-dir", str(demo_dir), "--storage-path", str(tmp_path / "shared"),
        "--shared-storage", "--name", "cluster", "--mlflow-uri", mlflow_server,
        "--cpus-per-trial", "1",
    )  # fmt: skip
    assert submit.returncode == 0, submit.stderr[-3000:]

    shared = tmp_path / "shared" / "cluster"
    ran_on = wait_for_a_held_trial_on_each_node(cluster, shared)
    on_worker = trial_pids(ran_on["worker"])
    cluster.kill_worker()  # its trial's process remembered first: the kill orphans it
    cluster.release.touch()

    # Tune retries the lost trial once GCS notices the death (seconds: see HEALTH_CHECKS).
    deadline = time.monotonic() + JOB_S
    while (status := job_status(cluster)) == "running":
        if time.monotonic() > deadline:
            alive = cluster.alive_nodes()
            raise AssertionError(
                f"the job did not end within {JOB_S} s (GCS counts {alive} nodes alive)"
                + logs(cluster)
            )
        time.sleep(2)
    assert status == "succeeded", status + logs(cluster)

    client, _, children = sweep_runs(mlflow_server)
    assert len(children) == 2
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["vla_tune.stopped"] for c in children} == {"completed"}
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert steps == [1, 2, 3, 4, 5], (child.info.run_name, steps)  # retried from a checkpoint
        assert child.data.tags["vla_tune.node"] == "127.0.0.1"
    assert ran_on["head"] != ran_on["worker"]  # one trial on each node
    results = [
        json.loads(line) for line in (ran_on["worker"] / "result.json").read_text().splitlines()
    ]
    # Held after its first epoch on the worker, then retried from that checkpoint on the
    # head node, not from scratch.
    assert [r["training_iteration"] for r in results if r["pid"] in on_worker] == [1]
    assert (results[-1]["training_iteration"], results[-1]["iterations_since_restore"]) == (5, 4)
    assert (shared / "best.json").exists()


def wait_for_a_held_trial_on_each_node(cluster, shared: Path) -> dict[str, Path]:
    """Node name -> the trial folder running there with a checkpoint, by the pids in its
    result.json under each `ray start` (held trials stay alive until the test acts)."""
    deadline = time.monotonic() + JOB_S  # a failure timeout only
    found: dict[str, Path] = {}
    polls = 0
    while set(found) != {"head", "worker"}:
        assert time.monotonic() < deadline, f"not a trial on each node: {found}" + logs(cluster)
        if polls % 10 == 0:
            assert job_status(cluster) == "running", logs(cluster)
        polls += 1
        time.sleep(1)
        pids = {name: descendants(cluster, name) for name in ("head", "worker")}
        for trial in shared.glob("lr=*"):
            if not any(trial.glob("checkpoint_*")):
                continue
            for node, mine in pids.items():
                if trial_pids(trial) & mine:
                    found[node] = trial
    return found


def descendants(cluster, name: str) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(cluster.procs[name].pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def trial_pids(trial: Path) -> set[int]:
    try:
        lines = (trial / "result.json").read_text().splitlines()
    except FileNotFoundError:
        return set()
    pids = set()
    for line in lines:
        try:
            pids.add(json.loads(line)["pid"])
        except (ValueError, KeyError):
            pass  # a line being written
    return pids


def job_status(cluster, check: bool = True) -> str:
    """'succeeded', 'failed', 'stopped', or 'running' (pending and running; also, unless
    `check`, a job that cannot be asked about)."""
    out = cluster.ray("job", "status", "--address", cluster.dashboard, "sweep", timeout=60)
    text = out.stdout + out.stderr
    for word in ("succeeded", "failed", "stopped"):
        if f"Job 'sweep' {word}" in text:
            return word
    assert out.returncode == 0 or not check, text[-2000:] + cluster.log_tails()
    return "running"


def logs(cluster) -> str:
    """The job's log tail, then the nodes'."""
    out = cluster.ray("job", "logs", "--address", cluster.dashboard, "sweep", timeout=60)
    job = "\n--- job logs ---\n" + out.stdout[-4000:] + out.stderr[-1000:]
    return job + cluster.log_tails()
