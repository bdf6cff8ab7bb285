"""Command-line interface: ``nbbn <subcommand> ...`` (also ``python -m nbbn``).

Each subcommand is one ``_add_<name>`` function that declares its arguments and one
``_cmd_<name>`` function that runs it and returns the exit status. Importing this
module stays cheap: numpy, numba and torch are imported inside the subcommands.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ._cli_errors import (
    USER_DATA_COMMANDS,
    USER_ERRORS,
    ResultsNotWritten,
    interrupted_message,
    one_line,
)
from ._interrupt import SIGTERM_STATUS, Terminated
from .errors import BackendUnavailableError, MissingExtraError

MAX_DPI = 1000  # nbbn plot --dpi: at most 16,000 x 5,600 pixels (the widest figure)

__all__ = ["build_parser", "main"]


# --------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="fit a synthetic uint8 image dataset on disk; table, plot, BatchNorm2d walk-through",
        description=(
            "Write a synthetic image-like uint8 dataset (.npy shards, a few hundred MB) to a "
            "temporary folder, fit it with nbbn.fit (progress bar, checkpoint), print the "
            "per-channel table and the largest relative error against a float64 reference "
            "computed independently, write a plot of the statistics, remove the folder, then "
            "reproduce the classic PyTorch BatchNorm2d(3) walk-through on a (4, 3, 2, 2) batch."
        ),
    )
    p.add_argument(
        "--size-mb",
        type=float,
        default=300.0,
        metavar="MB",
        help="approximate size of the synthetic dataset in MB (default: %(default)s)",
    )
    p.add_argument(
        "--layout",
        choices=["nchw", "nhwc"],
        default="nchw",
        help="layout of the shards, channel axis 1 or -1 (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument(
        "--plot",
        metavar="PNG",
        default="nbbn-demo-stats.png",
        help="where to write the plot of the statistics (default: %(default)s)",
    )
    p.add_argument("--no-plot", action="store_true", help="do not write the plot")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--workdir",
        metavar="DIR",
        default=None,
        help="folder in which the temporary dataset folder is made (default: the system's)",
    )
    p.add_argument(
        "--no-torch", action="store_true", help="do not import torch for the walk-through"
    )
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ._compile_notice import announce_compiles

    announce_compiles()
    error = None
    if not 0 < args.size_mb < float("inf"):
        error = f"--size-mb must be positive and finite, got {args.size_mb:g}"
    elif args.seed < 0:
        error = f"--seed must be >= 0, got {args.seed}"
    elif args.workdir is not None and not Path(args.workdir).is_dir():
        error = f"--workdir {args.workdir}: no such folder"
    elif args.size_mb * 1e6 > (free := _free_bytes(args.workdir)):  # (1e13: MemoryError,
        # 1e300: OverflowError; a size that does not fit filled the disk first)
        error = (f"--size-mb {args.size_mb:g} is more than the {free / 1e6:,.0f} MB free "
                 f"in {args.workdir or 'the temporary folder'} (try --workdir DIR or a "
                 "smaller --size-mb)")
    elif not args.no_plot and not Path(args.plot).resolve().parent.is_dir():
        error = f"--plot {args.plot}: the folder {Path(args.plot).parent} does not exist"
    elif not args.no_plot and Path(args.plot).suffix.lower() != ".png":
        error = f"--plot {args.plot}: expected a path ending in .png (the plot is a PNG)"
    elif not args.no_plot and Path(args.plot).is_dir():  # (found after the fit)
        error = f"--plot {args.plot} is a folder; expected the path of the PNG to write"
    if not error and not args.no_plot:  # "x.png/", a FIFO, a folder where no file can be
        from .pipeline import check_writable_folder  # created: before the data is written

        try:
            check_writable_folder(args.plot, "--plot")
        except OSError as exc:
            error = (f"--plot {args.plot}: {exc.strerror}" if exc.filename else
                     str(exc).replace("the fit", "the demo"))
    if not error:
        try:
            _check_simd_env()
        except _OptionError as exc:
            error = str(exc)
    if error:
        print(f"nbbn demo: error: {error}", file=sys.stderr)
        return 2
    from .tools.demo import run_demo

    try:
        result = run_demo(
            args.size_mb,
            seed=args.seed,
            layout=args.layout,
            plot=None if args.no_plot else args.plot,
            progress=not args.no_progress,
            workdir=args.workdir,
            use_torch=not args.no_torch,
            file=sys.stdout,
        )
    except KeyboardInterrupt:  # the fit's checkpoint went with the temporary folder:
        raise KeyboardInterrupt from None  # nothing to resume, just "interrupted"
    except BrokenPipeError:  # `nbbn demo | head`: main's handling, as for the bench
        raise
    except OSError as exc:  # e.g. no space left for the dataset in the temporary folder
        if getattr(args, "debug", False):
            raise
        print(f"nbbn demo: error: {exc} (try --workdir DIR or a smaller --size-mb)",
              file=sys.stderr)
        return 2
    return 0 if result["ok"] else 1


def _free_bytes(workdir: str | None) -> int:
    """The bytes free in the folder where the demo makes its temporary folder."""
    import shutil
    import tempfile

    try:
        return shutil.disk_usage(workdir or tempfile.gettempdir()).free
    except OSError:  # (the write will say what is wrong)
        return sys.maxsize


# -------------------------------------------------------------------------- info
def _load_stats(path: str):
    """``RunningStats.load(path)``; a missing file is a ValueError that says what was expected.

    Errors propagate to ``main``, which prints them as one line (exit status 2) or, with
    ``--debug``, with the traceback.
    """
    from .running_stats import RunningStats

    try:
        return RunningStats.load(path)
    except FileNotFoundError:
        raise ValueError(
            f"{path}: no such file (expected a statistics .npz written by `nbbn fit -o`)"
        ) from None


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="print a statistics file: per-channel table and mean=[...], std=[...] lists",
        description=(
            "Print the per-channel count, mean, std, min and max of a statistics file "
            "written by `nbbn fit -o` or RunningStats.save, its format version, and "
            "ready-to-paste mean=[...], std=[...] lists for torchvision.transforms.Normalize "
            "(also divided by 255 when the values look like 8-bit pixels)."
        ),
    )
    p.add_argument("stats", metavar="STATS", help="statistics file (.npz)")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    stats = _load_stats(args.stats)
    from ._cli_errors import respelled
    from .info import describe, file_version

    # the skip reasons' advice as `nbbn fit` printed it (--mode L, not mode='L')
    stats.skipped = respelled(stats.skipped, _subcommand(build_parser(), "fit"))
    print(describe(stats, args.stats, version=file_version(args.stats)))
    return 0


# -------------------------------------------------------------------------- plot
def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="draw a statistics file as a PNG (needs matplotlib: pip install 'nbbn[plot]')",
        description=(
            "Draw the per-channel mean with +-std error bars and min/max markers, and the "
            "std per channel, of a statistics file as a PNG (many channels: lines and a "
            "shaded band). Needs matplotlib: pip install 'nbbn[plot]'."
        ),
    )
    p.add_argument("stats", metavar="STATS", help="statistics file (.npz)")
    p.add_argument(
        "-o", "--output", metavar="PNG", default=None,
        help="the PNG to write (default: STATS with the suffix .png); statistics with a "
             "histogram also write PNG's name with the suffix .histogram.png",
    )
    p.add_argument("--title", default=None,
                   help="figure title (default: channels and counts), of the histogram "
                        "figure too")
    p.add_argument("--dpi", type=int, default=120, help="resolution (default: %(default)s)")
    p.set_defaults(func=_cmd_plot)


def _cmd_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    out = Path(args.output) if args.output else Path(args.stats).with_suffix(".png")
    if not out.parent.is_dir():
        raise ValueError(f"{out}: the folder {out.parent} does not exist")
    if out.suffix.lower() != ".png":  # the figures are written as PNG
        raise ValueError(f"-o {out}: expected a path ending in .png (the plot is a PNG)")
    from ._durable import check_file_path

    for figure in (out, out.with_suffix(".histogram.png")):  # (a device, a FIFO: refused
        check_file_path(figure)  # before the statistics are read and drawn)
    from .pipeline import check_writable_folder

    # (as root in /proc, the error named the hidden temporary file, not -o)
    check_writable_folder(out, "-o" if args.output else "the plot", "drawing")
    if not 10 <= args.dpi <= MAX_DPI:  # (the widest figure, 16 in, at 1,000 dpi: 16,000
        # pixels; --dpi 10000 asked matplotlib for 14 GB)
        raise ValueError(f"--dpi must be from 10 to {MAX_DPI}, got {args.dpi}")

    for figure in (out, out.with_suffix(".histogram.png")):  # (a stats file named .png)
        if os.path.exists(figure) and os.path.exists(args.stats) and \
                os.path.samefile(figure, args.stats):
            raise ValueError(f"{figure} is the statistics file STATS: the plot would "
                             "overwrite it; pass -o FILE.png")
    stats = _load_stats(args.stats)
    hist_out = out.with_suffix(".histogram.png")
    for figure in (out, hist_out) if stats.histogram is not None else (out,):
        if figure.is_dir():  # (before either is written: the rename failed, naming a temp)
            named = f"-o {figure}" if args.output and figure == out else str(figure)
            beside = "" if figure == out else f" (the histogram figure of {out})"
            raise ValueError(f"{named}{beside} is a folder; expected the path of the PNG "
                             "to write, such as stats.png")
    from .plot import plot_stats, undrawn_note

    plot_stats(stats, out, title=args.title, dpi=args.dpi)  # ImportError: no matplotlib
    print(f"wrote {out}")
    note = undrawn_note(stats)
    if note is not None:
        print(f"  {note}")
    if stats.histogram is not None:
        from .plot import plot_histogram

        print(f"wrote {plot_histogram(stats, hist_out, title=args.title, dpi=args.dpi)}")
    return 0


# --------------------------------------------------------------------------- fit
def _add_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="per-channel statistics of a whole dataset (.npy, .npz, folder of shards, zarr, h5)",
        description=(
            "Read SOURCE in batches along axis 0 (constant memory, a reader thread overlapping "
            "reading and computing) and print its per-channel count, mean, std, min and max. "
            "SOURCE is a .npy file (memory-mapped), a .npz file (--key names the array), a "
            "folder or glob of .npy/.npz shards, a zarr store or an HDF5 file:dataset, a "
            "table: a Parquet or CSV file (or a folder or glob of them), whose numeric "
            "columns are the channels (--columns chooses them), or image files: a folder "
            "(searched recursively), a glob or one file of JPEG, PNG, WebP, TIFF, BMP, GIF or "
            "PPM/PGM images, counted as decoded, without resizing. With "
            "--checkpoint the fit can be resumed after a crash or Ctrl-C with --resume; the "
            "result is bit for bit that of an uninterrupted fit."
        ),
    )
    p.add_argument("source", metavar="SOURCE", help="the data: path, folder or glob")
    p.add_argument("--channel-axis", type=int, default=None, metavar="AXIS",
                   help="the channel axis (not 0, the batch axis; default: 1, -1 for images)")
    p.add_argument("--batch-size", type=int, default=None, metavar="ROWS",
                   help="rows per batch (default: about 64 MB per batch)")
    p.add_argument("--nan-policy", choices=["propagate", "omit", "raise"], default="propagate",
                   help="what NaNs do (default: %(default)s)")
    p.add_argument("--checkpoint", metavar="PATH", default=None,
                   help="keep the progress in this file (atomic writes every few seconds)")
    p.add_argument("--checkpoint-interval", type=float, default=None, metavar="SECONDS",
                   help="seconds between checkpoint writes (default: 5; 0: every batch)")
    p.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint (starts over if the file does not exist)")
    p.add_argument("--key", default=None, metavar="NAME",
                   help="the array in a .npz/HDF5 file or zarr group")
    p.add_argument("--columns", default=None, metavar="A,B,...",
                   help="Parquet/CSV: the columns to read, comma-separated; quote a name that "
                        "holds a comma: '\"c,d\",e' (default: every numeric column)")
    p.add_argument("-o", "--output", metavar="STATS", default=None,
                   help="write the statistics to this .npz file (read by `nbbn info`)")
    p.add_argument("--format", choices=["table", "json"], default="table",
                   help="how to print the statistics (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    cluster = p.add_mutually_exclusive_group()
    cluster.add_argument("--scheduler", metavar="ADDRESS", default=None,
                         help="count the files on the workers of this dask.distributed "
                              "scheduler (tcp://host:8786; equal to a fit without it to 1e-12, "
                              "not bit for bit); needs nbbn[dask]")
    cluster.add_argument("--workers", type=int, default=None, metavar="N",
                         help="count the files on a local dask.distributed cluster of N "
                              "single-threaded worker processes; needs nbbn[dask]. For image "
                              "files: N decoding threads (default: the CPUs available)")
    g = p.add_argument_group("images (pip install 'nbbn[images]')")
    g.add_argument("--mode", choices=["RGB", "RGBA", "L", "LA"], default=None,
                   help="convert every image to this mode (default: keep each file's channels)")
    g.add_argument("--histogram", action="store_true",
                   help="also count every level per channel: exact percentiles, printed by this "
                        "fit and by `nbbn info`")
    g.add_argument("--size", default=None, metavar="S|HxW", type=_image_size,
                   help="resize first (shorter side S, or HxW): the statistics as a model sees "
                        "them, another quantity than the dataset's (default: no resizing)")
    g.add_argument("--on-error", choices=["raise", "skip"], default=None,
                   help="a file that cannot be decoded: stop, or skip it and list it at the "
                        "end (default: raise)")
    g.add_argument("--jpeg-decoder", choices=["auto", "simplejpeg", "pillow"], default=None,
                   help="JPEG decoder: simplejpeg when installed (auto, the default) or "
                        "Pillow; the same RGB pixels, but with --mode L Pillow converts the "
                        "decoded RGB (torchvision's gray values) where simplejpeg reads the "
                        "stored luma")
    p.set_defaults(func=_cmd_fit)


def _image_size(text: str) -> int | tuple[int, int]:
    """``--size``: ``S`` (the shorter side) or ``HxW``, positive integers."""
    parts = text.lower().split("x")
    if len(parts) in (1, 2) and all(v.strip().isdigit() and int(v) > 0 for v in parts):
        size = tuple(int(v) for v in parts)
        return size[0] if len(size) == 1 else (size[0], size[1])
    raise argparse.ArgumentTypeError(f"expected S or HxW, positive integers (224 or "
                                     f"224x320), got {text!r}")


_IMAGE_OPTIONS = (("mode", "--mode"), ("size", "--size"), ("histogram", "--histogram"),
                  ("on_error", "--on-error"), ("jpeg_decoder", "--jpeg-decoder"))


def _cmd_fit(args: argparse.Namespace) -> int:
    from ._compile_notice import announce_compiles
    from .pipeline import CHECKPOINT_INTERVAL_S, fit

    announce_compiles()
    from .report import format_json, format_table

    _check_fit_paths(args)  # checked before the fit, not after hours of it
    if args.checkpoint_interval is not None and args.checkpoint is None:
        # (as --resume without it: it was ignored, and nothing was written)
        raise ValueError("--checkpoint-interval applies with --checkpoint PATH, the file "
                         "the progress is written to; without it nothing is written")
    interval = (CHECKPOINT_INTERVAL_S if args.checkpoint_interval is None
                else args.checkpoint_interval)
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    import contextlib

    from ._images import looks_like_images
    from ._tabular import looks_like_table

    with contextlib.ExitStack() as stack:
        source, client = args.source, args.scheduler
        if looks_like_images(source) or _image_options_given(args):
            source = _image_source(args)  # --workers: decoding threads
        elif (args.workers is not None or client is not None) and looks_like_table(source):
            # (refused before a local cluster starts)
            raise ValueError(f"a fit on a cluster ({'--scheduler' if client else '--workers'})"
                             f" does not read tables yet; fit {source} without it")
        elif args.workers is not None:
            from ._distributed import local_client

            client = stack.enter_context(local_client(args.workers))
        if args.output is not None:  # -o must not overwrite a file of the source
            from .pipeline import refuse_own_input
            from .sources import open_source

            source = open_source(source, key=args.key, channel_axis=args.channel_axis,
                                 columns=args.columns)
            stack.callback(source.close)
            refuse_own_input(source, args.output, "fit")
        stats = fit(source, args.channel_axis, batch_size=args.batch_size,
                    nan_policy=args.nan_policy, progress=not args.no_progress,
                    checkpoint=args.checkpoint, resume=args.resume, key=args.key,
                    checkpoint_interval=interval, client=client,
                    columns=args.columns)
    text = format_json(stats) if args.format == "json" else format_table(stats)
    if args.format != "json" and stats.histogram is not None:  # (--histogram without -o)
        from ._histogram import describe_percentiles

        text = "\n".join([text.rstrip("\n"), *describe_percentiles(stats)])
    try:
        print(text.rstrip("\n"))  # first: shown even if the save below fails
    finally:  # (and the save made even if the print fails: a closed pipe, a full disk)
        if args.output is not None:
            stats.save(args.output)
            print(f"nbbn fit: wrote {args.output}", file=sys.stderr)
    if stats.skipped:
        from ._cli_errors import respelled

        n = len(stats.skipped)  # (the reasons' advice in this command's options)
        reasons = respelled(stats.skipped, _subcommand(build_parser(), "fit"), sys.argv[1:])
        print(f"nbbn fit: skipped {n} file{'s' * (n != 1)}:", *reasons, sep="\n  ",
              file=sys.stderr)
    return 0


def _check_fit_paths(args: argparse.Namespace) -> None:
    """``-o`` and ``--checkpoint``: a file in an existing folder, not each other, not a
    file the next fit of the same folder or glob would read as data."""
    import os
    from pathlib import Path

    from ._statsfile import check_stats_name
    from .pipeline import check_writable_folder, written_into_input

    out, ck = args.output, args.checkpoint
    if out is not None:
        if Path(out).is_dir():
            raise ValueError(f"-o {out} is a folder; expected the path of the statistics "
                             "file to write, such as stats.npz")
        if not Path(out).resolve().parent.is_dir():
            raise FileNotFoundError(f"-o {out}: the folder {Path(out).parent} does not exist")
        check_writable_folder(out, "-o")
        check_stats_name(out, "-o")
    if ck is not None:
        if not Path(ck).resolve().parent.is_dir():  # (named as -o is: not "checkpoint")
            raise FileNotFoundError(f"--checkpoint {ck}: the folder {Path(ck).parent} does "
                                    "not exist")
        check_writable_folder(ck, "--checkpoint")
    if out is not None and ck is not None and (
            os.path.realpath(out) == os.path.realpath(ck)
            or (os.path.exists(out) and os.path.exists(ck) and os.path.samefile(out, ck))):
        raise ValueError(f"-o {out} is also the --checkpoint file: the statistics would "
                         "replace the progress that --resume reads; give them two paths")
    # an existing -o in the source is one of its files: refuse_own_input says so
    for flag, path in (("-o", None if out is None or os.path.exists(out) else out),
                       ("--checkpoint", ck)):
        why = None if path is None else written_into_input(args.source, path,
                                                            checkpointed=ck is not None)
        if why is not None:
            raise ValueError(f"{flag} {path} {why}")


def _image_options_given(args: argparse.Namespace) -> bool:
    """Whether image options were given for a source that does not exist (the image
    reader then says what is missing); ValueError when they were given for a source
    that exists and is not read as images (the options would read it as images)."""
    import glob
    import os

    given = [flag for dest, flag in _IMAGE_OPTIONS if getattr(args, dest) not in (None, False)]
    if not given:
        return False
    if not os.path.exists(args.source) and not glob.glob(args.source, recursive=True):
        return True
    kind = ("it holds .npy/.npz, Parquet or CSV files at its top level; name the images "
            "with a glob such as 'DIR/**/*.jpg'" if os.path.isdir(args.source) else
            "it is not a JPEG, PNG, WebP, TIFF, BMP, GIF or PPM/PGM file (or a folder or glob "
            "of them)")
    verb = "applies" if len(given) == 1 else "apply"
    raise ValueError(f"{', '.join(given)} {verb} to image files only, but {args.source} is "
                     f"not read as images: {kind}")


def _image_source(args: argparse.Namespace):
    """The ImageSource of ``nbbn fit``'s image options (``--workers``: decoding threads)."""
    from ._images import ImageSource

    if args.scheduler is not None:
        raise ValueError("--scheduler does not apply to image files: they are decoded by "
                         "threads of this process (--workers N)")
    return ImageSource(args.source, workers=args.workers, mode=args.mode, size=args.size,
                       histogram=args.histogram, on_error=args.on_error or "raise",
                       jpeg_decoder=args.jpeg_decoder or "auto",
                       progress=not args.no_progress)


