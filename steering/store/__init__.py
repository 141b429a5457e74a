"""The study store: shared by every package, and free of torch so statistics run without it."""

from steering.store.db import DB_FILENAME, StudyStore
from steering.store.location import STORE_URL_ENV, has_study, public_url, resolve_url
from steering.store.manifest import build_manifest, read_manifest, stable_hash, write_manifest
from steering.store.schema import BASELINE_FEATURE, TABLES

__all__ = [
    "BASELINE_FEATURE", "DB_FILENAME", "STORE_URL_ENV", "TABLES", "StudyStore",
    "has_study", "public_url", "resolve_url",
    "build_manifest", "read_manifest", "stable_hash", "write_manifest",
]
