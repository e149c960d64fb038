"""In local mode every Ray service listens on loopback only."""

from __future__ import annotations

import ipaddress

import psutil
import ray

from tuner.run import start_ray


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