# --------------------------------------------------------------------- transform
def _add_transform(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transform",
        help="normalize a whole dataset with fitted statistics into a .npy or .zarr",
        description=(
            "Write (x - mean) / sqrt(var + eps) per channel for every row of SOURCE to OUT "
            "(.npy, written to a temporary file and renamed when complete, or .zarr), batch "
            "by batch in constant memory. SOURCE is read as by `nbbn fit` (but not images, "
            "nor CSV files: its rows must be known up front); OUT must not be SOURCE."
        ),
    )
    p.add_argument("source", metavar="SOURCE", help="the data: path, folder or glob")
    p.add_argument("--stats", required=True, metavar="STATS",
                   help="statistics file written by `nbbn fit -o`")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output .npy or .zarr")
    p.add_argument("--dtype", choices=["float16", "float32", "float64"], default=None,
                   help="output dtype (default: the input's if floating, else float32)")
    p.add_argument("--channel-axis", type=int, default=None, metavar="AXIS",
                   help="the channel axis (default: the one the statistics were fitted with)")
    p.add_argument("--eps", type=float, default=1e-5,
                   help="added to the variance (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None, metavar="ROWS",
                   help="rows per batch (default: about 64 MB per batch)")
    p.add_argument("--key", default=None, metavar="NAME",
                   help="the array in a .npz/HDF5 file or zarr group")
    p.add_argument("--columns", default=None, metavar="A,B,...",
                   help="Parquet/CSV: the columns to read, comma-separated (quote a name that "
                        "holds a comma), in the order of the statistics' channels (default: "
                        "the column names saved with the statistics)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_transform)


def _cmd_transform(args: argparse.Namespace) -> int:
    import math
    from pathlib import Path

    from ._compile_notice import announce_compiles
    from .pipeline import refuse_written_into_source, transform

    announce_compiles()
    if not (math.isfinite(args.eps) and args.eps >= 0):
        raise ValueError(f"--eps must be finite and >= 0, got {args.eps:g}")
    refuse_written_into_source(args.source, args.output)  # (before the statistics are read)
    if Path(args.output).suffix.lower() == ".npy" and Path(args.output).parent.is_dir():
        from .pipeline import check_writable_folder

        # (as root in /proc, the error named the hidden temporary file, not -o)
        check_writable_folder(args.output, "-o", "the transform")
    stats = _load_stats(args.stats)
    result = transform(
        args.source,
        stats,
        args.output,
        channel_axis=args.channel_axis,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        dtype=args.dtype,
        key=args.key,
        eps=args.eps,
        columns=args.columns,
    )
    if isinstance(result, Path):
        import numpy as np

        result = np.load(result, mmap_mode="r")
    print(f"wrote {args.output}: shape {tuple(result.shape)}, dtype {result.dtype}")
    return 0


# -------------------------------------------------------------------------- bench
def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark stats, normalizer and BatchNorm against memory bandwidth, numpy, torch",
        description=(
            "Time RunningStats.update, Normalizer(out=) and BatchNorm training forward on large "
            "arrays; report GB/s, the percentage of the read/copy bandwidth measured in the same "
            "run, speed-ups against numpy and torch, small-batch overhead and start-up times."
        ),
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny shapes and few repeats (a smoke test)"
    )
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        metavar="N",
        help="timed repeats per measurement, the median is reported (default: 7, 2 with --quick)",
    )
    p.add_argument("--no-torch", action="store_true", help="do not compare against torch")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each shape, wait up to SECONDS for other processes to go idle (default: 0)",
    )
    p.add_argument(
        "--no-startup",
        action="store_true",
        help="skip the compile-time / warm-start measurement in subprocesses",
    )
    p.add_argument("--only", default=None, metavar="DTYPE:LAYOUT,...",
                   help="only the shapes of these dtypes and layouts, e.g. uint8:NHWC "
                   "(also with --backend cuda)")
    p.add_argument(
        "--pipeline",
        action="store_true",
        help="instead: nbbn.fit on a float32 .npy and on 100 uint8 shards in the page cache "
        "vs in-memory updates, and peak memory (4 GB each; 64/32 MB with --quick)",
    )
    p.add_argument("--torch", action="store_true",
                   help="instead: nbbn on torch CPU tensors against the numpy paths (update, "
                   "Normalizer; bfloat16), and nbbn.torch.recompute_bn_stats against the "
                   "bare forward passes")
    p.add_argument("--sklearn", action="store_true",
                   help="instead: nbbn.sklearn.StandardScaler fit/transform against "
                   "scikit-learn's on (1,000,000, 64) float32")
    p.add_argument("--onnx", action="store_true",
                   help="instead: onnxruntime with nbbn's exact graph vs Sub/Div on "
                   "(1,000,000, 64) float32, and the ONNX forms' accuracy (needs nbbn[onnx])")
    p.add_argument("--pipeline-gb", type=float, default=None, metavar="GB",
                   help="size in GB of the data of --pipeline (each case; default: 4), "
                   "--tabular (1) and --dask (4), with --quick too")
    p.add_argument("--tabular", action="store_true",
                   help="instead: nbbn.fit of a Parquet file of float32 columns vs pyarrow "
                   "reading it (1 GB; 64 MB with --quick; --pipeline-gb sets the size)")
    p.add_argument("--dask", action="store_true",
                   help="instead: nbbn.dask.channel_stats of 4 GB of float32 .npy chunks on a "
                   "LocalCluster(2 x 1) vs in-memory updates and dask's mean/var (64 MB with "
                   "--quick; size: --pipeline-gb)")
    p.add_argument("--workdir", metavar="DIR", default=None,
                   help="folder for the temporary files of --pipeline, --tabular, --dask, "
                   "--distributed and --images (default: the system's temp folder)")
    p.add_argument("--distributed", action="store_true",
                   help="instead: nbbn.fit of 1 GB of .npy shards on a LocalCluster of 2 "
                   "single-threaded workers vs in one process (needs nbbn[dask])")
    p.add_argument("--images", type=int, nargs="?", const=_DEFAULT_IMAGES, default=None,
                   metavar="N",
                   help="instead: nbbn fit of N generated JPEGs (default 2000; 40 with --quick) "
                   "against decoding alone and the common float64 recipe")
    p.add_argument("--backend", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: the GPU benchmark on device arrays, timed with CUDA events, "
                   "against the device's bandwidth and torch (default: %(default)s)")
    p.set_defaults(func=_cmd_bench)


