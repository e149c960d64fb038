"""The demo world of trainables/mobile_vla/demo_data.py: scenes, the expert that drives
through them, and the camera that renders each frame.

Why the scenes are built this way: a demo or test sweep is only meaningful when the data
can be learned, so that hyperparameters make a measurable difference. Every action here
is chosen by a memoryless expert from the robot's current position and the instructed
side, and every frame is rendered from that same position, so the action at each frame
is predictable from the frame's image plus the instruction:

- The robot starts on the centre line facing a box (one or two, long side along the way
  for `vert`, across it for `hori`) at a random distance, with a green target pillar a
  fixed distance behind the box. The start is left/right symmetric, so only the
  instruction tells which way to go.
- Forward while the box is far (its apparent size shows the distance), strafe to the
  instructed side until clear of the box edge (wide boxes take more steps; the box's
  image position shows the lateral offset), forward past the box, strafe back to the
  centre line (the target's image position shows the offset), forward to the target and
  stop there (the target's apparent size shows the distance).
- Random initial distance, small step-length noise, per-episode colours and lighting and
  per-frame pixel noise keep a model from memorising frame indices or exact pixels.

Only frame 0 (`episode_start`, zero action) shows the same scene as frame 1, as in the
real collector, where the robot has not moved yet when the episode starts.

Drawing is a vectorised per-column ray cast (each image column is one ray on the floor
plane): a 720x1280 episode draws in about half a second; gzip takes a second or two more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPEED = 1.15  # nominal teleop velocity command, m/s (and rad/s)
KEY_HOLD_S = 0.4  # each key press is held this long
STEP_M = SPEED * KEY_HOLD_S  # nominal travel per action
NUM_ACTIONS = 17
NUM_FRAMES = NUM_ACTIONS + 1  # frame 0 is the episode start
ACTION_CHUNK_SIZE = 10

BOX_COUNTS = ("1box", "2box")
ORIENTATIONS = ("vert", "hori")
SIDES = ("left", "right")
SCENARIOS = tuple(f"{n}_{o}_{s}" for n in BOX_COUNTS for o in ORIENTATIONS for s in SIDES)

# Same text in every scenario of a side, so files without an instruction resolved through
# this map (dataset.resolve_instruction) look exactly like files that carry one.
INSTRUCTION_MAP = {
    "left": "Navigate around the box on the left side to reach the target",
    "right": "Navigate around the box on the right side to reach the target",
}

# World geometry in metres: x forward from the start, y to the left, z up.
CAMERA_HEIGHT = 0.35
BOX_HEIGHT = 0.5
BOX_FOOTPRINT = {"vert": (1.0, 0.4), "hori": (0.4, 1.0)}  # (length along x, width along y)
TWO_BOX_GAP = 0.2
TARGET_SIDE = 0.3
TARGET_HEIGHT = 1.0
TARGET_GAP = 3.0  # from the box's back to the target's front
FRONT_CLEARANCE = 0.5  # never approach the box closer than this
SIDE_CLEARANCE = 0.57  # lateral room beyond the box edge before driving past it
PASS_MARGIN = 0.3  # drive this far beyond the box's back before returning to the centre
ARRIVE_DISTANCE = 0.6  # stop when one more step would get closer to the target than this
STEP_NOISE = 0.04  # relative std of the distance one action actually moves
NEAR_PLANE = 0.05

# Colours are RGB here; frames are flipped to BGR only when written (ROS `bgr8`).
WALL_RGB = (170, 185, 205)  # blue-grey: blue > red, so a channel swap is detectable
FLOOR_RGB = (128, 126, 122)
BOX_RGB = (190, 140, 80)  # cardboard: red > blue
TARGET_RGB = (50, 170, 70)
SIDE_FACE_SHADE = 0.72


@dataclass(frozen=True)
class Layout:
    """Where the obstacles and the target stand; footprints are (x0, x1, y0, y1)."""

    boxes: tuple[tuple[float, float, float, float], ...]
    target: tuple[float, float, float, float]

    @property
    def box_front(self) -> float:
        return min(b[0] for b in self.boxes)

    @property
    def box_back(self) -> float:
        return max(b[1] for b in self.boxes)

    @property
    def half_width(self) -> float:
        return max(max(abs(b[2]), abs(b[3])) for b in self.boxes)


@dataclass(frozen=True)
class Look:
    """Per-episode appearance: RGB colours (float) and a global lighting factor."""

    wall: np.ndarray
    floor: np.ndarray
    box: np.ndarray
    target: np.ndarray
    light: float


@dataclass(frozen=True)
class Episode:
    """One simulated episode, before rendering."""

    scenario: str
    layout: Layout
    look: Look
    positions: np.ndarray  # (T, 2) robot (x, y) when each frame is taken
    actions: np.ndarray  # (T, 3) float32
    events: list[str]
    durations: np.ndarray  # (T,) seconds from each frame to the next


def side_of(scenario: str) -> str:
    """`2box_hori_right` -> `right`: the scenario word that names the passing side."""
    words = scenario.replace("-", "_").split("_")
    sides = [w for w in words if w in SIDES]
    if len(sides) != 1:
        raise ValueError(f"scenario '{scenario}' must name exactly one side of {list(SIDES)}")
    return sides[0]


def instruction_for(scenario: str) -> str:
    """The instruction for a scenario (`1box_vert_left`) or a bare side (`left`)."""
    return INSTRUCTION_MAP[side_of(scenario)]


def make_layout(scenario: str, distance: float) -> Layout:
    """Boxes centred on the centre line `distance` ahead of the start, target behind."""
    count, orientation, _ = scenario.split("_")
    length, width = BOX_FOOTPRINT[orientation]
    x0, x1 = distance, distance + length
    if count == "1box":
        boxes = ((x0, x1, -width / 2, width / 2),)
    else:
        inner = TWO_BOX_GAP / 2
        boxes = ((x0, x1, inner, inner + width), (x0, x1, -inner - width, -inner))
    tx = x1 + TARGET_GAP
    half = TARGET_SIDE / 2
    return Layout(boxes=boxes, target=(tx, tx + TARGET_SIDE, -half, half))


def expert_action(x: float, y: float, layout: Layout, side: str) -> tuple[float, float, str]:
    """(linear_x, linear_y, event) from the robot's position alone: no hidden phase, so
    the same picture and instruction always get the same answer."""
    side_sign = 1.0 if side == "left" else -1.0
    if x < layout.box_back + PASS_MARGIN:  # box not passed yet
        clear = abs(y) >= layout.half_width + SIDE_CLEARANCE
        if clear or layout.box_front - x - STEP_M >= FRONT_CLEARANCE:
            return SPEED, 0.0, "start_action"
        return 0.0, side_sign * SPEED, "start_action"
    if abs(y) > STEP_M / 2:  # passed: back to the centre line, where the target is
        return 0.0, -np.sign(y) * SPEED, "start_action"
    if layout.target[0] - x - STEP_M >= ARRIVE_DISTANCE:
        return SPEED, 0.0, "start_action"
    return 0.0, 0.0, "stop_action"


def simulate(scenario: str, rng: np.random.Generator) -> Episode:
    """Drive the expert for NUM_ACTIONS steps from a random distance before the box."""
    approach_steps = int(rng.integers(1, 5))
    distance = FRONT_CLEARANCE + STEP_M * (approach_steps + rng.uniform(0.0, 0.95))
    layout = make_layout(scenario, distance)
    side = side_of(scenario)
    positions = np.zeros((NUM_FRAMES, 2))
    actions = np.zeros((NUM_FRAMES, 3), dtype=np.float32)
    events = ["episode_start"]
    x = y = 0.0
    for t in range(1, NUM_FRAMES):
        positions[t] = (x, y)
        vx, vy, event = expert_action(x, y, layout, side)
        actions[t] = (vx, vy, 0.0)
        events.append(event)
        travel = KEY_HOLD_S * (1.0 + STEP_NOISE * rng.standard_normal())
        x, y = x + vx * travel, y + vy * travel
    durations = KEY_HOLD_S + rng.uniform(0.05, 0.3, size=NUM_FRAMES)
    return Episode(scenario, layout, random_look(rng), positions, actions, events, durations)


def random_look(rng: np.random.Generator) -> Look:
    """Mild per-episode colour and lighting changes, like different rooms and times of day."""

    def jitter(rgb: tuple[int, int, int], amount: float) -> np.ndarray:
        return np.asarray(rgb, dtype=np.float32) + rng.uniform(-amount, amount, size=3)

    return Look(
        wall=jitter(WALL_RGB, 8),
        floor=jitter(FLOOR_RGB, 10),
        box=jitter(BOX_RGB, 10),
        target=jitter(TARGET_RGB, 10),
        light=float(rng.uniform(0.8, 1.15)),
    )


class Camera:
    """Pinhole camera at the robot, looking along +x, 90 degree horizontal field of view."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.focal = width / 2
        self.horizon = height / 2
        # Lateral slope (dy/dx, +y left) of the ray through each column's centre.
        slope = -(np.arange(width) + 0.5 - width / 2) / self.focal
        self.slope = np.where(slope == 0.0, 1e-12, slope)
        self.rows = (np.arange(height, dtype=np.float32) + 0.5)[:, None]

    def background(self, look: Look) -> np.ndarray:
        """Wall above the horizon, floor below, the floor darker in the distance."""
        frame = np.empty((self.height, self.width, 3), dtype=np.float32)
        below = np.clip((self.rows[:, 0] - self.horizon) / self.horizon, 0.0, 1.0)
        floor_shade = 0.75 + 0.25 * below
        is_floor = self.rows[:, 0] >= self.horizon
        frame[:] = np.where(
            is_floor[:, None, None],
            (look.floor * floor_shade[:, None])[:, None, :],
            look.wall[None, None, :],
        )
        return frame

    def ray_depths(
        self, footprint: Sequence[float], x: float, y: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Depth at which each column's ray first meets a footprint (inf: misses), and
        whether it meets a side face (True) or the front/back face (False)."""
        x0, x1, y0, y1 = footprint
        tx0, tx1 = x0 - x, x1 - x
        ta, tb = (y0 - y) / self.slope, (y1 - y) / self.slope
        ty0, ty1 = np.minimum(ta, tb), np.maximum(ta, tb)
        enter = np.maximum(tx0, ty0)
        leave = np.minimum(tx1, ty1)
        hit = (enter <= leave) & (leave > NEAR_PLANE)
        depth = np.where(hit, np.maximum(enter, NEAR_PLANE), np.inf)
        return depth, ty0 > tx0

    def draw(self, frame: np.ndarray, x: float, y: float, layout: Layout, look: Look) -> None:
        """Paint boxes and target far to near, column by column, onto `frame` in place."""
        solids = [(b, BOX_HEIGHT, look.box) for b in layout.boxes]
        solids.append((layout.target, TARGET_HEIGHT, look.target))
        depths, colours, heights = [], [], []
        for footprint, height, rgb in solids:
            depth, side = self.ray_depths(footprint, x, y)
            shade = np.where(side, SIDE_FACE_SHADE, 1.0) / (1.0 + 0.04 * np.minimum(depth, 50))
            depths.append(depth)
            colours.append(rgb[None, :] * shade[:, None])
            heights.append(height)
        depths_arr = np.stack(depths)  # (K, W)
        colours_arr = np.stack(colours)  # (K, W, 3)
        heights_arr = np.asarray(heights)
        columns = np.arange(self.width)
        for idx in np.argsort(-depths_arr, axis=0, kind="stable"):
            depth = depths_arr[idx, columns]  # inf where the ray misses: an empty span
            seen = np.isfinite(depth)
            if not seen.any():
                continue
            top = self.horizon - self.focal * (heights_arr[idx] - CAMERA_HEIGHT) / depth
            bottom = self.horizon + self.focal * CAMERA_HEIGHT / depth
            self.paint_spans(frame, top, bottom, colours_arr[idx, columns])

    def paint_spans(
        self, frame: np.ndarray, top: np.ndarray, bottom: np.ndarray, colour: np.ndarray
    ) -> None:
        """Fill rows [top, bottom) of every column with its colour, touching only the
        bounding rectangle (distant objects are small; this is most of the speed)."""
        cols = np.flatnonzero(bottom > top)
        if cols.size == 0:
            return
        c0, c1 = cols[0], cols[-1] + 1
        r0 = max(int(np.floor(top[c0:c1].min())), 0)
        r1 = min(int(np.ceil(bottom[c0:c1].max())), self.height)
        if r0 >= r1:
            return
        rows = self.rows[r0:r1]
        mask = (rows >= top[c0:c1]) & (rows < bottom[c0:c1])
        np.copyto(frame[r0:r1, c0:c1], colour[None, c0:c1], where=mask[:, :, None])


def render_bgr(
    camera: Camera,
    background: np.ndarray,
    x: float,
    y: float,
    episode: Episode,
    rng: np.random.Generator,
) -> np.ndarray:
    """One camera frame as the collector stores it: uint8, BGR, with sensor noise."""
    frame = background.copy()
    camera.draw(frame, x, y, episode.layout, episode.look)
    frame *= episode.look.light
    frame += rng.integers(-6, 7, size=frame.shape, dtype=np.int16)
    return np.clip(frame, 0, 255).astype(np.uint8)[:, :, ::-1]
