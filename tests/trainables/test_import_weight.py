"""The tuner checks configs and the demo writers run without the heavy libraries: their
imports must not pull in transformers (or, for the demo writers, torch)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def loaded_after(code: str) -> set[str]:
    """Which of torch/transformers a fresh interpreter has imported after `code`."""
    probe = (
        f"{code}\nimport sys\nprint(*[m for m in ('torch', 'transformers') if m in sys.modules])"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(run.stdout.split())


def test_mobile_vla_task_does_not_import_transformers() -> None:
    code = "import trainables.task as t\nt.get_task('mobile_vla')"
    assert "transformers" not in loaded_after(code)


@pytest.mark.parametrize("task", ["mobile_vla", "robot_code"])
def test_demo_data_writers_import_neither_torch_nor_transformers(task: str) -> None:
    assert loaded_after(f"import trainables.{task}.demo_data") == set()