# The "instead" benches: the packages each needs (module, the extra that installs it),
# checked before anything is timed
_BENCH_NEEDS = {
    "pipeline": (), "distributed": (("distributed", "dask"),),
    "images": (("PIL", "images"),), "tabular": (("pyarrow", "tabular"),),
    "torch": (("torch", "torch"),), "dask": (("dask", "dask"), ("distributed", "dask")),
    "onnx": (("onnx", "onnx"), ("onnxruntime", "onnx")), "sklearn": (("sklearn", "sklearn"),),
}


# The benches that take --pipeline-gb (the size of their data) and --workdir (where their
# temporary files go); the others refuse them (they were ignored)
_SIZED_BENCHES = ("pipeline", "tabular", "dask")
_WORKDIR_BENCHES = ("pipeline", "tabular", "dask", "distributed", "images")


class _OptionError(ValueError):
    """Options that do not go together (a command that reads no user data reports it in
    one line, as a user error)."""


class _DefaultImages(int):
    """``--images`` without N (an int, told apart from an explicit N by identity)."""


_DEFAULT_IMAGES = _DefaultImages(2000)


def _check_bench_options(args: argparse.Namespace) -> set[tuple[str, str]] | None:
    """The ``(dtype, LAYOUT)`` pairs of ``--only`` (:func:`_only_pairs`), once checked:
    ``--repeats`` at least 1, ``--pipeline-gb`` above 0, ``--json`` a file that can
    be written (checked before the run, whose results it would otherwise lose); one
    "instead" bench at most, not with ``--backend
    cuda`` or ``--only``, and the packages it needs installed; ``--backend cuda`` only
    where the CUDA backend runs (a GPU, or numba's simulator) (_OptionError,
    MissingExtraError: one line, exit 2)."""
    import math
    from pathlib import Path

    from ._shards_zarr_h5 import import_extra

    if args.repeats is not None and args.repeats < 1:
        raise _OptionError(f"--repeats must be at least 1, got {args.repeats}")
    _check_simd_env()
    want = _only_pairs(args)
    if args.pipeline_gb is not None and not (math.isfinite(args.pipeline_gb)
                                             and args.pipeline_gb > 0):
        raise _OptionError(f"--pipeline-gb must be a size in GB above 0, got "
                           f"{args.pipeline_gb}")
    if args.json is not None:  # (checked before the run, whose results it would lose)
        folder = Path(args.json).resolve().parent
        if Path(args.json).is_dir() or not folder.is_dir():
            raise _OptionError(f"--json {args.json}: expected a file in an existing folder")
        from .pipeline import check_writable_folder

        try:
            check_writable_folder(args.json, "--json")
        except OSError as exc:  # (read-only, a device, a FIFO, "x.json/": one line, exit 2)
            line = f"--json {args.json}: {exc.strerror}" if exc.filename else str(exc)
            raise _OptionError(line.replace("the fit", "the bench")) from None
    # (--images N holds a count, --images 0 included; the others are flags)
    modes = [m for m in _BENCH_NEEDS if getattr(args, m) is not None
             and getattr(args, m) is not False]
    if len(modes) > 1:
        raise _OptionError(f"{' and '.join('--' + m for m in modes)}: each is a bench of "
                           "its own; run them one at a time")
    if args.images is not None and args.images is not _DEFAULT_IMAGES and args.images < 1:
        raise _OptionError(f"--images must be at least 1, got {args.images}")
    if args.workdir is not None and not Path(args.workdir).is_dir():
        raise _OptionError(f"--workdir {args.workdir}: no such folder")
    if not args.wait_quiet >= 0:
        raise _OptionError(f"--wait-quiet must be a number of seconds >= 0, got "
                           f"{args.wait_quiet}")
    for dest, flag, takers in (("pipeline_gb", "--pipeline-gb", _SIZED_BENCHES),
                               ("workdir", "--workdir", _WORKDIR_BENCHES)):
        if getattr(args, dest) is not None and not (modes and modes[0] in takers):
            bench = f"--{modes[0]}" if modes else (
                "--backend cuda" if args.backend == "cuda" else "the default bench")
            raise _OptionError(f"{flag} applies to {', '.join('--' + m for m in takers)} "
                               f"only, not to {bench} (it would be ignored)")
    if modes and args.backend == "cuda":
        raise _OptionError(f"--backend cuda times the CUDA kernels; --{modes[0]} is a "
                           "CPU bench of its own")
    if modes and args.only:
        raise _OptionError(f"--only picks shapes of the default bench, not of --{modes[0]}")
    for mode in modes:
        for module, extra in _BENCH_NEEDS[mode]:
            import_extra(module, extra, f"nbbn bench --{mode}")
    if args.backend == "cuda":
        import_extra("numba_cuda", "cuda", "nbbn bench --backend cuda")
        from .backends import resolve

        try:  # (no GPU: a traceback once the bench started; the simulator is a GPU here)
            resolve("cuda")
        except BackendUnavailableError as exc:
            raise _OptionError(str(exc).replace("backend='cuda'", "--backend cuda")) from None
        if want is not None:
            from numba.core import config

            from .tools.bench_cuda import SIM_SHAPES

            if getattr(config, "ENABLE_CUDASIM", 0) and not any(
                    spec[1:3] in want for spec in SIM_SHAPES):
                raise _OptionError(f"--only {args.only}: the CUDA simulator runs only "
                                   f"{_pairs_text(SIM_SHAPES)}")
    return want


