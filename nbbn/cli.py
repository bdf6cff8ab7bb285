"""Command-line interface: ``nbbn <subcommand> ...`` (also ``python -m nbbn``).

Each subcommand is one ``_add_<name>`` function that declares its arguments and one
``_cmd_<name>`` function that runs it and returns the exit status. Importing this
module stays cheap: numpy, numba and torch are imported inside the subcommands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["main", "build_parser"]


# --------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="stream a synthetic NCHW dataset through RunningStats; BatchNorm2d walk-through",
        description=(
            "Stream a synthetic float32 NCHW image dataset, generated batch by batch, through "
            "nbbn.RunningStats; print the per-channel statistics, the largest relative error "
            "against a float64 two-pass reference and the throughput of the update calls. Then "
            "reproduce the classic PyTorch BatchNorm2d(3) walk-through on a (4, 3, 2, 2) batch."
        ),
    )
    p.add_argument(
        "--size-mb",
        type=float,
        default=400.0,
        metavar="MB",
        help="approximate size of the synthetic dataset in MB (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument(
        "--no-torch", action="store_true", help="do not import torch for the walk-through"
    )
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    if not args.size_mb > 0:
        print("nbbn demo: --size-mb must be positive", file=sys.stderr)
        return 2
    from .demo import run_demo

    result = run_demo(
        total_bytes=int(args.size_mb * 1e6),
        seed=args.seed,
        use_torch=not args.no_torch,
        file=sys.stdout,
    )
    return 0 if result["ok"] else 1


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
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.repeats is not None and args.repeats < 1:
        print("nbbn bench: --repeats must be at least 1", file=sys.stderr)
        return 2
    from .bench import run_bench

    run_bench(
        quick=args.quick,
        repeats=args.repeats,
        json_path=args.json,
        use_torch=not args.no_torch,
        startup=not args.no_startup,
        wait_quiet_s=args.wait_quiet,
        file=sys.stdout,
    )
    return 0


# --------------------------------------------------------------------------- main
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_demo, _add_bench]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbbn",
        description="nbbn: exact streaming per-channel statistics and BatchNorm with Numba.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(title="subcommands", dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("nbbn")
    except Exception:  # not installed (e.g. run from a source tree via PYTHONPATH)
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `nbbn bench | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
