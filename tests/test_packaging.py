"""What pyproject.toml and the README promise about Python agree with each other and with
what the code needs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def python_floor() -> tuple[int, int]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    match = re.fullmatch(r">=\s*3\.(\d+)", project["project"]["requires-python"])
    assert match, project["project"]["requires-python"]
    return 3, int(match[1])


def test_ruff_and_the_readme_name_the_python_floor():
    major, minor = python_floor()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["tool"]["ruff"]["target-version"] == f"py{major}{minor}"
    readme = (REPO / "README.md").read_text()
    assert re.findall(r"Python (3\.\d+)\+", readme) == [f"{major}.{minor}"]


def test_the_python_floor_has_what_the_code_calls():
    # hashlib.file_digest (the decode cache) is new in 3.11.
    if "hashlib.file_digest" in (REPO / "trainables/mobile_vla/decode_cache.py").read_text():
        assert python_floor() >= (3, 11)