def _pairs_text(shapes) -> str:
    """The ``dtype:LAYOUT`` pairs of bench shapes, as ``--only`` takes them."""
    return ", ".join(f"{d}:{lay}" for d, lay in sorted({spec[1:3] for spec in shapes}))


def _only_pairs(args: argparse.Namespace) -> set[tuple[str, str]] | None:
    """The ``(dtype, LAYOUT)`` pairs ``--only`` names (None: no ``--only``);
    _OptionError for an entry no shape of the bench has, listing those it has (an
    unknown entry was dropped silently)."""
    if args.only is None:
        return None
    from .tools.bench_ops import FULL_SHAPES, QUICK_SHAPES

    valid = {spec[1:3] for spec in FULL_SHAPES + QUICK_SHAPES}
    want = set()
    for entry in (w.strip() for w in args.only.split(",")):
        if not entry:
            continue
        dtype, _, layout = entry.partition(":")
        pair = (dtype.strip().lower(), layout.strip().upper())
        if pair not in valid:
            raise _OptionError(f"--only {args.only}: no shape is {entry}; the bench's are "
                               f"{_pairs_text(FULL_SHAPES + QUICK_SHAPES)}")
        want.add(pair)
    if not want:
        raise _OptionError(f"--only names nothing; expected DTYPE:LAYOUT pairs such as "
                           f"uint8:NHWC ({_pairs_text(FULL_SHAPES + QUICK_SHAPES)})")
    return want


