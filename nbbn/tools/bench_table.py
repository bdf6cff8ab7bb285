"""What ``nbbn bench`` prints: the header, one line per shape, the legend, the table,
the small-batch and start-up lines and the machine's load."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["fmt", "print_header", "print_legend", "print_load", "print_small",
           "print_startup", "print_table", "shape_line", "shape_str"]

Say = Callable[..., None]


def fmt(v, spec: str, none: str = "-") -> str:
    """``format(v, spec)``, or ``none`` for None.

    Parameters
    ----------
    v : object
        The value.
    spec : str
        A format spec.
    none : str, default "-"
        The text for None.

    Returns
    -------
    str
        The formatted value.
    """
    return none if v is None else format(v, spec)


def shape_str(shape: Sequence[int]) -> str:
    """A shape as ``64x256x56x56``.

    Parameters
    ----------
    shape : sequence of int
        The shape.

    Returns
    -------
    str
        Its sizes joined by ``x``.
    """
    return "x".join(str(s) for s in shape)


def print_table(rows: list[dict[str, Any]], say: Say) -> None:
    """The results table, one line per op and shape, then the notes.

    Parameters
    ----------
    rows : list of dict
        The rows of :func:`~nbbn.tools.bench_ops.bench_shape`.
    say : callable
        Prints one line (``print`` to the bench's output).
    """
    head = (
        f"{'op':<16} {'shape':<16} {'dtype':<7} {'layout':<6} {'time ms':>9} {'GB/s':>7}"
        f" {'% bw':>6} {'% pair':>6} {'numpy ms':>9} {'vs numpy':>8}"
        f" {'torch ms':>9} {'vs torch':>8}"
        f" {'busy':>5}"
    )
    say(head)
    say("-" * len(head))
    for r in rows:
        say(
            f"{r['op']:<16} {shape_str(r['shape']):<16} {r['dtype']:<7} {r['layout']:<6}"
            f" {fmt(r['time_ms'], '9.3f'):>9} {fmt(r['gbps'], '7.2f'):>7}"
            f" {fmt(r['pct_bw'], '5.0f') + '%' if r['pct_bw'] is not None else '-':>6}"
            f" {fmt(r.get('pct_bw_paired'), '5.0f') + '%' if r.get('pct_bw_paired') else '-':>6}"
            f" {fmt(r['numpy_ms'], '9.2f'):>9}"
            f" {fmt(r['speedup_numpy'], '7.1f') + 'x' if r['speedup_numpy'] else '-':>8}"
            f" {fmt(r['torch_ms'], '9.2f'):>9}"
            f" {fmt(r['speedup_torch'], '7.1f') + 'x' if r['speedup_torch'] else '-':>8}"
            f" {fmt(r.get('other_cpus'), '5.2f'):>5}"
        )
    for op, call in (("normalizer", "norm(x)"), ("batchnorm_train", "bn(x)")):
        alloc = [r for r in rows if r["op"] == op and r.get("time_alloc_ms") is not None]
        if alloc:  # (the time vs torch is taken against: torch allocates too)
            say(f"  {op} without out= ({call} allocates its output each call; vs torch uses"
                " it): " + "; ".join(f"{shape_str(r['shape'])} {r['dtype']} {r['layout']} "
                                    f"{r['time_alloc_ms']:.2f} ms" for r in alloc))
    notes = sorted({r["note"] for r in rows if r["note"]})
    for n in notes:
        say(f"  note: {n}")


def print_header(say: Say, env: dict[str, Any], repeats: int, quick: bool) -> None:
    """The machine, the versions and how times are taken.

    Parameters
    ----------
    say : callable
        Prints one line (``print`` to the bench's output).
    env : dict
        :func:`~nbbn.tools.bench_env.environment`.
    repeats : int
        Timed calls per measurement.
    quick : bool
        Whether the run is a smoke test.
    """
    say(f"nbbn bench  {env['date']}")
    say(f"cpu: {env['cpu']}  ({env['cpu_count']} logical cpus, {env['cpus_usable']} usable;"
        f" nbbn threads {env['threads']}"
        + (f", torch threads {env['torch_threads']})" if env["torch"] is not None else ")"))
    target = env.get("numba_target") or env["numba_cpu_name"] or "host"
    say(f"cpu flags: {' '.join(env['cpu_flags']) or '-'}; nbbn SIMD level {env['simd_level']}"
        f" (numba target: {target})")
    say(f"python {env['python']}  numpy {env['numpy']}  numba {env['numba']}"
        f"  torch {env['torch'] or 'not used'}  nbbn {env['nbbn']}  ({env['platform']})")
    say(f"median of {repeats} timed calls after one warm-up call"
        + ("; QUICK mode: tiny shapes, numbers are not meaningful" if quick else ""))
    say("")


def shape_line(index: int, total: int, spec, nbytes: int, bw: dict[str, Any]) -> str:
    """The line printed after shape ``index`` of ``total``: its bandwidths and load.

    Parameters
    ----------
    index, total : int
        The shape's index and the number of shapes.
    spec : tuple
        ``(shape, dtype, layout, channel_axis)``.
    nbytes : int
        The array's size.
    bw : dict
        Its bandwidth, load and wait (``other_cpus``, ``waited_for_quiet_s``).

    Returns
    -------
    str
        The line.
    """
    shape, dtype, layout, _ = spec
    other, waited = bw["other_cpus"], bw["waited_for_quiet_s"]
    return (
        f"[{index + 1}/{total}] {shape_str(shape)} {dtype} {layout}"
        f" ({nbytes / 1e6:.1f} MB): read bw {bw['read_gbps']:.2f} GB/s,"
        f" copy bw {bw['copy_gbps']:.2f} GB/s (read + write), best of the repeats"
        f" before and after (read {bw['read_gbps_before']:.1f} / {bw['read_gbps_after']:.1f},"
        f" copy {bw['copy_gbps_before']:.1f} / {bw['copy_gbps_after']:.1f});"
        + (" other processes used -" if other is None else
           f" other processes used {other:.2f} cores meanwhile")
        + (f" (waited {waited:.0f} s for quiet)" if waited >= 1 else "")
    )


def print_legend(say: Say) -> None:
    """What the table's columns mean.

    Parameters
    ----------
    say : callable
        Prints one line (``print`` to the bench's output).
    """
    say("")
    say("GB/s: stats = bytes of x read; normalizer = x read + out written;"
        " batchnorm_train = 2 reads of x + 1 write of y.")
    say("nbbn normalizer and batchnorm_train (and numpy's) write into a preallocated out=;"
        " torch's F.batch_norm allocates its output, so vs torch is against nbbn's allocating"
        " call (time_alloc_ms in the JSON).")
    say("% bw: of the read bandwidth (stats), the copy bandwidth (normalizer), or a read pass"
        " then a copy pass (batchnorm_train) measured for that shape (best of the repeats,"
        " before and after its ops);")
    say("% pair: the same ratio taken call by call, each nbbn call right after a bandwidth-kernel"
        " call over the same bytes (median of the pairs): the fair figure on a shared host.")
    say("vs numpy / vs torch: peer median time / nbbn median time; busy: cores used by other"
        " processes while that shape ran (above ~0.1 the row is slowed by a neighbour).")
    say("numpy: x.mean+x.var | subtract/multiply/add with out= | mean+var then normalize"
        " (float32 input summed in float32, integers via float64); torch: var_mean |"
        " F.batch_norm(training=False) | F.batch_norm(training=True), with nbbn's thread count")
    say("")


def print_small(say: Say, small: dict[str, Any]) -> None:
    """The small-batch overhead line.

    Parameters
    ----------
    say : callable
        Prints one line (``print`` to the bench's output).
    small : dict
        :func:`~nbbn.tools.bench_ops.bench_small`, with ``other_cpus``.
    """
    say("")
    say(
        f"small batch {shape_str(small['shape'])} float32, median per call over"
        f" {small['calls']} calls: update {small['update_us']:.2f} us,"
        f" normalizer(out=) {small['normalizer_us']:.2f} us,"
        f" batchnorm train(out=) {small['batchnorm_train_us']:.2f} us;"
        f" numpy mean+var {small['numpy_stats_us']:.2f} us"
        + (f", torch var_mean {small['torch_stats_us']:.2f} us" if small["torch_stats_us"] else "")
        + ("" if small["other_cpus"] is None else
           f" (other processes used {small['other_cpus']:.2f} cores meanwhile)")
    )


def print_startup(say: Say, start: dict[str, Any]) -> None:
    """The cold and warm start-up lines.

    Parameters
    ----------
    say : callable
        Prints one line (``print`` to the bench's output).
    start : dict
        :func:`~nbbn.tools.bench_startup.bench_startup`.
    """
    say("")
    say("start-up in a fresh process (import numpy + nbbn, then the first update,"
        " normalizer and BatchNorm call on a small float32 NCHW batch):")
    for phase, label in (("cold", "empty Numba cache (compile)"), ("warm", "warm cache   ")):
        r = start.get(phase, {})
        if "error" in r:
            say(f"  {label}: FAILED: {r['error']}")
            continue
        say(
            f"  {label}: import {r['import_s']:.2f} s,"
            f" first update {r['first_update_s']:.2f} s,"
            f" normalizer {r['first_normalizer_s']:.2f} s,"
            f" batchnorm {r['first_batchnorm_s']:.2f} s;"
            f" process wall {r['process_wall_s']:.2f} s"
        )


def print_load(say: Say, env: dict[str, Any], elapsed: float, load: dict[str, Any] | None,
               worst: float | None) -> None:
    """The run's duration and how busy the machine was.

    Parameters
    ----------
    say : callable
        Prints one line (``print`` to the bench's output).
    env : dict
        The environment.
    elapsed : float
        Seconds the bench took.
    load : dict or None
        :meth:`~nbbn.tools.bench_env.CpuMonitor.report` over the whole run.
    worst : float or None
        The most cores other processes used in a measured phase.
    """
    say("")
    say(f"bench took {elapsed:.0f} s")
    if load is not None:
        say(
            f"cpu use over the whole run incl. any waits (cores, averaged): this bench"
            f" {load['own_cpus']:.2f}, other processes {load['other_cpus']:.2f},"
            f" hypervisor steal {load['steal_cpus']:.2f}"
        )
    if worst is not None:
        say(
            f"busiest measured phase: other processes used {worst:.2f} cores"
            + ("  <- a neighbour was busy: the rows marked busy > 0.1 are pessimistic"
               if worst > 0.1 else " (a quiet machine)")
        )
