"""`--dry-run --json`: the checked sweep as one JSON document, for scripts."""

from __future__ import annotations

import json
from typing import Any


def dry_run_document(prep: Any, forecast: Any = None) -> dict[str, Any]:
    """The space, the flat config of each trial (for sampled spaces: each configuration
    checked), their batch plans, the file keys ignored, the notes and the forecast (null
    on a cluster: it is measured there when the sweep starts)."""
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
        "forecast": forecast.document() if forecast is not None else None,
    }


def dry_run_json(prep: Any, forecast: Any = None) -> str:
    return json.dumps(dry_run_document(prep, forecast), indent=2, default=str)