def _check_simd_env() -> None:
    """_OptionError for a bad ``NBBN_SIMD``: the CPU kernels' module refuses it when it
    is imported (``nbbn warmup`` reports that in one line); the demo and the bench check
    it up front (the demo wrote its dataset first, then its fit blamed "array, rows
    0-2"; the bench was a traceback)."""
    try:
        from .backends import cpu_simd  # noqa: F401 (the check runs at the import)
    except ValueError as exc:
        raise _OptionError(str(exc)) from None


def _cmd_bench(args: argparse.Namespace) -> int:
    want = _check_bench_options(args)
    result = _other_bench(args)
    if result is not None:
        if args.json:
            from .tools.bench import _write_json

            _write_json(args.json, result)
        return 0
    if args.backend == "cuda":
        from .tools.bench_cuda import run_cuda_bench
        from .tools.bench_env import cpu_line

        print(cpu_line(), file=sys.stdout)  # the host's CPU too
        run_cuda_bench(quick=args.quick, repeats=args.repeats, json_path=args.json,
                       use_torch=not args.no_torch, file=sys.stdout, only=want)
        return 0
    from .tools.bench import run_bench

    shapes = None
    if want is not None:
        from .tools.bench_ops import FULL_SHAPES, QUICK_SHAPES

        shapes = [s for s in (QUICK_SHAPES if args.quick else FULL_SHAPES) if s[1:3] in want]
    run_bench(
        shapes,
        quick=args.quick,
        repeats=args.repeats,
        json_path=args.json,
        use_torch=not args.no_torch,
        startup=not args.no_startup,
        wait_quiet_s=args.wait_quiet,
        file=sys.stdout,
    )
    return 0


