"""Start Ray for a sweep (join a cluster, or a local Ray on loopback in a short folder),
and check the cluster it found.

Ray puts its session under `$RAY_TMPDIR/ray`, else (Linux) `$TMPDIR/ray`, else `/tmp/ray`,
and its sockets at `<that>/session_<date>_<time>_<microseconds>_<pid>/sockets/plasma_store`.
A unix socket path holds at most 107 bytes (103 on macOS), so a TMPDIR of ~40 characters
or more (HPC job folders, pytest's tmp_path) makes `ray.init` die with an OSError. Then a
local Ray starts under a short folder of its own, and says where; when the user chose the
long folder (RAY_TMPDIR), that is one line of bad input instead.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tuner.checks import BadInput
from tuner.storage import Storage

# The longest socket Ray creates in a session: a 7-digit pid is Linux's largest.
SESSION = "session_2000-01-01_00-00-00_000000_4194304"
LONGEST_SOCKET = ("sockets", "plasma_store")
# Folders tried, in order, for a short root of our own (`<root>/ray-<uid>`).
SHORT_ROOTS = ("/tmp", "/var/tmp", "/dev/shm")


def socket_limit() -> int:
    """Longest unix socket path in bytes (sun_path less its terminating NUL)."""
    return (104 if sys.platform == "darwin" else 108) - 1


def socket_path_length(ray_temp_dir: str) -> int:
    """Bytes of the longest socket path Ray would create under this temp folder."""
    return len(os.path.join(ray_temp_dir, SESSION, *LONGEST_SOCKET).encode())


def fits(ray_temp_dir: str) -> bool:
    return socket_path_length(ray_temp_dir) <= socket_limit()


def default_temp_dir() -> str:
    """Ray's own choice (RAY_TMPDIR, TMPDIR on Linux, /tmp): what `ray.init` would use."""
    from ray._common.utils import get_default_ray_temp_dir

    return get_default_ray_temp_dir()


def _usable(folder: str) -> bool:
    if os.path.isdir(folder):
        return os.access(folder, os.W_OK | os.X_OK)
    parent = os.path.dirname(folder)
    return os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK)


def local_temp_dir() -> str | None:
    """The temp folder to start a local Ray in: None when Ray's default fits, else a short
    folder of ours. Raises BadInput when RAY_TMPDIR is too long, or nothing short is usable."""
    default = default_temp_dir()
    if sys.platform == "win32" or fits(default):  # Windows: TCP, no unix sockets
        return None
    limit, length = socket_limit(), socket_path_length(default)
    room = limit - (length - len(default.encode())) - len("/ray")
    if "RAY_TMPDIR" in os.environ:
        raise BadInput(
            f"RAY_TMPDIR={os.environ['RAY_TMPDIR']}: Ray's unix socket paths under it would "
            f"be {length} bytes, over the limit of {limit}; set RAY_TMPDIR to a folder of at "
            f"most {room} characters"
        )
    for root in SHORT_ROOTS:
        folder = os.path.join(root, f"ray-{os.getuid()}")
        if fits(folder) and _usable(folder):
            return folder
    raise BadInput(
        f"TMPDIR={os.environ.get('TMPDIR', '')}: Ray's unix socket paths under it would be "
        f"{length} bytes, over the limit of {limit}, and none of {', '.join(SHORT_ROOTS)} "
        f"is writable; set RAY_TMPDIR to a writable folder of at most {room} characters"
    )


def start_ray(address: str | None) -> None:
    """Join a cluster (--address / RAY_ADDRESS, as under `ray job submit`), else start a
    local Ray whose every service listens on loopback only."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    # Ray binds its servers to the node IP, and on Linux resolves even an explicit
    # 127.0.0.1 to the machine's address; its macOS/Windows mode keeps the node on
    # loopback. Set for this process (already imported constants) and its children.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
    temp_dir = local_temp_dir()  # None: Ray's default is short enough
    if temp_dir:
        print(f"note: Ray's session is in {temp_dir} (TMPDIR is too long for its sockets)")
    ray.init(
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=temp_dir,
        log_to_driver=False,
        configure_logging=False,
    )


def quiet_tune_output() -> None:
    """Tune's console output for a sweep; read when the Tuner is built (a user's own
    setting wins)."""
    # Ray's older console output honours verbose=0; the live view replaces its tables.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def autoscaler_node_types() -> list[dict[str, Any]]:
    """The node types an autoscaler (KubeRay, `ray up`) can still start, shaped like
    `ray.nodes()` entries, so that a GPU worker group scaled to zero still counts. Read as
    Ray Train reads it: the cluster config the autoscaler reports to the GCS (none without
    an autoscaler)."""
    from ray._private.state import state

    try:
        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - Ray's private reader; without it, live nodes only
        return []
    if config is None:
        return []
    return [
        {
            "Alive": True,
            "NodeManagerAddress": f"node type {group.name or '?'} (autoscaler)",
            "Resources": {key: float(value) for key, value in group.resources.items()},
        }
        for group in config.node_group_configs
        if group.max_count != 0
    ]


def check_storage(storage: Storage, shared: bool) -> None:
    """A local folder only works on a multi-node cluster when every node mounts it."""
    import ray

    if storage.remote or shared:
        return
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    if nodes > 1:
        raise BadInput(
            f"--storage-path {storage.root_uri} is a local folder and the cluster has {nodes} "
            f"nodes: use s3://... or a folder every node mounts (NFS) with --shared-storage"
        )
