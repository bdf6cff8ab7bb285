#!/usr/bin/env bash
# The GPU check: the CUDA backend against the CPU backend on a real card, the CUDA tests,
# then `nbbn bench --backend cuda`. Logs and JSON go to $OUT (the device tool's result
# folder) or the current folder; each phase prints its wall time.
#
#   bash scripts/gpu_check.sh              # all three phases
#   bash scripts/gpu_check.sh bench        # one phase (check | tests | bench), for a
#                                          # device call that must stay short
#
# numba-cuda 0.30.4 cannot compile with numpy 2.5 ("no attribute 'row_stack'"): put a
# numpy 2.4.x cp312 wheel in .whl/ first (see docs/benchmarks.md, "GPU"); it is
# installed into a folder of its own that goes first on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
phases="${*:-check tests bench}"
site="$(mktemp -d)"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
fi
export PYTHONPATH="$site:$PWD" NUMBA_ENABLE_CUDASIM=0 PYTHONUNBUFFERED=1
export NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0  # the tests turn warnings into errors; small grids are their point
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import numpy, numba, numba_cuda; print('numpy', numpy.__version__, 'numba', numba.__version__)"
status=0
phase() {  # name, log file, command...
    local name="$1" log="$2" t0=$SECONDS
    shift 2
    "$@" 2>&1 | tee "$out/$log" || status=1
    echo "== $name: $((SECONDS - t0)) s" | tee -a "$out/phases.txt"
}
for p in $phases; do
    case "$p" in
        check) phase check gpu_check.log python3 scripts/gpu_check.py ;;
        tests)
            if python3 -c "import pytest" 2>/dev/null; then
                xd=""; python3 -c "import xdist" 2>/dev/null && xd="-n 4 -p no:benchmark"  # compiles in parallel
                phase tests pytest_cuda.log python3 -m pytest -q -p no:cacheprovider $xd tests/test_cuda.py tests/test_mean_rounding.py
            fi ;;
        bench) phase bench bench-cuda.log python3 -m nbbn bench --backend cuda --json "$out/bench-cuda.json" ;;
        *) echo "unknown phase $p (check, tests, bench)"; exit 2 ;;
    esac
done
exit $status