def _other_bench(args: argparse.Namespace) -> dict | None:
    """The result of the bench an "instead" option asks for (None: none asked), after a
    line with the CPU model and flags (every benchmark prints them; the JSON has them
    under ``"host"``)."""
    run = _instead_bench(args)
    if run is None:
        return None
    from .tools.bench_env import cpu_line, cpu_record

    print(cpu_line(), file=sys.stdout, flush=True)
    return {"host": cpu_record(), **run()}


def _instead_bench(args: argparse.Namespace) -> Callable[[], dict] | None:
    """The bench of the "instead" option given, to call (None: none given)."""
    out, quick, repeats, gb, workdir = (sys.stdout, args.quick, args.repeats,
                                        args.pipeline_gb, args.workdir)
    if args.images is not None:
        from .tools.bench_images import run_images_bench

        count = args.images if args.images is not _DEFAULT_IMAGES else 40 if quick else 2000
        return lambda: run_images_bench(out, quick, repeats, workdir=workdir, count=count)
    if args.tabular:
        from .tools.bench_tabular import run_tabular_bench

        return lambda: run_tabular_bench(out, quick, repeats, size_gb=gb, workdir=workdir)
    if args.torch:
        from .tools.bench_precise_bn import run_precise_bn_bench
        from .tools.bench_torch import run_torch_bench

        return lambda: {
            "tensors": run_torch_bench(out, quick, repeats),
            "precise_bn": run_precise_bn_bench(quick=quick, repeats=repeats, file=out)}
    if args.dask:
        from .tools.bench_dask import run_dask_bench

        return lambda: run_dask_bench(out, quick, repeats, gb, workdir)
    if args.onnx:
        from .tools.bench_onnx import run_onnx_bench

        return lambda: run_onnx_bench(out, quick, repeats)
    if args.pipeline:
        from .tools.bench_pipeline import run_pipeline_bench

        return lambda: run_pipeline_bench(out, quick, repeats, size_gb=gb, workdir=workdir)
    if args.distributed:
        from .tools.bench_distributed import run_distributed_bench

        return lambda: run_distributed_bench(out, quick, repeats, workdir=workdir)
    if args.sklearn:
        from .tools.bench_sklearn import run_sklearn_bench

        return lambda: run_sklearn_bench(out, quick, repeats)
    return None


