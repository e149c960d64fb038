"""Stopping the services tests start, by the handle they were started with."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest


def stop_group(proc: subprocess.Popen) -> None:
    """Stop the process group we started (start_new_session=True): politely, then for sure
    (a loaded machine can take its time to shut gunicorn's workers down)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def start_group(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """`command` in a process group of its own, output discarded (stop it with kill_group)."""
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
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
