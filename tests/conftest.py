"""Shared fixtures. Tests build their own tiny models, SAEs and archives; nothing is downloaded."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(1)  # CI has 2 cores; one thread keeps timings and tests stable
    except ImportError:
        pass


@pytest.fixture
def store(tmp_path):
    from steering.store import StudyStore

    s = StudyStore.open(tmp_path / "run")
    yield s
    s.close()