# ------------------------------------------------------------------------ warmup
_WARMUP_DTYPES = ("float16", "float32", "float64", "uint8", "int8", "uint16", "int16", "int32",
                  "uint32", "int64", "uint64")


def _add_warmup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "warmup",
        help="compile the CPU kernels now (numba's disk cache), e.g. in a container image",
        description=(
            "Compile the CPU kernels for the given input dtypes and layouts and store them "
            "in numba's disk cache (NUMBA_CACHE_DIR, default __pycache__ beside nbbn), so "
            "that later processes load them instead of compiling on their first batch. "
            "Each case runs the statistics (a batch and a merge), the normalizer (also "
            "as nbbn.sklearn's transform takes it) and BatchNorm on a tiny array; "
            "nhwc uint8 and uint16 also the image histograms of 'nbbn fit --histogram' (the "
            "sparse layout: the statistics of scipy CSR and CSC matrices, weighted and "
            "not, and their scaling); a case already built takes a fraction of a second."
        ),
    )
    p.add_argument("--dtypes", default="float32,uint8", metavar="LIST",
                   help="comma-separated input dtypes, or 'all' (default: %(default)s)")
    p.add_argument("--layouts", default="nchw,nhwc", metavar="LIST",
                   help="comma-separated: nchw (channels-first), nhwc (channels-last, also "
                   "(N, C) tables), sparse (scipy CSR and CSC matrices; needs scipy) "
                   "(default: %(default)s)")
    p.set_defaults(func=_cmd_warmup)


