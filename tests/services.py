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


def kill_when(command: list[str], condition, what: str, timeout: float = 300) -> None:
    """Run `command` in a process group of its own until `condition()` holds, then SIGKILL
    the group (a sweep's driver and the local Ray it started). Fails if it ends first.
    `condition` may raise while what it reads does not exist yet (an MLflow store)."""
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if proc.poll() is not None:
                pytest.fail(f"{what}: the command ended before it could be killed")
            try:
                if condition():
                    return
            except Exception:  # noqa: BLE001 - not there yet
                continue
        pytest.fail(f"{what}: not reached in {timeout:.0f} s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
