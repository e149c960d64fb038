"""A sweep on a real two-node Ray cluster on 127.0.0.1: `ray job submit`, MLflow server,
trials on both nodes, the worker node killed mid-sweep."""

from __future__ import annotations

import contextlib
import json
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.services import cli, sweep_runs

# One xdist worker runs this module, so its module-scoped set-up is built once;
# that set-up is long, so the module is scheduled first (tests/conftest.py).
pytestmark = [pytest.mark.xdist_group("cluster"), pytest.mark.sweep]

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
  learning_rate: [3.0e-3, 1.0e-3, 3.0e-4, 1.0e-4]
fixed:
  batch_size: 32
  max_epochs: 3
scheduler: fifo
"""
EPOCHS = list(range(1, 4))
PACK = 2  # --pack 2 with 1 CPU per pack: each 1-CPU node holds one pack of two 0.5-CPU trials


def write_space(folder: Path) -> Path:
    path = folder / "space.yaml"
    path.write_text(textwrap.dedent(SPACE))
    return path


def test_job_submit_sweep_survives_losing_the_worker_node(
    two_nodes, demo_dir, mlflow_server, tmp_path
):
    """A packed sweep (--pack 2): each node's one CPU holds one pack of two trials, and
    each trial holds after a checkpoint (see the `cluster` fixture), so a pack with two
    trials in it is on each node when the worker dies. The worker's pack is lost with it;
    its trials are retried from their checkpoints in a pack on the head, whose own pack
    goes on untouched once the test releases it."""
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
        "--cpus-per-trial", "1", "--pack", str(PACK),
    )  # fmt: skip
    assert submit.returncode == 0, submit.stderr[-3000:]

    shared = tmp_path / "shared" / "cluster"
    ran_on = wait_for_held_trials_on_each_node(cluster, shared, PACK)
    on_worker = set().union(*(trial_pids(trial) for trial in ran_on["worker"]))
    cluster.kill_worker()  # its trials' and pack's processes remembered: the kill orphans them
    cluster.release.touch()

    # Tune retries the lost trials once GCS notices the death (seconds: see HEALTH_CHECKS).
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
    runs = {c.data.tags["vla_tune.trial_id"]: c for c in children}
    assert len(children) == len(runs) == 2 * PACK  # every trial, none twice
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["vla_tune.stopped"] for c in children} == {"completed"}
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert steps == EPOCHS, (child.info.run_name, steps)  # a retry logs no step twice
        assert child.data.tags["vla_tune.node"] == "127.0.0.1"  # both nodes' address

    rows = {node: [results(trial) for trial in trials] for node, trials in ran_on.items()}
    # One pack on each node holding its two trials; the pack's label is in every result.
    head_packs = {r["pack"] for trial in rows["head"] for r in trial}
    worker_packs = {r["pack"] for trial in rows["worker"] for r in trial if r["pid"] in on_worker}
    assert len(head_packs) == len(worker_packs) == 1, (head_packs, worker_packs)
    head_pack, worker_pack = head_packs.pop(), worker_packs.pop()
    assert head_pack != worker_pack
    for trial in rows["head"]:
        # Untouched by the loss: one process, never failed or restored, in the head's pack.
        ran = [(r["training_iteration"], r["iterations_since_restore"]) for r in trial]
        assert ran == [(e, e) for e in EPOCHS], ran
        assert len({r["pid"] for r in trial}) == 1
        tags = runs[trial[0]["trial_id"]].data.tags
        assert (tags["vla_tune.pack"], tags["vla_tune.packs"]) == (head_pack, head_pack), tags
    for trial in rows["worker"]:
        # Held after its first epoch in the worker's pack, then retried from that checkpoint
        # in the head's pack (its place freed once the head's trials finished): the epochs
        # go on, not from scratch.
        assert [r["training_iteration"] for r in trial if r["pid"] in on_worker] == [1]
        retried = [r for r in trial if r["pid"] not in on_worker]
        ran = [(r["training_iteration"], r["iterations_since_restore"]) for r in retried]
        assert ran == [(e, e - 1) for e in EPOCHS[1:]], ran
        assert {r["pack"] for r in retried} == {head_pack}
        tags = runs[trial[0]["trial_id"]].data.tags
        assert tags["vla_tune.packs"] == f"{worker_pack},{head_pack}", tags
    assert (shared / "best.json").exists()


def wait_for_held_trials_on_each_node(cluster, shared: Path, per_node: int) -> dict[str, list]:
    """Node name -> the `per_node` trial folders running there with a checkpoint, by the
    pids in their result.json under each `ray start` (held trials stay alive until the
    test acts, and a node's one CPU holds no more)."""
    deadline = time.monotonic() + JOB_S  # a failure timeout only
    found: dict[str, set[Path]] = {"head": set(), "worker": set()}
    polls = 0
    while any(len(trials) < per_node for trials in found.values()):
        assert time.monotonic() < deadline, (
            f"not {per_node} held trials on each node: {found}" + logs(cluster)
        )
        if polls % 10 == 0:
            assert job_status(cluster) == "running", logs(cluster)
        polls += 1
        time.sleep(1)
        pids = {name: descendants(cluster, name) for name in found}
        for trial in shared.glob("lr=*"):
            if not any(trial.glob("checkpoint_*")):
                continue
            for node, mine in pids.items():
                if trial_pids(trial) & mine:
                    found[node].add(trial)
    assert all(len(trials) == per_node for trials in found.values()), found
    return {node: sorted(trials) for node, trials in found.items()}


def results(trial: Path) -> list[dict]:
    """The trial's result rows, in order (its runs before and after a retry)."""
    return [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]


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
