"""The machine a bench runs on: CPU model, versions, and how busy other processes are.

:func:`environment` records the CPU, the Python, numpy, numba, torch and nbbn versions
and thread counts. :class:`CpuMonitor` measures the CPU time other processes (and the
hypervisor, as steal) took during a phase, from ``/proc/stat`` (Linux; elsewhere it
reports None); :func:`wait_for_quiet` waits for a quiet machine before a measurement.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from typing import Any

__all__ = ["CpuMonitor", "cpu_line", "cpu_model", "environment", "wait_for_quiet"]


SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
              "avx512_vnni", "avx512vbmi", "asimd", "sve", "sve2")
"""The CPU flags that matter to nbbn's kernels, printed with every benchmark."""


def cpu_flags() -> list[str]:
    """The :data:`SIMD_FLAGS` this CPU has (``/proc/cpuinfo`` flags or features).

    Returns
    -------
    list of str
        In :data:`SIMD_FLAGS` order; empty where ``/proc/cpuinfo`` is missing.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in SIMD_FLAGS if flag in have]
    except OSError:
        pass
    return []


def cpu_line() -> str:
    """One line for a benchmark script's output: the CPU model, its :data:`SIMD_FLAGS`
    and the SIMD level of nbbn's kernels (numba's target: its features,
    ``NUMBA_CPU_FEATURES`` or the host's, which ``NUMBA_CPU_NAME`` alone does not
    change; ``NBBN_SIMD`` caps it)."""
    rec = cpu_record()
    return (f"cpu: {rec['model']}; flags: {' '.join(rec['flags']) or '-'}; nbbn SIMD level "
            f"{rec['simd_level']} (numba target: {rec['numba_target']}); transparent huge "
            f"pages: {rec['thp']}")


def cpu_record() -> dict[str, Any]:
    """What :func:`cpu_line` prints, for a benchmark's JSON: ``model``, ``flags`` (of
    :data:`SIMD_FLAGS`), ``simd_level`` of nbbn's kernels, ``numba_target`` and ``thp``."""
    from ..backends import cpu_simd

    return {"model": cpu_model(), "flags": cpu_flags(), "simd_level": cpu_simd.SIMD_LEVEL,
            "numba_target": numba_target(), "thp": transparent_huge_pages()}


def transparent_huge_pages() -> str:
    """Linux's transparent huge page setting (always, madvise or never; "unknown"
    elsewhere). A fresh output's first write costs a page fault per page: with
    "madvise", numpy's large arrays get 2 MB pages (numpy asks) and torch's 4 KB ones,
    which made a normalizer's new tensor outputs 2-3x slower until nbbn allocated them
    through numpy."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            text = f.read()
    except OSError:
        return "unknown"
    chosen = [w.strip("[]") for w in text.split() if w.startswith("[")]
    return chosen[0] if chosen else "unknown"


def numba_target() -> str:
    """What numba compiles for, as set: the CPU name (``NUMBA_CPU_NAME`` or "host"),
    ``NUMBA_CPU_FEATURES`` when given, and ``NUMBA_ENABLE_AVX=0`` when AVX is off
    (two runs with different features must not read the same)."""
    from numba.core import config

    name = getattr(config, "CPU_NAME", None) or "host"
    features = getattr(config, "CPU_FEATURES", None)
    parts = [name] + ([f"features {features}"] if features else [])
    if not getattr(config, "ENABLE_AVX", True):
        parts.append("NUMBA_ENABLE_AVX=0")
    return ", ".join(parts)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's processor elsewhere).

    Returns
    -------
    str
        E.g. ``"AMD EPYC 7B13"``; ``"unknown"`` when nothing says.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment(torch_mod) -> dict[str, Any]:
    """The machine and the versions a bench ran with.

    Parameters
    ----------
    torch_mod : module or None
        torch, when it is compared against.

    Returns
    -------
    dict
        ``date``, ``cpu``, ``cpu_count``, ``cpus_usable``, ``platform``, ``python``,
        ``numpy``, ``numba``, ``cpu_flags``, ``simd_level`` (of nbbn's kernels),
        ``numba_cpu_name`` (``NUMBA_CPU_NAME``), ``threads`` (nbbn's), ``torch``,
        ``torch_threads``, ``nbbn``.
    """
    import numba
    import numpy as np

    from ..backends import cpu, cpu_simd

    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    env: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "cpu_flags": cpu_flags(),
        "simd_level": cpu_simd.SIMD_LEVEL,
        "numba_cpu_name": getattr(numba.config, "CPU_NAME", None),
        "numba_target": numba_target(),
        "threads": cpu.threads(),
        "torch": None,
        "torch_threads": None,
    }
    try:
        from importlib.metadata import version

        env["nbbn"] = version("nbbn")
    except Exception:  # noqa: BLE001 - any failure means "not installed"
        env["nbbn"] = "unknown (not installed)"
    if torch_mod is not None:
        env["torch"] = torch_mod.__version__
        env["torch_threads"] = torch_mod.get_num_threads()
    return env


class CpuMonitor:
    """CPU time that other processes (and the hypervisor, as steal) took during the run.

    Reads the aggregate ``cpu`` line of /proc/stat (Linux only; elsewhere it reports None)
    and subtracts this process's own CPU time, children included. On a shared 2-core
    machine a busy neighbour makes every parallel kernel wait for its core, so the bench
    prints this next to its numbers.
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample():
        import resource

        try:
            with open("/proc/stat") as f:
                fields = f.readline().split()
        except OSError:
            return None
        if not fields or fields[0] != "cpu":
            return None
        v = [int(t) for t in fields[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        busy = sum(v[i] for i in (0, 1, 2, 5, 6) if i < len(v)) / hz  # user nice system irq softirq
        steal = (v[7] if len(v) > 7 else 0) / hz
        own = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            ru = resource.getrusage(who)
            own += ru.ru_utime + ru.ru_stime
        return time.perf_counter(), busy, steal, own

    def report(self) -> dict[str, Any] | None:
        """CPU use since the monitor was made, in cores.

        Returns
        -------
        dict or None
            ``wall_s``, ``own_cpus``, ``other_cpus``, ``steal_cpus``; None where
            ``/proc/stat`` cannot be read.
        """
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        if wall <= 0:
            return None
        other = max(0.0, (end[1] - self.start[1]) - (end[3] - self.start[3]))
        return {
            "wall_s": wall,
            "own_cpus": (end[3] - self.start[3]) / wall,
            "other_cpus": other / wall,
            "steal_cpus": (end[2] - self.start[2]) / wall,
        }


def wait_for_quiet(max_wait_s: float, threshold: float = 0.1, window_s: float = 1.0) -> float:
    """Wait until other processes use under ``threshold`` cores over ``window_s``.

    Parameters
    ----------
    max_wait_s : float
        Give up after this long.
    threshold : float, default 0.1
        Cores other processes may use.
    window_s : float, default 1.0
        The window the use is measured over.

    Returns
    -------
    float
        Seconds waited (0 when already quiet or unmeasurable).
    """
    t0 = time.perf_counter()
    while True:
        m = CpuMonitor()
        if m.start is None:
            return 0.0
        time.sleep(window_s)
        r = m.report()
        waited = time.perf_counter() - t0
        if r is None or r["other_cpus"] + r["steal_cpus"] < threshold or waited >= max_wait_s:
            return waited - window_s if waited > window_s else 0.0
