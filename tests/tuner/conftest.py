"""Small spaces and sweep arguments over the session's demo episodes."""

from __future__ import annotations

import textwrap

import pytest

from tuner.run import main

SMALL_GRID = """
description: test grid
trainable: mobile_vla
metric: val_loss
mode: min
search: grid
params:
  learning_rate: [3.0e-3, 1.0e-5]
  weight_decay: [0.0, 0.1]
fixed:
  batch_size: 32
  max_epochs: 2
scheduler:
  type: asha
  grace_period: 1
  reduction_factor: 2
"""

# The grid's two learning rates only: two trials, for what needs no more.
TWO_RATES = SMALL_GRID.replace("  weight_decay: [0.0, 0.1]\n", "")
assert TWO_RATES != SMALL_GRID


NOT_ERRORS = ("decoding episodes", "Token authentication is enabled for this Ray cluster")


def run_main(capsys, argv):
    """`tuner.run.main(argv)` in this process: (exit code, its one error line)."""
    code = main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    # Decoding progress may come first; the error is the one line that follows it. The
    # first local Ray a process starts may log Ray's notice that token auth is on.
    errors = [line for line in lines if not line.startswith(NOT_ERRORS)]
    assert len(errors) == 1, lines
    return code, errors[0]


@pytest.fixture
def write_space(tmp_path):
    def write(text: str, name: str = "space.yaml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def sweep_args(tmp_path, demo_dir):
    """Arguments that keep a sweep's files under tmp_path, on the demo episodes."""

    def args(space, *extra: str) -> list[str]:
        return [
            "--space", str(space),
            "--data-dir", str(demo_dir),
            "--storage-path", str(tmp_path / "results"),
            "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            *extra,
        ]  # fmt: skip

    return args
