"""Ray for tests: imported, or the test skipped with the reason — unless RADSTEER_REQUIRE_RAY=1
(scripts/test.sh sets it: CI must run the Ray tests, never skip them)."""

from __future__ import annotations

import os

import pytest


def ray_or_skip():
    try:
        import ray
    except ImportError:
        if os.environ.get("RADSTEER_REQUIRE_RAY") == "1":
            pytest.fail("ray is not installed (pip install 'radsteer[distributed]')", pytrace=False)
        pytest.skip("ray is not installed (pip install 'radsteer[distributed]')")
    return ray


def start_local_ray(**resources):
    """A local Ray of this test process (2 CPUs unless told), no dashboard; the caller shuts it down."""
    ray = ray_or_skip()
    resources.setdefault("num_cpus", 2)
    ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False, **resources)
    return ray
