"""Records files: every problem named with its file and record index; splits; demo data."""

from __future__ import annotations

import json

import pytest

from trainables.robot_code.dataset import (
    DataConfig,
    DataError,
    load_dataset,
    load_records,
    split_records,
)

GOOD = {"input": "move forward 3 meters", "output": "robot.move_forward(distance=3.0, speed=1.0)"}


def write(path, payload) -> str:
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return str(path)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("[{'input': 1}]", "data.json: not valid JSON (Expecting property name"),
        ({"records": [GOOD]}, "data.json: expected a JSON list of records, got an object"),
        ([], "data.json: no records"),
        ([GOOD, "move forward"], "data.json: record 1: expected an object with 'input' and "),
        ([GOOD, {"output": "robot.stop()"}], "data.json: record 1: missing 'input'"),
        ([GOOD, GOOD, {"input": "stop"}], "data.json: record 2: missing 'output'"),
        ([{**GOOD, "input": 3}], "data.json: record 0: 'input' must be a string, got a number"),
        ([{**GOOD, "output": None}], "data.json: record 0: 'output' must be a string, got null"),
        ([{**GOOD, "output": "  \n"}], "data.json: record 0: 'output' is empty"),
        ([{**GOOD, "input": ""}], "data.json: record 0: 'input' is empty"),
        (
            [{**GOOD, "category": ["a"]}],
            "data.json: record 0: 'category' must be a string, got a list",
        ),
        ([{**GOOD, "category": ""}], "data.json: record 0: 'category' is empty"),
    ],
)
def test_each_problem_is_named_with_file_and_record(tmp_path, payload, message):
    path = write(tmp_path / "data.json", payload)
    with pytest.raises(DataError) as info:
        load_records(path)
    assert str(info.value).startswith(str(tmp_path / message.split(":")[0]) + ":")
    assert message.split(": ", 1)[1] in str(info.value)
    assert "\n" not in str(info.value)


def test_every_bad_record_is_kept_and_the_message_counts_the_rest(tmp_path):
    records = [GOOD, {"input": "x"}, GOOD, {"input": 1, "output": "y"}, {"output": "z"}]
    path = write(tmp_path / "data.json", records)
    with pytest.raises(DataError) as info:
        load_records(path)
    assert str(info.value) == f"{path}: record 1: missing 'output' (and 2 more problems)"
    assert info.value.problems[1:] == [
        f"{path}: record 3: 'input' must be a string, got a number",
        f"{path}: record 4: missing 'input'",
    ]


def test_missing_file_and_json_lines(tmp_path):
    with pytest.raises(DataError, match="nope.json: file does not exist$"):
        load_records(tmp_path / "nope.json")
    lines = [json.dumps(GOOD), "", json.dumps({**GOOD, "category": "movement"}), "{oops"]
    path = write(tmp_path / "data.jsonl", "\n".join(lines))
    with pytest.raises(DataError, match=r"data.jsonl: line 4: not valid JSON"):
        load_records(path)
    write(tmp_path / "data.jsonl", "\n".join(lines[:3] + [json.dumps({"input": "x"})]))
    with pytest.raises(DataError, match=r"data.jsonl: line 4: missing 'output'"):
        load_records(path)
    write(tmp_path / "data.jsonl", "\n".join(lines[:3]) + "\n")
    records = load_records(path)
    assert len(records) == 2 and records.categories == ["", "movement"]


def test_extra_fields_are_ignored(tmp_path):
    path = write(tmp_path / "data.json", [{**GOOD, "id": 7, "note": None}])
    assert load_records(path).outputs == [GOOD["output"]]


def test_split_is_deterministic_disjoint_and_complete(tmp_path):
    records = [{"input": f"command {i}", "output": f"robot.step({i})"} for i in range(50)]
    path = write(tmp_path / "data.json", records)
    loaded = load_records(path)
    train, val = split_records(loaded, 0.2, seed=3)
    again_train, again_val = split_records(loaded, 0.2, seed=3)
    assert (train.inputs, val.inputs) == (again_train.inputs, again_val.inputs)
    assert len(val) == 10 and len(train) == 40
    assert sorted(train.inputs + val.inputs) == sorted(loaded.inputs)
    assert split_records(loaded, 0.2, seed=4)[1].inputs != val.inputs
    with pytest.raises(DataError, match="1 records cannot be split"):
        split_records(loaded.take([0]), 0.5, seed=0)


def test_separate_validation_file(tmp_path):
    train_path = write(tmp_path / "train.json", [GOOD] * 3)
    val_path = write(tmp_path / "val.json", [{**GOOD, "category": "movement"}])
    data = load_dataset(DataConfig(data_path=train_path, val_path=val_path))
    assert len(data.train) == 3 and data.val.categories == ["movement"]
    bad = write(tmp_path / "bad_val.json", [{"input": "x"}])
    with pytest.raises(DataError, match="bad_val.json: record 0: missing 'output'"):
        load_dataset(DataConfig(data_path=train_path, val_path=bad))
    with pytest.raises(ValueError, match="val_path: given without data_path"):
        DataConfig(val_path=val_path)


def test_without_data_path_the_demo_set_is_generated_once_into_the_cache(isolated_caches):
    data = load_dataset(DataConfig(demo_records=200))
    folder = isolated_caches / "vla-tune" / "robot_code_demo"
    assert data.source == str(folder / "commands_seed0_n200.json")
    assert len(data.train) == 180 and len(data.val) == 20
    assert [p.name for p in folder.iterdir()] == ["commands_seed0_n200.json"]
    stamp = (folder / "commands_seed0_n200.json").stat().st_mtime_ns
    assert load_dataset(DataConfig(demo_records=200)).val.inputs == data.val.inputs
    assert (folder / "commands_seed0_n200.json").stat().st_mtime_ns == stamp
