"""Where a sweep's results live: a local folder, NFS, or s3://; and our small files there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs


class Storage:
    """`<storage_path>/<name>`: Ray's experiment folder, plus vla_tune.json and best.json."""

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
