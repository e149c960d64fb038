"""Synthetic natural-language robot commands paired with the robot API calls they mean.

    python -m trainables.robot_code.demo_data --out commands.json --n 2000

Why the commands are built this way: a demo sweep is only meaningful when the mapping can
be learned, yet not by memorising strings, so that hyperparameters make a measurable
difference. Every output is a pure function of its command (no hidden state), every
number and name in the output is spelled in the command (so a model has to copy it,
not guess it), and the same call is reached through several phrasings (synonyms, word
order, optional speed words), so the validation commands are new sentences, not seen ones.
Inputs are unique across the file, so a validation record never repeats a training one.

Categories: movement, turning, manipulation (objects with colours), navigation, and
multi-step sequences of two or three of those (one call per line, a pronoun like "it"
resolved to the object picked up before it). About 20% are sequences up to a few thousand
records; single commands have ~10k distinct phrasings in all, so in much larger sets
sequences fill the rest (at 100k records, 90%).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from trainables.cache import default_cache_dir, write_atomic
from trainables.cli import demo_data_parser, write_or_fail

T = TypeVar("T")
PROG = "python -m trainables.robot_code.demo_data"
DESCRIPTION = "Write synthetic robot commands with their API calls as a JSON list."
DEMO_RECORDS = 2000
MAX_RECORDS = 100_000
CATEGORIES = ("movement", "turning", "manipulation", "navigation", "sequence")
# Single commands are drawn by these weights; sequences take a share of their own.
SINGLE_WEIGHTS = {"movement": 0.3, "turning": 0.2, "manipulation": 0.3, "navigation": 0.2}
SEQUENCE_SHARE = 0.2

DISTANCES = tuple(d / 2 for d in range(1, 21))  # 0.5 .. 10 m
ANGLES = tuple(range(15, 181, 15))
SPEEDS = {"": 1.0, " slowly": 0.5, " carefully": 0.5, " quickly": 1.5, " fast": 1.5}
COLORS = ("red", "green", "blue", "yellow", "orange", "purple", "black", "white")
OBJECTS = ("cube", "ball", "block", "cup", "bottle", "can", "box", "sponge")
SURFACES = ("table", "shelf", "tray", "counter", "desk")
CONTAINERS = ("bin", "basket", "drawer", "crate")
LOCATIONS = (
    "kitchen",
    "living room",
    "charging station",
    "front door",
    "back door",
    "office",
    "hallway",
    "bedroom",
    "bathroom",
    "garage",
    "lab",
    "workshop",
    "storage room",
    "loading dock",
    "elevator",
    "reception",
)

FORWARD = ("move forward {d}", "go forward {d}", "drive forward {d}", "move ahead {d}")
BACKWARD = ("move backward {d}", "go back {d}", "back up {d}", "reverse {d}")
TURN = (
    "turn {side} {a} degrees",
    "rotate {side} {a} degrees",
    "turn {side} by {a} degrees",
    "turn {a} degrees to the {side}",
)
PICK = ("pick up the {c} {o}", "grab the {c} {o}", "grasp the {c} {o}", "take the {c} {o}")
PLACE_ON = ("place the {c} {o} on the {t}", "put the {c} {o} on the {t}")
PLACE_IN = ("put the {c} {o} in the {t}", "drop the {c} {o} into the {t}")
GO_TO = (
    "go to the {l}",
    "navigate to the {l}",
    "head to the {l}",
    "drive to the {l}",
    "move to the {l}",
    "return to the {l}",
)
# Said before a whole command, never inside a sequence; the code does not change.
PREFIXES = ("", "", "please ", "robot, ", "now ")
JOINERS = (" then ", ", then ", " and then ", ", and then ")


def pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    """One of `options`, uniformly (rng.choice converts to an array: 10x slower here)."""
    return options[int(rng.integers(len(options)))]


def format_number(value: float) -> str:
    """How a person writes it: 3, 2.5 (never 3.0)."""
    return f"{value:g}"


def metres(value: float) -> str:
    unit = "meter" if value == 1 else "meters"
    return f"{format_number(value)} {unit}"


def movement(rng: np.random.Generator) -> tuple[str, str]:
    distance = pick(rng, DISTANCES)
    forward = bool(rng.integers(2))
    phrase = pick(rng, FORWARD if forward else BACKWARD).format(d=metres(distance))
    speed_word = pick(rng, list(SPEEDS))
    call = "move_forward" if forward else "move_backward"
    return phrase + speed_word, f"robot.{call}(distance={distance:.1f}, speed={SPEEDS[speed_word]})"


def turning(rng: np.random.Generator) -> tuple[str, str]:
    side = pick(rng, ("left", "right"))
    angle = pick(rng, ANGLES)
    if angle == 180 and rng.random() < 0.5:
        return "turn around", "robot.turn_left(angle=180.0)"
    phrase = pick(rng, TURN).format(side=side, a=angle)
    return phrase, f"robot.turn_{side}(angle={angle:.1f})"


def pick_call(color: str, obj: str) -> str:
    return f'robot.pick_up(object="{obj}", color="{color}")'


def place_call(color: str, obj: str, target: str) -> str:
    return f'robot.place(object="{obj}", color="{color}", target="{target}")'


def manipulation(rng: np.random.Generator) -> tuple[str, str]:
    color, obj = pick(rng, COLORS), pick(rng, OBJECTS)
    kind = rng.integers(3)
    if kind == 0:
        return pick(rng, PICK).format(c=color, o=obj), pick_call(color, obj)
    targets, phrases = (SURFACES, PLACE_ON) if kind == 1 else (CONTAINERS, PLACE_IN)
    target = pick(rng, targets)
    phrase = pick(rng, phrases).format(c=color, o=obj, t=target)
    return phrase, place_call(color, obj, target)


def navigation(rng: np.random.Generator) -> tuple[str, str]:
    location = pick(rng, LOCATIONS)
    phrase = pick(rng, GO_TO).format(l=location)
    return phrase, f'robot.navigate_to(location="{location.replace(" ", "_")}")'


SINGLE: dict[str, Callable[[np.random.Generator], tuple[str, str]]] = {
    "movement": movement,
    "turning": turning,
    "manipulation": manipulation,
    "navigation": navigation,
}


def pick_and_place(rng: np.random.Generator) -> tuple[str, str]:
    """Pick, then place "it": the pronoun stands for the object picked up first."""
    color, obj = pick(rng, COLORS), pick(rng, OBJECTS)
    target = pick(rng, SURFACES + CONTAINERS)
    where = "in" if target in CONTAINERS else "on"
    first = pick(rng, PICK).format(c=color, o=obj)
    verb = pick(rng, ("place", "put"))
    phrase = f"{first} and {verb} it {where} the {target}"
    return phrase, pick_call(color, obj) + "\n" + place_call(color, obj, target)


def sequence(rng: np.random.Generator) -> tuple[str, str]:
    """Two or three single commands joined by 'then'; one call per line, in order."""
    if rng.random() < 0.25:
        return pick_and_place(rng)
    names = list(SINGLE)
    steps = [SINGLE[pick(rng, names)](rng) for _ in range(int(rng.integers(2, 4)))]
    phrase = steps[0][0]
    for step_phrase, _ in steps[1:]:
        phrase += pick(rng, JOINERS) + step_phrase
    return phrase, "\n".join(code for _, code in steps)


def draw_category(rng: np.random.Generator) -> str:
    if rng.random() < SEQUENCE_SHARE:
        return "sequence"
    names = list(SINGLE_WEIGHTS)
    weights = np.asarray([SINGLE_WEIGHTS[n] for n in names])
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def generate_records(n: int, seed: int = 0) -> list[dict[str, str]]:
    """`n` records with unique inputs; same (n, seed), same records, in the same order."""
    if not 1 <= n <= MAX_RECORDS:
        raise ValueError(f"--n must be in [1, {MAX_RECORDS}], got {n}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    rng = np.random.default_rng(seed)
    records: list[dict[str, str]] = []
    seen: set[str] = set()
    attempts = 0
    while len(records) < n:
        attempts += 1
        # Single commands have ~10k distinct phrasings; past that, sequences (unbounded)
        # fill the rest, so this bound only catches a template edit that breaks variety.
        if attempts > 50 * n:
            raise ValueError(f"could not draw {n} distinct commands")
        category = draw_category(rng)
        text, code = sequence(rng) if category == "sequence" else SINGLE[category](rng)
        text = pick(rng, PREFIXES) + text
        if text in seen:
            continue
        seen.add(text)
        records.append({"input": text, "output": code, "category": category})
    return records


def write_demo_file(out: str | Path, n: int, seed: int = 0) -> Path:
    """Write the records as a JSON list; written to a temporary name, then renamed."""
    records = generate_records(n, seed)
    path = Path(out)
    text = json.dumps(records, indent=1) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))
    return path


def demo_file_path(n: int = DEMO_RECORDS, seed: int = 0, root: str | Path | None = None) -> Path:
    base = Path(root) if root is not None else default_cache_dir() / "robot_code_demo"
    return base / f"commands_seed{seed}_n{n}.json"


def ensure_demo_data(
    n: int = DEMO_RECORDS, seed: int = 0, root: str | Path | None = None
) -> tuple[Path, bool]:
    """The demo file under the cache, generated once; (path, was_created).

    Written under a temporary name and renamed into place, so an interrupted run never
    leaves a half-written file that later runs would trust.
    """
    path = demo_file_path(n, seed, root)
    if path.is_file():
        return path, False
    write_demo_file(path, n, seed)
    return path, True


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = demo_data_parser(PROG, DESCRIPTION, out_help="JSON file to write")
    parser.add_argument("--n", type=int, required=True, help="number of records")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def write() -> str:
        return f"wrote {args.n} records to {write_demo_file(args.out, args.n, args.seed)}"

    return write_or_fail(PROG, write)


if __name__ == "__main__":
    sys.exit(main())
