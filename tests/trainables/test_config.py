"""Flat trial configs are routed to dataclasses, coerced, and bad keys are named."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from trainables.config import ConfigError, parse_assignments, route


@dataclass
class Data:
    data_dir: str
    window_size: int = 8
    image_size: tuple[int, ...] = (224, 224)
    default_instruction: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)


@dataclass
class Train:
    learning_rate: float = 1e-4
    window_size: int = 8
    lora_enable: bool = True

    def __post_init__(self):
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


SECTIONS = {"data": Data, "train": Train}


def test_keys_go_to_every_section_that_declares_them_and_are_coerced():
    built = route(
        {"data_dir": "/d", "window_size": "4", "learning_rate": "1e-4", "image_size": [28, 28]},
        SECTIONS,
    )
    assert built["data"].window_size == 4 and built["train"].window_size == 4
    assert built["train"].learning_rate == 1e-4 and isinstance(built["train"].learning_rate, float)
    assert built["data"].image_size == (28, 28)
    assert built["data"].default_instruction is None


@pytest.mark.parametrize(
    "flat,message",
    [
        (
            {"data_dir": "/d", "learning_rat": 1e-3},
            "unknown config key 'learning_rat' (did you mean 'learning_rate'?)",
        ),
        ({"data_dir": "/d", "window_size": 2.5}, "window_size: expected int, got 2.5"),
        ({"data_dir": "/d", "lora_enable": "yes"}, "lora_enable: expected bool, got 'yes'"),
        ({"data_dir": "/d", "learning_rate": "fast"}, "learning_rate: expected float, got 'fast'"),
        ({"data_dir": "/d", "learning_rate": -1}, "learning_rate must be > 0, got -1.0"),
        ({"data_dir": "/d", "mapping": [1]}, "mapping: expected dict"),
        ({}, "data: "),
    ],
)
def test_bad_keys_and_values_are_named(flat, message):
    with pytest.raises(ConfigError) as info:
        route(flat, SECTIONS)
    assert message in str(info.value)


def test_set_assignments_parse_as_yaml():
    assert parse_assignments(["a=1", "b=0.5", "c=true", "d=hello", "e=[1, 2]"]) == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": "hello",
        "e": [1, 2],
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignments(["oops"])
