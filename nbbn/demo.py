"""``nbbn demo``: stream a synthetic image dataset through RunningStats, then the
classic PyTorch ``BatchNorm2d(3)`` walk-through.

Everything printed is computed or measured in the run; nothing is hard-coded.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

DEFAULT_TOTAL_BYTES = 400_000_000
BATCH_IMAGES = 32
CHANNELS = 3

# Per-channel distributions of the synthetic dataset (float32 NCHW):
#   0: normal, ImageNet-like red channel
#   1: uniform on [0, 255), like raw pixel intensities
#   2: normal with mean = 1e4 x std, where E[x^2] - E[x]^2 in float64 would lose ~8 digits
CHANNEL_SPECS = (
    ("normal(0.485, 0.229)", "normal", 0.485, 0.229),
    ("uniform[0, 255)", "uniform", 0.0, 255.0),
    ("normal(1000, 0.1)", "normal", 1000.0, 0.1),
)

# Pass/fail thresholds printed by the demo (the accuracy contract for float32 input).
MEAN_TOL = 1e-6
VAR_TOL = 1e-6
WALK_TOL = 1e-6


def _geometry(total_bytes: int) -> tuple[int, int, list[int]]:
    """(H, W, batch sizes) for a float32 NCHW dataset of about ``total_bytes``."""
    hw = 224
    n_images = round(total_bytes / (CHANNELS * hw * hw * 4))
    if n_images < 2 * BATCH_IMAGES:  # tiny runs (tests): smaller images, still several batches
        hw = 32
        n_images = max(1, round(total_bytes / (CHANNELS * hw * hw * 4)))
    full, rest = divmod(n_images, BATCH_IMAGES)
    sizes = [BATCH_IMAGES] * full + ([rest] if rest else [])
    return hw, hw, sizes


def _make_batch(rng, n: int, h: int, w: int):
    import numpy as np

    x = np.empty((n, CHANNELS, h, w), dtype=np.float32)
    for c, (_, kind, a, b) in enumerate(CHANNEL_SPECS):
        if kind == "normal":
            v = rng.standard_normal((n, h, w), dtype=np.float32)
            v *= np.float32(b)
            v += np.float32(a)
        else:
            v = rng.random((n, h, w), dtype=np.float32)
            v *= np.float32(b - a)
            v += np.float32(a)
        x[:, c] = v
    return x


def _fmt_vec(v) -> str:
    return "  ".join(f"{float(t):+.10f}" for t in v)


def run_demo(
    total_bytes: int = DEFAULT_TOTAL_BYTES,
    *,
    seed: int = 0,
    use_torch: bool = True,
    file: TextIO | None = None,
) -> dict[str, Any]:
    """Run the demo, print it to ``file``, return the numbers; ``result["ok"]`` is the verdict."""
    import numpy as np

    import nbbn

    out = sys.stdout if file is None else file

    def say(*a: object) -> None:
        print(*a, file=out)

    h, w, sizes = _geometry(int(total_bytes))
    n_total = sum(sizes)
    total = n_total * CHANNELS * h * w * 4
    say(
        f"nbbn demo: streaming {len(sizes)} batches of up to ({BATCH_IMAGES}, {CHANNELS}, {h}, {w})"
        f" float32 NCHW ({total / 1e6:.1f} MB, {n_total} images), generated batch by batch"
        f" (seed {seed}), through nbbn.RunningStats(channel_axis=1)"
    )
    say("channels: " + ", ".join(f"{c}: {spec[0]}" for c, spec in enumerate(CHANNEL_SPECS)))

    # First call compiles the kernels (or loads them from the on-disk cache): not timed below.
    t0 = time.perf_counter()
    warm = nbbn.RunningStats(channel_axis=1)
    warm.update(np.zeros((2, CHANNELS, 4, 4), np.float32))
    warm.update(np.ones((1, CHANNELS, 4, 4), np.float32))  # the merge into an existing state
    first_call = time.perf_counter() - t0

    # Pass 1: nbbn update (timed alone) + float64 sums, counts, min, max of the reference.
    rs = nbbn.RunningStats(channel_axis=1)
    rng = np.random.default_rng(seed)
    ref_sum = np.zeros(CHANNELS)
    ref_min = np.full(CHANNELS, np.inf)
    ref_max = np.full(CHANNELS, -np.inf)
    t_update = 0.0
    for n in sizes:
        x = _make_batch(rng, n, h, w)
        for c in range(CHANNELS):
            xc = x[:, c]
            ref_sum[c] += np.sum(xc, dtype=np.float64)
            ref_min[c] = min(ref_min[c], float(xc.min()))
            ref_max[c] = max(ref_max[c], float(xc.max()))
        t0 = time.perf_counter()
        rs.update(x)
        t_update += time.perf_counter() - t0
    ref_count = n_total * h * w
    ref_mean = ref_sum / ref_count

    # Pass 2: regenerate the same batches; float64 sum of squared deviations from the mean.
    rng = np.random.default_rng(seed)
    ref_m2 = np.zeros(CHANNELS)
    for n in sizes:
        x = _make_batch(rng, n, h, w)
        for c in range(CHANNELS):
            d = x[:, c].astype(np.float64).ravel()
            d -= ref_mean[c]
            ref_m2[c] += float(np.dot(d, d))
    ref_var = ref_m2 / ref_count
    ref_std = np.sqrt(ref_var)

    count = np.asarray(rs.count)
    mean = np.asarray(rs.mean, dtype=np.float64)
    var = np.asarray(rs.var, dtype=np.float64)
    std = np.asarray(rs.std, dtype=np.float64)
    mn = np.asarray(rs.min, dtype=np.float64)
    mx = np.asarray(rs.max, dtype=np.float64)

    say("")
    say(f"{'channel':>7} {'count':>12} {'mean':>20} {'std':>20} {'min':>16} {'max':>16}")
    for c in range(CHANNELS):
        say(
            f"{c:>7d} {int(count[c]):>12d} {mean[c]:>20.12g} {std[c]:>20.12g}"
            f" {mn[c]:>16.9g} {mx[c]:>16.9g}"
        )

    err_mean = np.abs(mean - ref_mean) / np.abs(ref_mean)
    err_var = np.abs(var - ref_var) / ref_var
    counts_ok = bool(np.all(count == ref_count))
    minmax_ok = bool(np.array_equal(mn, ref_min) and np.array_equal(mx, ref_max))
    stats_ok = (
        counts_ok
        and minmax_ok
        and float(err_mean.max()) <= MEAN_TOL
        and float(err_var.max()) <= VAR_TOL
    )
    say("")
    say("float64 two-pass reference (same values, second pass over the regenerated stream):")
    say(f"  reference mean: {_fmt_vec(ref_mean)}")
    say(f"  reference std:  {_fmt_vec(ref_std)}")
    say(
        f"  max relative error: mean {float(err_mean.max()):.3e}, var {float(err_var.max()):.3e}"
        f" (per channel var: {', '.join(f'{e:.2e}' for e in err_var)});"
        f" counts {'equal' if counts_ok else 'DIFFER'},"
        f" min/max {'exact' if minmax_ok else 'DIFFER'}"
        f" -> {'OK' if stats_ok else 'FAIL'} (tolerance {VAR_TOL:g})"
    )
    gbps = total / t_update / 1e9 if t_update > 0 else math.inf
    say(
        f"throughput of the update calls alone: {total / 1e6:.1f} MB in {t_update * 1e3:.1f} ms"
        f" over {len(sizes)} calls = {gbps:.2f} GB/s"
        f" (first call, JIT compile or cache load, {first_call:.2f} s, not included)"
    )

    walk = _walkthrough(seed, use_torch, say)
    ok = stats_ok and walk["ok"]
    say("")
    say("demo " + ("OK" if ok else "FAILED: see the lines marked FAIL above"))
    return {
        "ok": ok,
        "batches": len(sizes),
        "bytes": total,
        "count": count,
        "mean": mean,
        "var": var,
        "min": mn,
        "max": mx,
        "ref_mean": ref_mean,
        "ref_var": ref_var,
        "max_rel_err_mean": float(err_mean.max()),
        "max_rel_err_var": float(err_var.max()),
        "update_seconds": t_update,
        "gbps": gbps,
        "first_call_seconds": first_call,
        "walkthrough": walk,
    }


def _walkthrough(seed: int, use_torch: bool, say) -> dict[str, Any]:
    """One training step of BatchNorm2d(3) on a (4, 3, 2, 2) batch, nbbn vs formula vs torch."""
    import numpy as np

    import nbbn

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    x64 = x.astype(np.float64)
    batch_mean = x64.mean(axis=(0, 2, 3))
    batch_var_unbiased = x64.var(axis=(0, 2, 3), ddof=1)
    batch_var_biased = x64.var(axis=(0, 2, 3))
    f_rm = 0.1 * batch_mean
    f_rv = 0.9 + 0.1 * batch_var_unbiased

    bn = nbbn.BatchNorm(3)  # momentum 0.1, eps 1e-5, affine, training mode: like torch
    y = np.asarray(bn(x))
    rm = np.asarray(bn.running_mean, dtype=np.float64)
    rv = np.asarray(bn.running_var, dtype=np.float64)
    y_ref = (x64 - batch_mean[None, :, None, None]) / np.sqrt(
        batch_var_biased[None, :, None, None] + 1e-5
    )

    torch_rm = torch_rv = torch_y = None
    torch_note = "torch not used (--no-torch)"
    if use_torch:
        try:
            import torch
        except ImportError:
            torch_note = "torch not importable"
        else:
            tbn = torch.nn.BatchNorm2d(3)
            tbn.train()
            with torch.no_grad():
                torch_y = tbn(torch.from_numpy(x)).numpy().astype(np.float64)
            assert tbn.running_mean is not None and tbn.running_var is not None
            torch_rm = tbn.running_mean.numpy().astype(np.float64)
            torch_rv = tbn.running_var.numpy().astype(np.float64)
            torch_note = f"torch {torch.__version__} BatchNorm2d(3)"

    d_rm = float(np.max(np.abs(rm - f_rm)))
    d_rv = float(np.max(np.abs(rv - f_rv)))
    d_y = float(np.max(np.abs(y.astype(np.float64) - y_ref)))
    ok = d_rm <= WALK_TOL and d_rv <= WALK_TOL and d_y <= 1e-5
    d_torch = None
    if torch_rm is not None and torch_rv is not None and torch_y is not None:
        d_torch = float(
            max(
                np.max(np.abs(rm - torch_rm)),
                np.max(np.abs(rv - torch_rv)),
                np.max(np.abs(y.astype(np.float64) - torch_y)),
            )
        )
        ok = ok and d_torch <= 1e-5

    say("")
    say(
        "PyTorch BatchNorm2d(3) walk-through: one training step of nbbn.BatchNorm(3)"
        f" (momentum=0.1, eps=1e-5) on a seeded (4, 3, 2, 2) float32 batch (seed {seed})"
    )
    say(f"  batch mean:                       {_fmt_vec(batch_mean)}")
    say(f"  batch var, unbiased (ddof=1):     {_fmt_vec(batch_var_unbiased)}")
    say(f"  running_mean  nbbn:               {_fmt_vec(rm)}")
    say(f"  running_mean  0.1 x batch mean:   {_fmt_vec(f_rm)}")
    if torch_rm is not None:
        say(f"  running_mean  torch:              {_fmt_vec(torch_rm)}")
    say(f"  running_var   nbbn:               {_fmt_vec(rv)}")
    say(f"  running_var   0.9 + 0.1 x var:    {_fmt_vec(f_rv)}")
    if torch_rv is not None:
        say(f"  running_var   torch:              {_fmt_vec(torch_rv)}")
    say(
        f"  max |nbbn - formula|: running_mean {d_rm:.2e}, running_var {d_rv:.2e},"
        f" output (batch stats, biased var) {d_y:.2e}"
    )
    if d_torch is not None:
        say(f"  max |nbbn - torch| over running_mean, running_var, output: {d_torch:.2e}")
    else:
        say(f"  ({torch_note})")
    say(f"  walk-through {'OK' if ok else 'FAIL'}")
    return {
        "ok": ok,
        "x": x,
        "batch_mean": batch_mean,
        "batch_var_unbiased": batch_var_unbiased,
        "running_mean": rm,
        "running_var": rv,
        "torch_running_mean": torch_rm,
        "torch_running_var": torch_rv,
        "max_abs_diff_formula": max(d_rm, d_rv),
        "max_abs_diff_output": d_y,
        "max_abs_diff_torch": d_torch,
    }
