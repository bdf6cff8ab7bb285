#!/usr/bin/env bash
# The GPU check: the CUDA backend against the CPU backend on a real card, the CUDA tests,
# then `nbbn bench --backend cuda`. A few minutes on an H100/H200. Logs and JSON go to
# $OUT (the device tool's result folder) or the current folder.
#
# numba-cuda 0.30.4 cannot compile with numpy 2.5 ("no attribute 'row_stack'"): put a
# numpy 2.4.x cp312 wheel in .whl/ first (see docs/benchmarks.md, "GPU"); it is
# installed into a folder of its own that goes first on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
site="$(mktemp -d)"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
fi
export PYTHONPATH="$site:$PWD" NUMBA_ENABLE_CUDASIM=0 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import numpy, numba, numba_cuda; print('numpy', numpy.__version__, 'numba', numba.__version__)"
status=0
python3 scripts/gpu_check.py 2>&1 | tee "$out/gpu_check.log" || status=1
if python3 -c "import pytest" 2>/dev/null; then
    python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/pytest_cuda.log" || status=1
fi
python3 -m nbbn bench --backend cuda --json "$out/bench-cuda.json" 2>&1 | tee "$out/bench-cuda.log" || status=1
exit $status
