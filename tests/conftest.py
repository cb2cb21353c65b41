"""Shared fixtures: real MNIST from the shared folder, one evaluator cache per checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import gan  # noqa: F401  first, so its OpenMP wait policy is set before any test imports torch

REPO = Path(__file__).resolve().parent.parent
# Tests and CI read the offline copy beside the checkout unless told otherwise; the evaluator's
# real-data statistics are cached in the checkout. Both absolute: CLI tests run in folders of their own.
for _var, _default in (("GAN_STUDY_DATA", REPO.parent / "shared" / "datasets"), ("GAN_STUDY_CACHE", REPO / ".cache")):
    os.environ[_var] = str(Path(os.environ.get(_var) or _default).resolve())


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return Path(os.environ["GAN_STUDY_DATA"])


@pytest.fixture(scope="session")
def mnist_train():
    from gan.data import load_mnist

    return load_mnist(train=True)


@pytest.fixture(scope="session")
def mnist_test():
    from gan.data import load_mnist

    return load_mnist(train=False)


@pytest.fixture(scope="session")
def evaluator():
    """The evaluator, trained into the cache on first use (minutes).

    Tests that start CLI subprocesses ask for it too, so a cold cache is filled once, here,
    before their deadlines start, and not by several subprocesses at once.
    """
    from gan.evaluator import load_evaluator

    return load_evaluator()
