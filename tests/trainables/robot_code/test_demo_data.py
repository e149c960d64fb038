"""The demo generator: deterministic, varied, valid Python, learnable, one-line errors."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections import Counter

from trainables.robot_code.dataset import load_records
from trainables.robot_code.demo_data import (
    CATEGORIES,
    ensure_demo_data,
    generate_records,
    main,
)


def test_records_are_deterministic_unique_and_valid_python():
    records = generate_records(1000, seed=0)
    assert records == generate_records(1000, seed=0)
    assert records != generate_records(1000, seed=1)
    assert len({r["input"] for r in records}) == 1000
    counts = Counter(r["category"] for r in records)
    assert set(counts) == set(CATEGORIES) and min(counts.values()) >= 100
    for record in records:
        ast.parse(record["output"])
        assert all(line.startswith("robot.") for line in record["output"].splitlines())
    multi = [r for r in records if r["category"] == "sequence"]
    assert all(r["output"].count("\n") >= 1 for r in multi)


def test_numbers_and_names_in_the_code_are_spelled_in_the_command():
    """What makes the mapping learnable rather than guessable."""
    for record in generate_records(300, seed=2):
        command, code = record["input"], record["output"]
        for number in re.findall(r"(?:distance|angle)=([\d.]+)", code):
            assert f"{float(number):g}" in command or "turn around" in command, record
        for name in re.findall(r'(?:object|color|target)="(\w+)"', code):
            assert name in command, record
        for location in re.findall(r'location="(\w+)"', code):
            assert location.replace("_", " ") in command, record


def test_cli_writes_a_loadable_file_and_rejects_bad_arguments(tmp_path, capsys):
    out = tmp_path / "sub" / "commands.json"
    assert main(["--out", str(out), "--n", "50", "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 50 records to {out}"
    assert json.loads(out.read_text()) == generate_records(50, seed=3)
    assert len(load_records(out)) == 50
    assert [p.name for p in out.parent.iterdir()] == ["commands.json"]  # no temp file left

    assert main(["--out", str(out), "--n", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "python -m trainables.robot_code.demo_data: error: --n must be in [1, 100000], got 0"
    )
    run = subprocess.run(
        [sys.executable, "-m", "trainables.robot_code.demo_data", "--out", str(out), "--n", "x"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "argument --n: invalid int value: 'x'" in run.stderr


def test_ensure_demo_data_generates_once(tmp_path):
    path, created = ensure_demo_data(40, root=tmp_path)
    assert created and path.parent == tmp_path
    again, created_again = ensure_demo_data(40, root=tmp_path)
    assert again == path and not created_again
