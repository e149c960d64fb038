"""The tuner's local Ray: loopback only, a session path its sockets fit in, and trial
resources checked against what it has before anything is written."""

from __future__ import annotations

import ipaddress
import os
import re

import psutil
import pytest
import ray

from tests.tuner.conftest import SMALL_GRID, run_main
from tuner import ray_start
from tuner.checks import BadInput, trial_resources
from tuner.ray_start import start_ray


def listening_addresses(process: psutil.Process) -> set[tuple[str, str, int]]:
    found = set()
    for proc in [process, *process.children(recursive=True)]:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((proc.name(), conn.laddr.ip, conn.laddr.port))
        except psutil.NoSuchProcess:
            continue
    return found


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def test_no_ray_port_listens_beyond_loopback(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    start_ray(None)
    try:
        listening = listening_addresses(psutil.Process())
        names = {name for name, _, _ in listening}
        assert {"gcs_server", "raylet"} <= names, listening
        public = [entry for entry in listening if not is_loopback(entry[1])]
        assert public == []
    finally:
        ray.shutdown()


def test_long_tmpdir_starts_ray_in_a_short_folder(capsys, monkeypatch, tmp_path, ray_tmpdir):
    long_tmp = tmp_path / ("t" * 70)  # HPC job folders and macOS's /var/folders/... are long
    long_tmp.mkdir()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_TMPDIR")
    monkeypatch.setenv("TMPDIR", str(long_tmp))
    # The short folder is normally /tmp/ray-<uid>; a test writes under its own folders.
    monkeypatch.setattr(ray_start, "SHORT_ROOTS", (ray_tmpdir,))
    short = os.path.join(ray_tmpdir, f"ray-{os.getuid()}")
    start_ray(None)
    try:
        session = ray._private.worker.global_worker.node.get_session_dir_path()
        assert session.startswith(short + "/session_")
        assert ray.cluster_resources()["CPU"] >= 1
    finally:
        ray.shutdown()
    out = capsys.readouterr().out
    assert f"note: Ray's session is in {short} (TMPDIR is too long for its sockets)" in out


@pytest.mark.parametrize(
    "option,value", [("--gpus-per-trial", "99"), ("--cpus-per-trial", "10000")]
)
def test_trial_resources_no_node_has_are_refused(
    capsys, monkeypatch, sweep_args, write_space, tmp_path, option, value
):
    # Ray would keep such trials pending forever; the tuner says what the cluster has.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    code, err = run_main(capsys, sweep_args(write_space(SMALL_GRID), option, value))
    assert code == 2, err
    assert re.fullmatch(
        rf"error: {option} {value}: no node of the cluster has that "
        r"\(the cluster has 127\.0\.0\.1: \d+ CPU, \d+ GPU\)",
        err,
    ), err
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()


def test_node_types_an_autoscaler_can_add_count_as_resources(local_ray):
    """A GPU worker group scaled to zero (KubeRay, `ray up`) is where GPU trials will run:
    the tuner must not refuse them. The cluster config is put in the GCS where an
    autoscaler reports it."""
    from ray._raylet import GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, GCS_AUTOSCALER_STATE_NAMESPACE
    from ray.core.generated.autoscaler_pb2 import ClusterConfig, NodeGroupConfig
    from ray.experimental.internal_kv import _internal_kv_put

    assert ray_start.autoscaler_node_types() == []  # no autoscaler: live nodes only
    with pytest.raises(BadInput, match="--gpus-per-trial 99: no node of the cluster has that"):
        trial_resources(None, 99, ray.nodes())
    config = ClusterConfig(
        node_group_configs=[
            NodeGroupConfig(name="gpu-workers", resources={"CPU": 8, "GPU": 99}, max_count=4),
            NodeGroupConfig(name="retired", resources={"CPU": 64, "GPU": 128}, max_count=0),
        ]
    )
    _internal_kv_put(
        GCS_AUTOSCALER_CLUSTER_CONFIG_KEY,
        config.SerializeToString(),
        namespace=GCS_AUTOSCALER_STATE_NAMESPACE,
    )
    types = ray_start.autoscaler_node_types()
    assert types == [
        {
            "Alive": True,
            "NodeManagerAddress": "node type gpu-workers (autoscaler)",
            "Resources": {"CPU": 8.0, "GPU": 99.0},
        }
    ]
    assert trial_resources(None, 99, ray.nodes() + types) == (1, 99)
    assert trial_resources(None, None, ray.nodes() + types) == (1, 1)  # a GPU each, by default
    with pytest.raises(BadInput, match=r"node type gpu-workers \(autoscaler\): 8 CPU, 99 GPU"):
        trial_resources(None, 100, ray.nodes() + types)
