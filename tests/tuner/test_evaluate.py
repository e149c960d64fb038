"""After a sweep: evaluate, export --merge, Policy.from_export, and MLflow's runs page.

One small real sweep (2 trials, 1 epoch, real Ray and MLflow) is shared by the module.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.exactness import chain_terms, reordered_rtol
from tests.services import cli, isolated_env, sweep_runs
from tests.trainables.mobile_vla.test_trainable import POLICY_CHAIN
from tests.tuner.conftest import SMALL_GRID
from trainables.mobile_vla.demo_data import write_demo_episodes

# One xdist worker runs this module, so its module-scoped set-up is built once;
# that set-up is long, so the module is scheduled first (tests/conftest.py).
pytestmark = [pytest.mark.xdist_group("evaluate"), pytest.mark.sweep]

# A MAE of actions (|a| <= the bound, 1.15) over an episode's <= 18 frames x 10 steps,
# predicted in other batches than the direct frame-by-frame run: a reordering of the
# policy's forward chain and of the mean (tests.exactness), on the scale of the bound.
MAE_ATOL = reordered_rtol(chain_terms(18 * 10, POLICY_CHAIN // 2)) * 2 * 1.15

GRID = SMALL_GRID.replace("weight_decay: [0.0, 0.1]", "weight_decay: [0.0]").replace(
    "max_epochs: 2", "max_epochs: 1"
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, demo_dir, ray_tmpdir):
    """A finished sweep: (storage path, MLflow URI, its stdout)."""
    root = tmp_path_factory.mktemp("sweep")
    env = {**os.environ, **isolated_env(ray_tmpdir, root / "cache", ray_tmpdir)}
    env.pop("RAY_ADDRESS", None)
    (root / "space.yaml").write_text(GRID)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    run = cli(
        "tuner.run",
        "--space", str(root / "space.yaml"),
        "--data-dir", str(demo_dir),
        "--storage-path", str(root / "results"),
        "--mlflow-uri", uri,
        "--name", "small",
        "--cpus-per-trial", "1",
        env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return root / "results", uri, run.stdout


def best_of(results) -> dict:
    return json.loads((results / "small" / "best.json").read_text())


def test_experiment_opens_on_training_runs_and_the_url_is_printed(sweep):
    _, uri, stdout = sweep
    experiment = MlflowClient(uri).get_experiment_by_name("vla-tune")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    page = (
        f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs"
        "?workflowType=machine_learning"
    )
    assert f"runs page:   {page}" in stdout
    assert f"mlflow ui --backend-store-uri {uri}" in stdout


def test_without_a_confirmation_the_search_best_is_the_best(sweep):
    """The sweep without --confirm (tests/tuner/test_sweep.py's has one): its best is
    the search's, and the disk estimate counts the search's trials alone."""
    results, uri, stdout = sweep
    client, _, children = sweep_runs(uri)
    best = best_of(results)
    assert "confirmed" not in best
    assert best["value"] == pytest.approx(min(c.data.metrics["val_loss"] for c in children))
    tagged = [c for c in children if c.data.tags.get("vla_tune.best") == "true"]
    assert [c.info.run_id for c in tagged] == [best["mlflow_run_id"]]
    assert "up to 4 at once" in stdout and "2 kept after" in stdout  # 2 trials, 2 each


def direct_scores(policy, path, instruction=None) -> dict:
    """MAE and direction accuracy of one episode file, frame by frame through
    `Policy.predict` on the raw BGR frames: the evaluation's numbers, computed apart."""
    with h5py.File(path) as f:
        frames, actions = f["images"][()], f["actions"][()]
        if instruction is None:
            instruction = f["language_instruction"][0].decode()
    bound, window = policy.action_bound, policy.window_size
    commanded = np.clip(actions[:, :2], -bound, bound)
    now = np.stack(
        [
            policy.predict(frames[max(0, t - window + 1) : t + 1], instruction, color="bgr")[0]
            for t in range(len(frames))
        ]
    )
    signs = [np.where(np.abs(v) < 0.5 * bound, 0, np.sign(v)) for v in (now, commanded)]
    return {
        "mae": dict(
            zip(("linear_x", "linear_y"), np.abs(now - commanded).mean(axis=0), strict=True)
        ),
        "direction_acc": float((signs[0] == signs[1]).mean()),
    }


def test_evaluate_the_sweep_writes_plots_summary_and_mlflow_artifacts(sweep, demo_dir, tmp_path):
    from trainables.mobile_vla.inference import Policy

    results, uri, _ = sweep
    out = tmp_path / "evaluation"
    run = cli(
        "tuner.evaluate", "--name", "small", "--storage-path", str(results), "--out", str(out)
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    episodes = summary["episodes"]
    assert len(episodes) == 2  # the demo set's 2 validation episodes
    plots = sorted(e["episode"].replace(".h5", ".png") for e in episodes)
    assert sorted(p.name for p in out.glob("*.png")) == sorted([*plots, "confusion.png"])
    assert all((out / p).stat().st_size > 10_000 for p in plots)
    # Every evaluated frame lands in one cell of the confusion matrix.
    frames = summary["overall"]["frames"]
    assert frames == sum(e["frames"] for e in episodes) == 36
    assert sum(sum(row) for row in summary["confusion"]["counts"]) == frames
    assert "overall" in run.stdout and "mae_linear_x (base)" in run.stdout
    # Beside each score, the baseline of a policy blind to the frames.
    base = summary["overall"]["baseline"]
    assert set(base["mae"]) == {"linear_x", "linear_y"} and 0 < base["direction_acc"] <= 1
    assert "the most frequent direction" in run.stdout

    # The numbers: the same checkpoint, loaded the user's way, frame by frame on raw files.
    best = best_of(results)
    policy = Policy.from_checkpoint(best["checkpoint"], best["config"])
    for episode in episodes:
        direct = direct_scores(policy, demo_dir / episode["episode"])
        for name, value in direct["mae"].items():
            assert episode["mae"][name] == pytest.approx(value, abs=MAE_ATOL)
        assert episode["direction_acc"] == pytest.approx(direct["direction_acc"])

    client = MlflowClient(uri)
    parent = client.get_run(best["mlflow_run_id"]).data.tags["mlflow.parentRunId"]
    logged = {a.path for a in client.list_artifacts(parent, "evaluation")}
    assert {"evaluation/summary.json", "evaluation/confusion.png"} | {
        f"evaluation/{p}" for p in plots
    } <= logged


def test_evaluate_a_folder_of_720p_episodes_without_instructions(sweep, tmp_path):
    from trainables.mobile_vla.inference import Policy

    results, _, _ = sweep
    folder = tmp_path / "robot"
    paths = write_demo_episodes(folder, 2, height=720, width=1280, seed=7, with_instruction=False)
    out = tmp_path / "evaluation"
    args = ["--name", "small", "--storage-path", str(results), "--data-dir", str(folder)]

    refused = cli("tuner.evaluate", *args, "--out", str(out))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("error: ")
    assert "default_instruction" in refused.stderr and str(folder) in refused.stderr
    assert not out.exists()

    text = "Navigate around the box on the left side to reach the target"
    run = cli("tuner.evaluate", *args, "--out", str(out), "--set", f"default_instruction={text}")
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [e["episode"] for e in summary["episodes"]] == [p.name for p in paths]
    assert {e["instruction"] for e in summary["episodes"]} == {text}
    assert len(list(out.glob("episode_*.png"))) == 2

    best = best_of(results)
    policy = Policy.from_checkpoint(best["checkpoint"], best["config"])
    direct = direct_scores(policy, paths[0], text)  # 720x1280 BGR in, resized inside
    for name, value in direct["mae"].items():
        assert summary["episodes"][0]["mae"][name] == pytest.approx(value, abs=MAE_ATOL)


def test_merged_export_predicts_like_the_adapter(sweep, demo_dir, tmp_path):
    from peft import PeftModel

    from trainables.mobile_vla.inference import Policy

    results, _, _ = sweep
    out = tmp_path / "exported"
    args = ["--name", "small", "--storage-path", str(results), "--out", str(out)]
    run = cli("tuner.export", *args, "--merge")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "merged/: adapter" in run.stdout and " GB " in run.stdout and "head" in run.stdout
    assert {"adapter", "backbone", "merged", "policy_head.safetensors"} <= {
        p.name for p in out.iterdir()
    }

    adapter = Policy.from_export(out, form="adapter")
    merged = Policy.from_export(out)  # the merged form when there is one
    assert isinstance(adapter.model.backbone, PeftModel)
    assert not isinstance(merged.model.backbone, PeftModel)
    path = sorted(demo_dir.glob("episode_*.h5"))[0]
    with h5py.File(path) as f:
        frames, instruction = f["images"][()], f["language_instruction"][0].decode()
    for t in (0, 7, 12):
        window = frames[max(0, t - 7) : t + 1]
        a = adapter.predict(window, instruction, color="bgr")
        m = merged.predict(window, instruction, color="bgr")
        assert a.shape == (10, 2)
        np.testing.assert_allclose(m, a, atol=1e-2)  # fp16 weights

    evaluated = cli("tuner.evaluate", "--from", str(out), "--out", str(tmp_path / "ev"))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert len(json.loads((tmp_path / "ev" / "summary.json").read_text())["episodes"]) == 2


def test_bad_input_is_one_error_line(sweep, tmp_path):
    results, _, _ = sweep
    missing = cli("tuner.evaluate", "--name", "nope", "--storage-path", str(results))
    assert missing.returncode == 2
    assert missing.stderr == f"error: {results}/nope: no such sweep\n"
    outside = cli("tuner.evaluate", "--name", "../results/small", "--storage-path", str(results))
    assert outside.returncode == 2
    assert outside.stderr.startswith("error: --name '../results/small': expected one folder")

    folder = tmp_path / "episodes"
    folder.mkdir()
    (folder / "episode_20250101_000000_x.h5").write_text("not hdf5")
    bad = cli(
        "tuner.evaluate", "--name", "small", "--storage-path", str(results),
        "--data-dir", str(folder), "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr == f"error: {folder}/episode_20250101_000000_x.h5: not an HDF5 file\n"
    assert not (tmp_path / "out").exists()
