"""``nbbn demo``: fit a synthetic uint8 image dataset on disk with ``nbbn.fit``, then the
classic PyTorch ``BatchNorm2d(3)`` walk-through.

The demo writes a few hundred MB of image-like uint8 shards (``.npy``, NCHW or NHWC) to
a temporary folder, fits them with the progress bar and a checkpoint, prints the
per-channel table, checks it against a float64 reference computed independently (from
per-channel histograms counted while the shards were written), writes a plot and removes
the folder. Everything printed is computed or measured in the run; nothing is hard-coded.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from .._interrupt import sigterm_unwinds

DEFAULT_SIZE_MB = 300.0
DEFAULT_PLOT = "nbbn-demo-stats.png"
CHANNELS = 3
SHARD_IMAGES = 64
LAYOUTS = {"nchw": 1, "nhwc": -1}  # layout -> channel_axis

# Per-channel pixel distributions: normal(mean, std) around an ImageNet-like colour,
# plus a per-image brightness offset, rounded and clipped to [0, 255].
CHANNEL_SPECS = (("R", 124.0, 58.0), ("G", 116.0, 57.0), ("B", 104.0, 57.0))
BRIGHTNESS_STD = 20.0

# Pass/fail thresholds (the accuracy contract for integer input: float64 state).
MEAN_TOL = 1e-12
VAR_TOL = 1e-12
WALK_TOL = 1e-6


def geometry(total_bytes: int) -> tuple[int, list[int]]:
    """(image side, images per shard) for a uint8 3-channel dataset of about ``total_bytes``.

    224 x 224 images by default; tiny sizes (tests) use 32 x 32 images so that the
    dataset still spans several shards, the last one shorter than the others.

    Parameters
    ----------
    total_bytes : int
        About how much data the dataset holds.

    Returns
    -------
    tuple of (int, list of int)
        The image side in pixels and the number of images of each shard.
    """
    side = 224
    n_images = round(total_bytes / (CHANNELS * side * side))
    if n_images < 4 * SHARD_IMAGES:
        side = 32
        n_images = max(1, round(total_bytes / (CHANNELS * side * side)))
    full, rest = divmod(n_images, SHARD_IMAGES)
    return side, [SHARD_IMAGES] * full + ([rest] if rest else [])


def make_shard(rng, n: int, side: int, layout: str):
    """One shard of ``n`` synthetic uint8 images in ``layout`` ("nchw" or "nhwc").

    Parameters
    ----------
    rng : numpy.random.Generator
        The data's generator.
    n, side : int
        Images and their side in pixels.
    layout : {"nchw", "nhwc"}
        Channels first or last.

    Returns
    -------
    numpy.ndarray
        uint8 images, ``(n, 3, side, side)`` or ``(n, side, side, 3)``.
    """
    import numpy as np

    shape = (n, CHANNELS, side, side) if layout == "nchw" else (n, side, side, CHANNELS)
    x = np.empty(shape, dtype=np.uint8)
    brightness = rng.standard_normal(n, dtype=np.float32) * np.float32(BRIGHTNESS_STD)
    for c, (_, mean, std) in enumerate(CHANNEL_SPECS):
        v = rng.standard_normal((n, side, side), dtype=np.float32)
        v *= np.float32(std)
        v += np.float32(mean) + brightness[:, None, None]
        np.clip(v, 0, 255, out=v)
        np.rint(v, out=v)
        if layout == "nchw":
            x[:, c] = v
        else:
            x[..., c] = v
    return x


def write_dataset(folder: Path, total_bytes: int, seed: int, layout: str):
    """Write the dataset's ``.npy`` shards into ``folder``.

    Parameters
    ----------
    folder : pathlib.Path
        An existing, empty folder.
    total_bytes : int
        About how much data to write.
    seed : int
        The data's seed.
    layout : {"nchw", "nhwc"}
        Channels first or last.

    Returns
    -------
    tuple
        (shard paths, per-channel histograms of shape (C, 256), bytes written).
    """
    import numpy as np

    side, sizes = geometry(total_bytes)
    rng = np.random.default_rng(seed)
    hist = np.zeros((CHANNELS, 256), dtype=np.int64)
    paths = []
    nbytes = 0
    for i, n in enumerate(sizes):
        x = make_shard(rng, n, side, layout)
        for c in range(CHANNELS):
            xc = x[:, c] if layout == "nchw" else x[..., c]
            hist[c] += np.bincount(xc.ravel(), minlength=256)
        path = folder / f"shard-{i:05d}.npy"
        np.save(path, x)
        paths.append(path)
        nbytes += x.nbytes
    return paths, hist, nbytes


def reference_from_histograms(hist) -> dict[str, Any]:
    """Exact count, min and max and float64 mean and variance from per-channel histograms.

    Parameters
    ----------
    hist : numpy.ndarray
        Counts of shape (C, 256): how often each uint8 value occurs per channel.

    Returns
    -------
    dict
        ``count``, ``mean``, ``var``, ``min``, ``max``: arrays of C values.
    """
    import numpy as np

    values = np.arange(hist.shape[1], dtype=np.float64)
    count = hist.sum(axis=1)
    total = (hist * np.arange(hist.shape[1], dtype=np.int64)).sum(axis=1)  # exact integers
    mean = total / count
    var = np.array([(h * (values - m) ** 2).sum() for h, m in zip(hist, mean, strict=True)]) / count
    seen = hist > 0
    return {
        "count": count,
        "mean": mean,
        "var": var,
        "min": np.array([float(np.flatnonzero(s)[0]) for s in seen]),
        "max": np.array([float(np.flatnonzero(s)[-1]) for s in seen]),
    }


def _fmt_vec(v) -> str:
    return "  ".join(f"{float(t):+.10f}" for t in v)


@sigterm_unwinds()
def run_demo(
    size_mb: float = DEFAULT_SIZE_MB,
    *,
    seed: int = 0,
    layout: str = "nchw",
    plot: str | Path | None = DEFAULT_PLOT,
    progress: bool = True,
    workdir: str | Path | None = None,
    use_torch: bool = True,
    file: TextIO | None = None,
) -> dict[str, Any]:
    """Run the demo, print it to ``file``, return the numbers; ``result["ok"]`` is the verdict.

    Parameters
    ----------
    size_mb : float
        Approximate size of the synthetic dataset in MB (1e6 bytes).
    seed : int
        Seed of the data and of the walk-through's batch.
    layout : {"nchw", "nhwc"}
        Layout of the shards (channel axis 1 or -1).
    plot : str or Path or None
        Where to write the PNG of the statistics; None: no plot.
    progress : bool
        Show ``nbbn.fit``'s progress bar.
    workdir : str or Path, optional
        Folder in which the temporary dataset folder is made (default: the system's).
    use_torch : bool
        Compare the walk-through with ``torch.nn.BatchNorm2d`` when torch is installed.
    file : text stream, optional
        Where to print (default: ``sys.stdout``).

    Returns
    -------
    dict
        The measured numbers (statistics, errors against the reference, throughput,
        the walk-through's results) and ``ok``, True when every check passed.
    """
    import numpy as np

    import nbbn

    from ..report import format_table

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    out = sys.stdout if file is None else file

    def say(*a: object) -> None:
        print(*a, file=out, flush=True)

    channel_axis = LAYOUTS[layout]
    side, sizes = geometry(int(size_mb * 1e6))
    dims = (CHANNELS, side, side) if layout == "nchw" else (side, side, CHANNELS)
    shape = "(n, " + ", ".join(map(str, dims)) + ")"
    tmp = Path(tempfile.mkdtemp(prefix="nbbn-demo-", dir=workdir))
    try:
        data = tmp / "shards"
        data.mkdir()
        say(
            f"nbbn demo: writing {len(sizes)} shards of up to {SHARD_IMAGES} synthetic uint8"
            f" images {shape} ({layout.upper()}, seed {seed}) to {data}"
        )
        say(
            "channels " + ", ".join(name for name, _, _ in CHANNEL_SPECS) + ": "
            + ", ".join(f"normal({m:g}, {s:g})" for _, m, s in CHANNEL_SPECS)
            + f", plus a per-image brightness normal(0, {BRIGHTNESS_STD:g}),"
            " rounded and clipped to [0, 255]"
        )
        t0 = time.perf_counter()
        _, hist, nbytes = write_dataset(data, int(size_mb * 1e6), seed, layout)
        t_write = time.perf_counter() - t0
        say(f"  wrote {nbytes / 1e6:.1f} MB in {t_write:.1f} s")

        # The first calls compile the kernels (or load them from the disk cache), not timed
        # below: a small (serial) and a large (parallel) fit of two batches each, and one of
        # the dataset's own images (short channels-first rows, 32 x 32, have a kernel of
        # their own from 65,536 values on), on read-only arrays like the memory maps of the
        # shards (a type of their own to numba).
        t0 = time.perf_counter()
        for n, hw in ((4, 4), (4, 256), (max(4, 2 * -(-65536 // (CHANNELS * side * side))), side)):
            dims = (CHANNELS, hw, hw) if layout == "nchw" else (hw, hw, CHANNELS)
            warm = np.zeros((n, *dims), np.uint8)
            warm.setflags(write=False)
            nbbn.fit(warm, channel_axis, batch_size=n // 2, progress=False)
        t_first = time.perf_counter() - t0

        checkpoint = tmp / "fit.ckpt"
        say("")
        say(
            f"nbbn.fit({str(data)!r}, channel_axis={channel_axis}, checkpoint={str(checkpoint)!r})"
        )
        t0 = time.perf_counter()
        stats = nbbn.fit(str(data), channel_axis=channel_axis, progress=progress,
                         checkpoint=str(checkpoint))
        t_fit = time.perf_counter() - t0
        gbps = nbytes / t_fit / 1e9 if t_fit > 0 else math.inf
        say(
            f"  fitted {nbytes / 1e6:.1f} MB in {t_fit:.2f} s = {gbps:.2f} GB/s (the files"
            " were just written, so they are read from the page cache; the first call,"
            f" JIT compile or cache load, {t_first:.2f} s, not included)"
        )
        if checkpoint.exists():
            say(f"  checkpoint {checkpoint.name}: {checkpoint.stat().st_size:,} bytes, written"
                " during the fit and at its end; after a crash, `nbbn fit ... --checkpoint"
                " PATH --resume` continues from such a file")
        say("")
        say(format_table(stats).rstrip("\n"))

        ref = reference_from_histograms(hist)
        count = np.asarray(stats.count)
        mean = np.asarray(stats.mean, dtype=np.float64)
        var = np.asarray(stats.var, dtype=np.float64)
        mn = np.asarray(stats.min, dtype=np.float64)
        mx = np.asarray(stats.max, dtype=np.float64)
        err_mean = np.abs(mean - ref["mean"]) / np.abs(ref["mean"])
        err_var = np.abs(var - ref["var"]) / ref["var"]
        counts_ok = bool(np.array_equal(count, ref["count"]))
        minmax_ok = bool(np.array_equal(mn, ref["min"]) and np.array_equal(mx, ref["max"]))
        stats_ok = (
            counts_ok
            and minmax_ok
            and float(err_mean.max()) <= MEAN_TOL
            and float(err_var.max()) <= VAR_TOL
        )
        say("")
        say("float64 reference from per-channel histograms counted while writing the shards:")
        say(f"  reference mean: {_fmt_vec(ref['mean'])}")
        say(f"  reference std:  {_fmt_vec(np.sqrt(ref['var']))}")
        say(
            f"  max relative error: mean {float(err_mean.max()):.3e},"
            f" var {float(err_var.max()):.3e};"
            f" counts {'equal' if counts_ok else 'DIFFER'},"
            f" min/max {'exact' if minmax_ok else 'DIFFER'}"
            f" -> {'OK' if stats_ok else 'FAIL'} (tolerance {VAR_TOL:g})"
        )
        from ..info import normalize_lists

        say("torchvision.transforms.Normalize for these images after ToTensor() (/ 255):")
        say("  " + normalize_lists(stats, divide_by=255.0))

        plot_path = None
        if plot is not None:
            from ..plot import PlotUnavailableError, plot_stats

            try:
                title = f"nbbn demo: {len(sizes)} uint8 shards, {nbytes / 1e6:.0f} MB"
                names = [name for name, _, _ in CHANNEL_SPECS]
                plot_path = plot_stats(stats, plot, title=title, channel_names=names)
                say(f"plot: wrote {plot_path}")
            except PlotUnavailableError as exc:
                say(f"plot skipped: {exc}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"removed {tmp}")

    walk = _walkthrough(seed, use_torch, say)
    ok = stats_ok and walk["ok"]
    say("")
    say("demo " + ("OK" if ok else "FAILED: see the lines marked FAIL above"))
    return {
        "ok": ok,
        "shards": len(sizes),
        "bytes": nbytes,
        "layout": layout,
        "count": count,
        "mean": mean,
        "var": var,
        "min": mn,
        "max": mx,
        "ref": ref,
        "max_rel_err_mean": float(err_mean.max()),
        "max_rel_err_var": float(err_var.max()),
        "fit_seconds": t_fit,
        "first_call_seconds": t_first,
        "gbps": gbps,
        "plot": plot_path,
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
