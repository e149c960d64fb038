"""Shared test set-up: every cache and home-directory write goes under tmp_path."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import isolated_env
from trainables.mobile_vla.dataset import DataConfig, load_dataset
from trainables.mobile_vla.demo_data import write_demo_episodes
from tuner.ray_start import fits


def pytest_collection_modifyitems(items) -> None:
    """Tests marked `sweep` (a whole sweep or cluster, tens of seconds each) first: run on
    parallel workers (pytest-xdist, pyproject's addopts), the long ones overlap from the
    start and the short ones fill the end. The sort is stable: file order otherwise."""
    items.sort(key=lambda item: item.get_closest_marker("sweep") is None)


@pytest.fixture(scope="session")
def ray_tmpdir(tmp_path_factory) -> Iterator[str]:
    """Ray's session folder: short (unix sockets allow 107 characters) and one per test
    session (a process that started Ray once looks for later sessions in the same place).
    Under pytest-xdist (or a long user name) the session's base folder is too long for
    Ray's sockets: then a short link in /tmp points into it, and is removed at the end."""
    folder = tmp_path_factory.mktemp("r")
    if fits(str(folder / "ray")):  # Ray makes its sessions in $RAY_TMPDIR/ray
        yield str(folder)
        return
    link = Path(tempfile.mkdtemp(prefix="vt-", dir="/tmp")) / "r"
    link.symlink_to(folder, target_is_directory=True)
    try:
        yield str(link)
    finally:
        link.unlink()
        link.parent.rmdir()


@pytest.fixture(scope="session")
def worker_imports(tmp_path_factory) -> Path:
    """A fresh interpreter's import of each task, as the calibration measures it
    (trainables.calibrate.worker_import_s): once a session, shared by every test's cache,
    as a user's cache keeps it (each measurement takes seconds)."""
    return tmp_path_factory.mktemp("worker_imports")


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, ray_tmpdir, worker_imports, monkeypatch):
    """HF, torch, matplotlib, MLflow, Ray (home files too) and our decode cache write under
    tmp_path; the import times measured this session are shared."""
    cache = tmp_path / "cache"
    # HOME: Ray's ~/.ray/auth_token, one per process.
    env = isolated_env(ray_tmpdir, cache, ray_tmpdir)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    calibration = Path(env["VLA_TUNE_CACHE"]) / "calibration"
    calibration.mkdir(parents=True)
    (calibration / "imports").symlink_to(worker_imports, target_is_directory=True)
    return cache


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo_episodes")
    write_demo_episodes(folder, 16, seed=0)
    return folder


@pytest.fixture(scope="session")
def demo_data(demo_dir, tmp_path_factory):
    """16 demo episodes at the tiny model's 56x56: 14 train and 2 validation episodes."""
    cache = tmp_path_factory.mktemp("decode_cache")
    cfg = DataConfig(data_dir=str(demo_dir), image_size=(56, 56), cache_dir=str(cache))
    return load_dataset(cfg, progress=False)


@pytest.fixture
def tiny_checkpoint(tmp_path, demo_dir):
    """A freshly built tiny policy saved the trainable's way (head made non-trivial), with
    its trial_config.json: what a trial's checkpoint holds but the optimizer state."""
    import json

    import torch

    from trainables.mobile_vla.checkpoint import save_trainable
    from trainables.mobile_vla.configuration_mobile_vla import ModelConfig
    from trainables.mobile_vla.dataset import inspect_all, list_episodes
    from trainables.mobile_vla.modeling_mobile_vla import build_policy

    flat = {"data_dir": str(demo_dir)}
    _, instructions, _ = inspect_all(list_episodes(demo_dir, "episode_*.h5"), DataConfig(**flat))
    torch.manual_seed(0)
    model, _ = build_policy(ModelConfig(), instructions)
    with torch.no_grad():
        model.action_token.normal_()
    save_trainable(model, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "trial_config.json").write_text(json.dumps(flat))
    return tmp_path / "ckpt"


@pytest.fixture
def local_ray(monkeypatch):
    """The tuner's own local Ray (loopback only), stopped by its handle, never `ray stop`."""
    from tuner.ray_start import start_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    start_ray(None)
    yield
    import ray  # here, not at the top: `pytest -m gpu` runs where Ray is not installed

    ray.shutdown()
