"""Stopping the services tests start, by the handle they were started with."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen) -> None:
    """Stop the process group we started (start_new_session=True): politely, then for sure
    (a loaded machine can take its time to shut gunicorn's workers down)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
