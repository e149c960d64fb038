"""Cache files are replaced whole: a failed write leaves the old file and no litter."""

from __future__ import annotations

import pytest

from trainables.cache import write_atomic


def test_write_atomic_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "entry.bin"
    write_atomic(path, lambda f: f.write(b"old"))
    assert path.read_bytes() == b"old"

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["entry.bin"]
