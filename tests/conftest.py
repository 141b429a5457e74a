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


@pytest.fixture(scope="session")
def pg_server():
    """One real PostgreSQL server for the whole session, started on first use (tests marked
    `postgres`), stopped at the end; skipped with the reason where PostgreSQL is not installed."""
    from tests.helpers_postgres import start_or_skip

    srv = start_or_skip()
    yield srv
    srv.stop()


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty database on the session's server: its SQLAlchemy URL."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture
def store(tmp_path):
    from steering.store import StudyStore

    s = StudyStore.open(tmp_path / "run")
    yield s
    s.close()
