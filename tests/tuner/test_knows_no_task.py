"""The tuner knows no task: what is task-specific is a hook on the task's `Task`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tuner

TASK_PACKAGES = ("trainables.mobile_vla", "trainables.robot_code")


def imported_modules(path: Path) -> list[str]:
    """Every module a file imports, at its top or inside a function."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return names


def test_no_tuner_module_imports_a_task_package():
    files = sorted(Path(tuner.__file__).parent.glob("*.py"))
    assert len(files) > 10
    found = {
        f"{path.name}: {name}"
        for path in files
        for name in imported_modules(path)
        if name.startswith(TASK_PACKAGES)
        or name in ("trainables.mobile_vla", "trainables.robot_code")
    }
    assert found == set()


def test_importing_every_tuner_module_loads_no_task():
    modules = [f"tuner.{p.stem}" for p in Path(tuner.__file__).parent.glob("*.py")]
    code = (
        f"import importlib, sys\nfor m in {sorted(modules)!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({TASK_PACKAGES!r})))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n    from trainables.mobile_vla.dataset import load_dataset\n"
        "from trainables import robot_code\n"
    )
    names = imported_modules(source)
    assert "trainables.mobile_vla.dataset" in names and "trainables.robot_code" in names


def test_a_task_without_the_hook_is_one_error_line(capsys, tmp_path):
    from tuner.evaluate import main as evaluate_main
    from tuner.storage import BEST_FILE, Storage

    storage = Storage(str(tmp_path / "results"), "code")
    (tmp_path / "ckpt").mkdir()
    record = {"trainable": "robot_code", "config": {}, "checkpoint": str(tmp_path / "ckpt")}
    storage.write_json(BEST_FILE, {**record, "trial": "t", "metric": "m", "value": 0.0})
    assert evaluate_main(["--storage-path", str(tmp_path / "results"), "--name", "code"]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'ckpt'}: trainable robot_code has no evaluation\n"
    )
