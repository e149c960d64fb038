"""What pyproject.toml and the README promise about Python matches what the code needs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_python_floor_is_the_same_everywhere_and_has_file_digest():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    floor = project["project"]["requires-python"]
    assert floor == ">=3.11"  # hashlib.file_digest (the decode cache) is new in 3.11
    assert "hashlib.file_digest" in (REPO / "trainables/mobile_vla/decode_cache.py").read_text()
    assert project["tool"]["ruff"]["target-version"] == "py311"
    readme = (REPO / "README.md").read_text()
    assert re.findall(r"Python (3\.\d+)\+", readme) == ["3.11"]


def test_dependency_floors_are_not_older_than_the_apis_called():
    """The floors checked by installing them together (transformers 5: `dtype=` and
    get_image_features(...).pooler_output; mlflow 3.9: imports with SQLAlchemy 2.1)."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = dict(re.match(r"([a-z0-9_.-]+)(?:\[.*\])?>=(\S+)", d).groups() for d in deps)
    assert floors["transformers"] == "5.0" and floors["peft"] == "0.18"
    assert floors["mlflow"] == "3.9" and floors["tokenizers"] == "0.22.1"
    assert floors["h5py"] == "3.11" and floors["ray"] == "2.58"
