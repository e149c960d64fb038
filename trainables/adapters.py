"""Loading a saved PEFT adapter into a model built from the same config, for every task.

The adapter's own config is compared key by key first: loading LoRA weights of another
rank or other targets would fail deep inside peft, or worse, load partly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file


def comparable(value: Any) -> Any:
    """peft keeps list targets as a set and writes them as a list: compare sorted."""
    return sorted(value) if isinstance(value, (set, list, tuple)) else value


def load_adapter(
    model: PeftModel,
    adapter_dir: Path,
    keys: tuple[str, ...],
    owner: str,
    error: type[Exception] = ValueError,
) -> None:
    """Check `keys` of the saved adapter config against `model`'s, then load the weights;
    raises `error` naming the directory (`owner` names the model in the message)."""
    saved = json.loads((adapter_dir / "adapter_config.json").read_text())
    current = model.peft_config["default"]
    for key in keys:
        theirs, mine = comparable(saved.get(key)), comparable(getattr(current, key))
        if theirs != mine:
            raise error(f"{adapter_dir}: adapter {key}={theirs!r}, {owner} has {mine!r}")
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    result = set_peft_model_state_dict(model, weights)
    if result.unexpected_keys:
        raise error(f"{adapter_dir}: unexpected adapter weights {result.unexpected_keys[:5]}")
