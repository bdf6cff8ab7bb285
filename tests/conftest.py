"""Shared fixtures: the backend list (CUDA joins by adding "cuda" to BACKENDS) and an rng."""

from __future__ import annotations

import os
import sys
import warnings
import zlib

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # make ``import reference`` work from any rootdir

BACKENDS = ["cpu"]


def cuda_available() -> bool:
    """True when numba-cuda is importable and sees a GPU (never raises, never warns)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from numba import cuda  # noqa: PLC0415

            return bool(cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture(params=BACKENDS, scope="session")
def backend(request):
    """The compute backend under test; every backend-dependent test takes this fixture."""
    return request.param


@pytest.fixture
def rng(request):
    """A generator seeded from the test id, so that each test is reproducible on its own."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
