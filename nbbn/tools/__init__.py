"""The programs behind ``nbbn demo`` and ``nbbn bench``: not part of the library's API.

* :mod:`nbbn.tools.demo`: ``nbbn demo`` (a synthetic dataset fitted end to end, checked
  against an independent reference, and the ``BatchNorm2d`` walk-through).
* :mod:`nbbn.tools.bench`: ``nbbn bench`` on the CPU, built from
  :mod:`~nbbn.tools.bench_env` (machine, versions, CPU use of other processes),
  :mod:`~nbbn.tools.bench_timing` (bandwidth kernels, medians, paired ratios),
  :mod:`~nbbn.tools.bench_ops` (the timed operations and their numpy/torch peers),
  :mod:`~nbbn.tools.bench_startup` (cold and warm process start-up) and
  :mod:`~nbbn.tools.bench_table` (what is printed).
* :mod:`nbbn.tools.bench_cuda`: ``nbbn bench --backend cuda``.
* :mod:`nbbn.tools.bench_pipeline`: ``nbbn bench --pipeline``.

Each module imports numpy, numba and torch only when run, so ``nbbn --help`` stays
fast.
"""
