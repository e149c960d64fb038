"""MLflow: one parent run per sweep, one nested child run per trial.

Runs are found again by tags (`vla_tune.sweep_id`, `vla_tune.trial_id`), never by
in-memory state, so a resumed sweep - even after the driver was killed - continues the
same runs: no duplicate runs, and metric steps already logged are not logged again.
Ray's MLflowLoggerCallback makes flat runs; the nesting is ours.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from tuner.experiment import describe_config

SWEEP_TAG = "vla_tune.sweep_id"
TRIAL_TAG = "vla_tune.trial_id"
ROLE_TAG = "vla_tune.role"
STOP_TAG = "vla_tune.stopped"
PHASE_TAG = "vla_tune.phase"  # search | confirm
VERDICT_TAG = "vla_tune.verdict"
NODE_TAG = "vla_tune.node"  # where the trial runs now
NODES_TAG = "vla_tune.nodes"  # every node it ran on, in order (a retry may move it)
PACK_TAG = "vla_tune.pack"  # the pack it trains in now (--pack; tuner/packs.py)
PACKS_TAG = "vla_tune.packs"  # every pack it trained in, in order (a retry joins another)
# MLflow 3 opens an experiment on its GenAI overview unless it carries this tag.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# Ray's own bookkeeping in every result: not metrics of the model.
RAY_KEYS = {
    "training_iteration", "time_this_iter_s", "timestamp", "done", "trial_id", "date",
    "pid", "hostname", "node_ip", "time_since_restore", "iterations_since_restore",
    "checkpoint_dir_name", "should_checkpoint", "config", "experiment_tag", "derived",
}  # fmt: skip


class TrackingError(RuntimeError):
    """MLflow cannot be used (unreachable server, unusable store)."""


def default_uri(cwd: Path) -> str:
    return f"sqlite:///{(cwd / 'mlruns' / 'mlflow.db').resolve()}"


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail before any trial starts, not after an hour of training."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as r:
                if r.status != 200:
                    raise TrackingError(f"MLflow server {uri} answered {r.status} on /health")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(f"MLflow server {uri} is unreachable ({reason})") from None
    elif parsed.scheme == "sqlite":
        Path(parsed.path).parent.mkdir(parents=True, exist_ok=True)
    elif parsed.scheme not in ("", "file", "databricks", "postgresql", "mysql", "mssql"):
        raise TrackingError(f"MLflow URI {uri}: unknown scheme '{parsed.scheme}'")


def runs_page_url(uri: str, experiment_id: str, ui: str = "http://127.0.0.1:5000") -> str:
    """The experiment's runs page: on the tracking server itself, else on `mlflow ui`.

    `workflowType=machine_learning` switches MLflow 3.17's sidebar from its default GenAI
    mode (where the experiment opens on traces and tokens) to "Model training"."""
    base = uri.rstrip("/") if urlparse(uri).scheme in ("http", "https") else ui
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def flat_params(values: dict[str, Any], prefix: str = "") -> list[Param]:
    params = []
    for key, value in sorted(values.items()):
        if isinstance(value, dict):
            params += flat_params(value, f"{prefix}{key}.")
        else:
            params.append(Param(f"{prefix}{key}", str(value)[:6000]))
    return params


def node_tags(
    node: str, history: str, tags: tuple[str, str] = (NODE_TAG, NODES_TAG)
) -> list[RunTag]:
    """The current node (or pack), and the comma list of them so far with this one
    appended when it differs from the last (a retry may move the trial)."""
    nodes = history.split(",") if history else []
    if not nodes or nodes[-1] != node:
        nodes.append(node)
    return [RunTag(tags[0], node), RunTag(tags[1], ",".join(nodes))]


def model_metrics(result: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in result.items()
        if k not in RAY_KEYS
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
    }


class SweepTracker:
    """The parent run of a sweep and lookups of its children."""

    def __init__(self, uri: str, experiment: str, sweep_id: str, artifact_root: Path | None):
        self.client = MlflowClient(uri)
        self.uri, self.sweep_id = uri, sweep_id
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = artifact_root.resolve().as_uri() if artifact_root else None
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=location, tags=EXPERIMENT_KIND
            )
        else:
            self.experiment_id = found.experiment_id
        self.parent_id = self._find({ROLE_TAG: "parent"})

    def _find(self, tags: dict[str, str]) -> str | None:
        clauses = [f"tags.`{SWEEP_TAG}` = '{self.sweep_id}'"]
        clauses += [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=" and ".join(clauses), max_results=2
        )
        return runs[0].info.run_id if runs else None

    def trial_run_id(self, trial_id: str) -> str | None:
        """The MLflow run of a trial of this sweep, or None when it has none yet."""
        return self._find({TRIAL_TAG: trial_id})

    def start_parent(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        if self.parent_id is None:
            run = self.client.create_run(
                self.experiment_id,
                run_name=name,
                tags={SWEEP_TAG: self.sweep_id, ROLE_TAG: "parent", **tags},
            )
            self.parent_id = run.info.run_id
            self.client.log_batch(self.parent_id, params=flat_params(params))
        else:
            self.client.update_run(self.parent_id, status="RUNNING")
        return self.parent_id

    def child(self, trial_id: str, name: str, phase: str = "search") -> tuple[str, bool]:
        """(run id, existed) of the child run for this trial, created when new."""
        run_id = self.trial_run_id(trial_id)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            return run_id, True
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={
                "mlflow.parentRunId": self.parent_id,
                SWEEP_TAG: self.sweep_id,
                TRIAL_TAG: trial_id,
                ROLE_TAG: "trial",
                PHASE_TAG: phase,
            },
        )
        return run.info.run_id, False

    def last_step(self, run_id: str, metric: str) -> int:
        history = self.client.get_metric_history(run_id, metric)
        return max((m.step for m in history), default=0)

    def finish_parent(self, status: str = "FINISHED") -> None:
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status=status)

    def log_artifacts(self, run_id: str, local: Path, artifact_path: str | None = None) -> None:
        if local.is_dir():
            self.client.log_artifacts(run_id, str(local), artifact_path)
        else:
            self.client.log_artifact(run_id, str(local), artifact_path)

    def log_json(self, run_id: str, payload: Any, file_name: str) -> None:
        self.client.log_text(run_id, json.dumps(payload, indent=2, default=str), file_name)


class MLflowTrialCallback(Callback):
    """Child runs named by hyperparameters; metrics per iteration; where ASHA stopped."""

    def __init__(
        self,
        tracking: dict[str, Any],
        metric: str,
        max_t: int,
        trial_name: Any,
        searched: list[str],
        phase: str = "search",
    ):
        # `tracking` = SweepTracker's arguments: the client is made on first use, so the
        # callback pickles with the experiment and works again after --resume.
        self.tracking, self.metric, self.max_t = tracking, metric, max_t
        self.trial_name, self.searched, self.phase = trial_name, searched, phase
        self._reset()

    def _reset(self) -> None:
        self._tracker: SweepTracker | None = None
        self.runs: dict[str, str] = {}  # trial_id -> run id
        self.logged_step: dict[str, int] = {}  # trial_id -> last metric step in MLflow
        self.derived_logged: set[str] = set()
        self.nodes: dict[str, str] = {}  # trial_id -> node of its last result
        self.packs: dict[str, str] = {}  # trial_id -> pack of its last result (--pack)

    def __getstate__(self) -> dict:
        return {
            k: self.__dict__[k]
            for k in ("tracking", "metric", "max_t", "trial_name", "searched", "phase")
        }

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"phase": "search", **state})
        self._reset()

    @property
    def tracker(self) -> SweepTracker:
        if self._tracker is None:
            self._tracker = SweepTracker(**self.tracking)
        return self._tracker

    def _run_for(self, trial) -> str:
        if trial.trial_id not in self.runs:
            run_id, existed = self.tracker.child(trial.trial_id, self.trial_name(trial), self.phase)
            self.runs[trial.trial_id] = run_id
            self.logged_step[trial.trial_id] = (
                self.tracker.last_step(run_id, self.metric) if existed else 0
            )
            if not existed:
                params = flat_params(trial.config)
                params.append(Param("searched", ",".join(self.searched)))
                if self.phase == "confirm":  # the search's configuration this run repeats
                    params.append(Param("confirms", describe_config(trial.config, self.searched)))
                self.tracker.client.log_batch(run_id, params=params)
        return self.runs[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_for(trial)

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._run_for(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._run_for(trial)
        step = int(result.get("training_iteration", 0))
        tags = []
        if trial.trial_id not in self.derived_logged and isinstance(result.get("derived"), dict):
            params = flat_params(result["derived"])
            self.derived_logged.add(trial.trial_id)
        else:
            params = []
        node = str(result.get("node_ip") or result.get("hostname") or "")
        for seen, value, names in (
            (self.nodes, node, (NODE_TAG, NODES_TAG)),
            (self.packs, str(result.get("pack") or ""), (PACK_TAG, PACKS_TAG)),
        ):
            if value and seen.get(trial.trial_id) != value:
                # The history lives in MLflow, so it survives a restarted driver (--resume).
                history = self.tracker.client.get_run(run_id).data.tags.get(names[1], "")
                tags += node_tags(value, history, names)
                seen[trial.trial_id] = value
        if step <= self.logged_step[trial.trial_id]:
            metrics = []  # logged before an interruption: never twice
        else:
            now = int(time.time() * 1000)
            metrics = [Metric(k, v, now, step) for k, v in model_metrics(result).items()]
            self.logged_step[trial.trial_id] = step
        if metrics or params or tags:
            try:
                self.tracker.client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
            except MlflowException:  # a param logged before with another value: keep metrics
                self.tracker.client.log_batch(run_id, metrics=metrics, tags=tags)

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run_for(trial)
        epochs = int((trial.last_result or {}).get("training_iteration", 0))
        stopped = "completed" if epochs >= self.max_t else f"asha at epoch {epochs}"
        self.tracker.client.set_tag(run_id, STOP_TAG, stopped)
        self.tracker.client.set_terminated(run_id, status="FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self._run_for(trial)
        self.tracker.client.set_tag(run_id, STOP_TAG, "failed")
        self.tracker.client.set_terminated(run_id, status="FAILED")
