"""Shared fixtures: tiny models written by the tests themselves (no hub, no downloads)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist each of the two workers takes one core; alone, the run takes both.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the session's Ray cluster run on one xdist worker (one cluster per test session)."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from selfimprove.policy.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "small", preset="small", seed=0)


@pytest.fixture()
def small_policy(small_model_dir: Path):
    from selfimprove.policy.hf import HFPolicy

    return HFPolicy.load(small_model_dir, seed=0)


def with_tests_on_path() -> None:
    """Put tests/ on PYTHONPATH (processes started from here, Ray's workers included, import helpers)
    and mark this process as the test driver (helpers' tasks misbehave only elsewhere)."""
    tests = str(Path(__file__).resolve().parent)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if tests not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([tests, *paths])
    os.environ["SELFIMPROVE_TEST_DRIVER"] = str(os.getpid())


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster per test session (2 CPUs, a small object store, auth off: nothing under the
    home folder); tests that use it start their pools on it and close them."""
    ray = pytest.importorskip("ray")
    from selfimprove.policy.ray_cluster import ensure_ray

    with_tests_on_path()  # the workers import tests/helpers.py (tasks that misbehave on a worker)
    ensure_ray(None, 2)
    yield
    ray.shutdown()