def _cmd_warmup(args: argparse.Namespace) -> int:
    import time

    from ._compile_notice import announce_compiles
    from .tools.warmup import warmup

    dtypes = _WARMUP_DTYPES if args.dtypes == "all" else \
        tuple(d.strip() for d in args.dtypes.split(",") if d.strip())
    layouts = tuple(v.strip().lower() for v in args.layouts.split(",") if v.strip())
    for flag, given in (("--dtypes", dtypes), ("--layouts", layouts)):
        if not given:
            raise ValueError(f"{flag} names nothing; expected a comma-separated list (or "
                             "leave it out for the default)")
    announce_compiles()
    t0 = time.perf_counter()
    done = warmup(dtypes, layouts, file=sys.stdout)
    print(f"nbbn warmup: {len(done)} case{'s' * (len(done) != 1)} ready in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


# --------------------------------------------------------------------------- main
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_demo,
    _add_fit,
    _add_transform,
    _add_info,
    _add_plot,
    _add_bench,
    _add_warmup,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``nbbn`` argument parser, with one subparser per subcommand.

    Building it imports neither numpy nor numba (``nbbn --help`` stays fast).

    Returns
    -------
    argparse.ArgumentParser
        The parser; each subcommand's namespace has ``func``, the function that runs it.
    """
    parser = argparse.ArgumentParser(
        prog="nbbn",
        description="nbbn: exact streaming per-channel statistics and BatchNorm with Numba.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of errors (also after the subcommand)")
    sub = parser.add_subparsers(title="subcommands", dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    for p in sub.choices.values():  # `nbbn fit --debug ...` works as well
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    return parser


def _subcommand(parser: argparse.ArgumentParser, name: str | None
                ) -> argparse.ArgumentParser | None:
    """The subparser of the subcommand ``name`` (None when there is none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name) if name is not None else None
    return None


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parse_args``, except that arguments a subcommand does not know are reported by
    the subcommand's parser: its usage and ``nbbn fit: error: ...``, exit status 2."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        sub = _subcommand(parser, args.command)
        first = argv.index(extras[0]) if extras[0] in argv else len(argv)
        if sub is not None and args.command in argv[:first]:
            sub.error(f"unrecognized arguments: {' '.join(extras)}")
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("nbbn")
    except Exception:  # noqa: BLE001 - not installed (e.g. a source tree on PYTHONPATH)
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nbbn ARGV...``; return the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after ``nbbn`` (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 when a demo's check failed, 2 for a usage or user error (one
        line on stderr; ``--debug`` adds the traceback), 130 after Ctrl-C, 143 after
        SIGTERM while the demo or a bench that writes temporary files ran (they are
        removed first).

    Raises
    ------
    SystemExit
        From argparse: ``--help``, ``--version`` and usage errors (status 2).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    for name in ("stdout", "stderr"):  # (None when its file descriptor is closed:
        if getattr(sys, name) is None:  # `2>&-`; print(file=None) went to stdout)
            setattr(sys, name, open(os.devnull, "w"))  # (kept open for the process)
    parser = build_parser()
    args = _parse(parser, argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt as exc:
        print(interrupted_message(exc, args.command, argv), file=sys.stderr)
        return 130
    except Terminated:  # SIGTERM, while the demo or a bench removes its folders
        print(f"nbbn {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return SIGTERM_STATUS
    except BrokenPipeError:  # e.g. `nbbn bench | head`
        return 0
    except BackendUnavailableError as exc:
        # (the kernels refuse NUMBA_DISABLE_JIT when they are imported: a traceback of
        # 19 lines, exit 1; one line and exit 2 as for the other settings refused)
        if args.debug:
            raise
        print(f"nbbn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except USER_ERRORS as exc:
        # (another command's missing extra, e.g. nbbn bench --onnx: one line too)
        if args.command not in USER_DATA_COMMANDS and not isinstance(
                exc, (MissingExtraError, _OptionError, ResultsNotWritten)):
            raise
        if args.debug:
            import traceback

            traceback.print_exc()
        line = one_line(exc, _subcommand(parser, args.command), keep=argv)
        print(f"nbbn {args.command}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
