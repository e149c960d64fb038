"""Where a sweep's results live: a local folder, NFS, or s3://; our small files there; and
which trial checkpoints stay.

Checkpoints: Ray writes its snapshot of a sweep (which checkpoint each trial resumes from)
asynchronously, so a driver killed mid-sweep can leave a snapshot that names an older
checkpoint than a trial's newest; were that one deleted, `--resume` would fail with "Could
not recover from checkpoint". So while a Tuner runs each trial keeps its latest
KEEP_WHILE_RUNNING (two) checkpoints: with `num_to_keep` set, Ray forces a snapshot as soon
as a trial has saved that many since the last one, so a lagging snapshot names at most the
one before the newest, which is still there. `keep_latest_checkpoints` prunes to one once
`fit()` has returned: Ray has then written its final snapshot and waited for it, and that
names each trial's latest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs

from tuner.checks import BadInput, check_name

SWEEP_FILE = "vla_tune.json"  # the sweep's options: --resume and export read them
BEST_FILE = "best.json"  # the best trial: export and evaluate start from it
CHECKPOINT_PREFIX = "checkpoint_"  # Ray's name for a trial's checkpoint folders
KEEP_WHILE_RUNNING = 2  # checkpoints per trial while a phase runs (the module says why)


class Storage:
    """`<storage_path>/<name>`: Ray's experiment folder (the search), plus SWEEP_FILE,
    BEST_FILE, and the confirmation's plan and Ray folder (tuner.confirm)."""

    def __init__(self, storage_path: str, name: str | None):
        self.remote = "://" in storage_path
        # Ray wants an absolute path (relative ones fail inside pyarrow).
        self.root_uri = storage_path if self.remote else str(Path(storage_path).resolve())
        self.name = name or ""
        self.filesystem = None  # Ray infers it from the URI
        if self.remote:
            self._fs, self._root = pyarrow.fs.FileSystem.from_uri(storage_path)
        else:
            self._fs, self._root = pyarrow.fs.LocalFileSystem(), self.root_uri

    @property
    def experiment_uri(self) -> str:
        return f"{self.root_uri.rstrip('/')}/{self.name}"

    def _path(self, *parts: str) -> str:
        return "/".join([self._root.rstrip("/"), self.name, *parts])

    def exists(self) -> bool:
        return self._fs.get_file_info(self._path()).type != pyarrow.fs.FileType.NotFound

    def latest(self, prefix: str | None = None) -> Storage:
        """The most recent sweep (of one space: `<prefix>-<date>-<time>`; names sort by
        time). Raises LookupError when there is none."""
        selector = pyarrow.fs.FileSelector(self._root, allow_not_found=True)
        names = sorted(
            (info.mtime_ns, info.base_name)
            for info in self._fs.get_file_info(selector)
            if info.type == pyarrow.fs.FileType.Directory
            and (prefix is None or info.base_name.startswith(f"{prefix}-"))
        )
        if not names:
            what = f"of space '{prefix}' " if prefix else ""
            raise LookupError(f"{self.root_uri}: no sweep {what}found")
        return Storage(self.root_uri, names[-1][1])

    def read_json(self, file_name: str) -> dict[str, Any] | None:
        try:
            with self._fs.open_input_stream(self._path(file_name)) as f:
                return json.loads(f.read().decode())
        except (FileNotFoundError, OSError):
            return None

    def write_json(self, file_name: str, payload: Any) -> None:
        self._fs.create_dir(self._path(), recursive=True)
        with self._fs.open_output_stream(self._path(file_name)) as f:
            f.write(json.dumps(payload, indent=2, default=str).encode())

    def mlflow_artifact_root(self, mlflow_uri: str) -> Path | None:
        """Beside a local SQLite store; a tracking server decides for itself."""
        parsed = urlparse(mlflow_uri)
        if parsed.scheme == "sqlite":
            return Path(parsed.path).parent / "artifacts"
        return None


def find_best(storage_path: str, name: str | None, command: str) -> tuple[Storage, dict, Path]:
    """The sweep (`name`, else the latest), its best trial's record and checkpoint folder;
    BadInput when one is missing on this machine (`command` names what to run where)."""
    if name:
        check_name(name)  # never a path out of the storage root
    storage = Storage(storage_path, name)
    try:
        storage = storage if name else storage.latest()
    except LookupError as exc:
        raise BadInput(str(exc)) from None
    if not storage.exists():
        raise BadInput(f"{storage.experiment_uri}: no such sweep")
    best = storage.read_json(BEST_FILE)
    if best is None:
        raise BadInput(f"{storage.experiment_uri}: no {BEST_FILE} (did the sweep finish?)")
    folder = Path(best["checkpoint"]) if best.get("checkpoint") else None
    if folder is None or not folder.is_dir():
        raise BadInput(
            f"checkpoint {best.get('checkpoint')} is not a folder on this machine "
            f"({command} where the sweep's storage is mounted)"
        )
    return storage, best, folder


def keep_latest_checkpoints(results: Any) -> int:
    """Delete every checkpoint of a finished Tuner's trials but the latest (the one export,
    evaluate and a later --resume use). Returns how many were deleted."""
    deleted = 0
    for result in results:
        if result.checkpoint is None:
            continue
        keep = result.checkpoint.path.rstrip("/")
        selector = pyarrow.fs.FileSelector(result.path, allow_not_found=True)
        for info in result.filesystem.get_file_info(selector):
            if (
                info.type == pyarrow.fs.FileType.Directory
                and info.base_name.startswith(CHECKPOINT_PREFIX)
                and info.path.rstrip("/") != keep
            ):
                result.filesystem.delete_dir(info.path)
                deleted += 1
    return deleted


def checkpoint_disk(results: Any) -> tuple[int, int]:
    """(checkpoint folders, their bytes) of a Tuner's trials, as they are on storage."""
    count = size = 0
    for result in results:
        selector = pyarrow.fs.FileSelector(result.path, allow_not_found=True)
        for info in result.filesystem.get_file_info(selector):
            if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith(
                CHECKPOINT_PREFIX
            ):
                count += 1
                inside = pyarrow.fs.FileSelector(info.path, recursive=True)
                size += sum(f.size or 0 for f in result.filesystem.get_file_info(inside))
    return count, size
