"""Shared test set-up: every cache and home-directory write goes under tmp_path."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """HF, torch, MLflow, Ray and our decode cache write under this test's tmp_path."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("VLA_TUNE_CACHE", str(cache / "vla-tune"))
    monkeypatch.setenv("HF_HOME", str(cache / "huggingface"))
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return cache
