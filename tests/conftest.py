"""Shared fixtures: the backends under test and an rng.

Every backend-dependent test runs on "cpu" and, when numba-cuda is installed, on
"cuda": on a real GPU when the machine has an NVIDIA driver, otherwise in Numba's CUDA
simulator, switched on here before anything imports numba (``NUMBA_ENABLE_CUDASIM``
is read once, at import). Set ``NUMBA_ENABLE_CUDASIM=0`` or ``1`` to choose yourself.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import warnings
import zlib

if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))  # make ``import reference`` work from any rootdir

try:  # CI runs hypothesis with a fixed seed (NBBN_HYPOTHESIS_PROFILE=ci in .ci/run)
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True)
    _hypothesis_settings.load_profile(os.environ.get("NBBN_HYPOTHESIS_PROFILE", "default"))
except ImportError:  # pragma: no cover - hypothesis comes with the test extra
    pass

HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
BACKENDS = ["cpu", "cuda"] if HAVE_NUMBA_CUDA else ["cpu"]
if SIMULATOR:
    # The simulator runs each GPU thread as a Python thread, and its block manager polls
    # them in a loop that holds the GIL: at Python's default switch interval (5 ms) a
    # simulated thread waited up to 5 ms for the GIL at each switch. 0.1 ms made the
    # simulated tests 4.5x faster (tests/test_cuda.py and test_torch_parity.py's CUDA
    # cases, one process: 202 -> 45 s); the CPU tests with threads were not slower.
    sys.setswitchinterval(1e-4)


def _atomic_simulator_shared_arrays() -> None:
    """Make the simulator's ``cuda.shared.array`` atomic for the threads of a block.

    numba-cuda's simulator (``FakeCUDAShared.array``, 0.30) keys a block's shared
    arrays by the caller's file and line, and the first thread to ask creates the
    array: a check, then a store, with a slow stack walk between them. A thread
    preempted in between made its own array, so two threads of one block reduced into
    different arrays, and a channel's statistics came back from uninitialized memory
    (NaN outputs of one channel in ``test_batchnorm.py``, in 2 of 6 runs of seven test
    files once the switch interval above was 0.1 ms). Here the lookup and the store
    happen under one lock; dynamic shared memory (shape 0) and alignment go to the
    simulator's own method. A GPU has no such step: it is the simulator's race, not a
    kernel's.
    """
    import threading

    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    simulator_array = kernelapi.FakeCUDAShared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:
            return simulator_array(self, shape, dtype, alignment)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)  # (the simulator's key)
        if isinstance(dtype, types.Type):  # (numba.float64 and the like, as the simulator)
            dtype = numpy_support.as_dtype(dtype)
        with lock:
            made = self._allocations.get(key)
            if made is None:
                made = self._allocations[key] = np.empty(shape, dtype)
        return made

    kernelapi.FakeCUDAShared.array = array


if SIMULATOR and HAVE_NUMBA_CUDA:
    _atomic_simulator_shared_arrays()


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


@pytest.fixture(scope="module")
def cuda():
    """``numba.cuda`` (on a GPU, or the simulator); skips when neither is usable."""
    from numba import cuda as nb_cuda

    if not nb_cuda.is_available():
        pytest.skip("no CUDA GPU and the simulator is off")
    return nb_cuda


@pytest.fixture
def rng(request):
    """A generator seeded from the test id, so that each test is reproducible on its own."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


SIM_MAX_ELEMENTS = 20_000  # larger arrays take minutes in the CUDA simulator


def skip_large_for_simulator(backend: str, size: int) -> None:
    """Skip a test whose input is too large for the CUDA simulator (one Python thread per
    GPU thread); the CUDA kernels' block and partition logic is exercised on small
    shapes with a patched launch configuration in ``test_cuda.py``."""
    if backend == "cuda" and SIMULATOR and size > SIM_MAX_ELEMENTS:
        pytest.skip(f"{size} elements are too many for the CUDA simulator")


@pytest.fixture(autouse=True)
def _sigint_not_ignored():
    """The Ctrl-C tests send SIGINT to this process. A shell that starts the suite as a
    background job without job control (``cmd &`` in a script) leaves SIGINT ignored,
    which nbbn respects (it installs no handler then), so those tests would see no
    interrupt: each test runs with Python's default handler instead."""
    old = signal.getsignal(signal.SIGINT)
    if old is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)

