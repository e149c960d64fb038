"""`--dry-run --json`: the checked sweep as one JSON document, for scripts."""

from __future__ import annotations

import json
from typing import Any


def dry_run_document(prep: Any) -> dict[str, Any]:
    """The space, the flat config of each trial (for sampled spaces: each configuration
    checked), their batch plans, the file keys ignored and the notes."""
    return {
        "space": prep.space.name,
        "space_file": str(prep.space.path),
        "trainable": prep.space.trainable,
        "search": prep.space.search,
        "num_trials": prep.space.num_trials(),
        "searched": prep.searched,
        "trials": prep.candidates,
        "plans": prep.plans,
        "ignored": prep.ignored,
        "notes": prep.notes,
        "warnings": prep.warnings,
    }


def dry_run_json(prep: Any) -> str:
    return json.dumps(dry_run_document(prep), indent=2, default=str)
