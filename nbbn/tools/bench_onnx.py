"""``nbbn bench --onnx``: onnxruntime's time for nbbn's exact graph against the usual
``Sub``/``Div`` graph, and the accuracy table of the ONNX forms (docs/sklearn.md, "ONNX").

Speed: one float32 ``(1,000,000, 64)`` array (``(20,000, 64)`` with ``quick``), a
standardization with means of 1e4 standard deviations; one onnxruntime session per graph
and per set of session options (:data:`OPTIONS`: onnxruntime's defaults, one intra-op
thread, graph optimizations off; the same options for every graph of a set), CPU
provider, all sessions on one shared memory arena (so that the process holds one graph's
buffers, not six); the sessions of a set are run in turn, ``repeats`` rounds after an
untimed one, and the median of each is reported with its ratio to ``Sub``/``Div``'s.
The two-node graphs that compute the exact graph's numbers (:data:`SAME_AS_EXACT`) are
checked to give its output bit for bit.

Accuracy (:func:`accuracy_table`): for each mean/std, float32 data ``mean + std * z`` in
16 channels whose std spans 1e-2..1e2, every form run by onnxruntime, the maximum
absolute error against the float64 map and the maximum error in float32 ulp of each
float64 output.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any, TextIO

import numpy as np

from .. import _onnx_graphs as graphs
from .._onnx_graphs import Affine, Graph, counter
from .bench_env import cpu_model

FULL_SHAPE = (1_000_000, 64)
QUICK_SHAPE = (20_000, 64)
RATIOS = (1e2, 1e4, 1e6)
# the columns of the accuracy table: name, builder (graph, x, affine) -> y
FORMS = {
    "Sub/Div": lambda g, x, a: graphs.subdiv(g, x, a, (a.channels,), np.dtype(np.float32)),
    "ai.onnx.ml Scaler": lambda g, x, a: graphs.scaler(g, x, a),
    "BatchNormalization": lambda g, x, a: graphs.batchnorm(g, x, a),
    "folded x*a+b": lambda g, x, a: graphs.folded(g, x, a, (a.channels,),
                                                  np.dtype(np.float32)),
    "split, Sub Sub Div": lambda g, x, a: graphs.exact_div(g, x, a, (a.channels,),
                                                           np.dtype(np.float32)),
    "exact: split, Sub Sub Mul": lambda g, x, a: graphs.exact(g, x, a, (a.channels,),
                                                              np.dtype(np.float32)),
    "split, Sub BatchNorm": lambda g, x, a: graphs.sub_batchnorm(g, x, a),
}
EXACT = "exact: split, Sub Sub Mul"
# two-node graphs with the exact graph's roundings (the same numbers), timed only
SAME_AS_EXACT = {
    "split, Sub Scaler": lambda g, x, a: graphs.sub_scaler(g, x, a),
    "split, Sum Mul": lambda g, x, a: graphs.sum_mul(g, x, a, (a.channels,),
                                                     np.dtype(np.float32)),
}
SPEED = ("Sub/Div", EXACT, *SAME_AS_EXACT, "split, Sub BatchNorm", "BatchNormalization")
# session options of the timed sets: name -> {attribute of ort.SessionOptions: value}
OPTIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "1 thread": {"intra_op_num_threads": 1},
    "no graph optimizations": {"graph_optimization_level": "ORT_DISABLE_ALL"},
}
_SHARED_ARENA: list[bool] = []


def session(build, aff: Affine, options: dict[str, Any] | None = None,
            shared_arena: bool = False):
    """An onnxruntime session of the graph ``build(graph, "x", aff)`` on float32
    ``(N, C)`` input, with ``options`` set on its ``SessionOptions`` and, with
    ``shared_arena``, the process's shared CPU arena."""
    import onnx
    import onnxruntime as ort

    h = onnx.helper
    g = Graph(counter())
    g.fresh("x")
    y = build(g, "x", aff)
    nodes = [h.make_node(op, ins, outs, domain=dom or None, **attrs)
             for op, ins, outs, attrs, dom in g.nodes]
    vi = [h.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["N", aff.channels])
          for n in ("x", y)]
    graph = h.make_graph(nodes, "g", vi[:1], vi[1:],
                         [onnx.numpy_helper.from_array(v, k) for k, v in g.constants.items()])
    opsets = [h.make_opsetid("", 17), h.make_opsetid("ai.onnx.ml", 3)]
    model = h.make_model(graph, opset_imports=opsets)
    model.ir_version = h.find_min_ir_version_for(opsets)
    opts = ort.SessionOptions()
    for k, v in (options or {}).items():
        setattr(opts, k, getattr(ort.GraphOptimizationLevel, v) if isinstance(v, str) else v)
    if shared_arena:
        if not _SHARED_ARENA:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                     ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg({}))
            _SHARED_ARENA.append(True)
        opts.add_session_config_entry("session.use_env_allocators", "1")
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def standardization(ratio: float, channels: int, rng: np.random.Generator) -> Affine:
    """Means of ``ratio`` standard deviations (signs and factors 0.5..1 at random),
    standard deviations 1e-2..1e2, as an affine map with bias 0."""
    std = 10.0 ** rng.uniform(-2, 2, channels)
    mean = ratio * std * rng.uniform(0.5, 1, channels) * rng.choice([-1.0, 1.0], channels)
    return Affine(mean, 1.0 / std, np.zeros(channels))


def accuracy_table(n: int = 100_000, channels: int = 16, ratios=RATIOS, seed: int = 0,
                   near: int = 0) -> dict[float, dict[str, tuple[float, float]]]:
    """``{ratio: {form: (max abs error, max error in float32 ulp)}}`` of every form in
    :data:`FORMS`, run by onnxruntime on ``n`` rows of float32 data; with ``near``, the
    first ``2 * near + 1`` rows are the float32 numbers nearest each channel's mean
    (where ``x - mean`` cancels)."""
    rng = np.random.default_rng(seed)
    table: dict[float, dict[str, tuple[float, float]]] = {}
    for ratio in ratios:
        aff = standardization(ratio, channels, rng)
        x = (aff.mean + rng.standard_normal((n, channels)) / aff.scale).astype(np.float32)
        hi = aff.mean.astype(np.float32)
        for i, k in enumerate(range(-near, near + 1)[:n]):
            x[i] = hi + k * np.spacing(np.abs(hi))
        ref = (x.astype(np.float64) - aff.mean) * aff.scale
        ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
        row = {}
        for name, build in FORMS.items():
            y = session(build, aff).run(None, {"x": x})[0]
            err = np.abs(y.astype(np.float64) - ref)
            row[name] = (float(err.max()), float((err / ulp).max()))
        table[ratio] = row
    return table


def format_table(table: dict[float, dict[str, tuple[float, float]]]) -> str:
    """The accuracy table as markdown: max abs error per form, and the max error in
    float32 ulp for the split-mean forms."""
    names = list(next(iter(table.values())))
    lines = ["| mean/std | " + " | ".join(names) + " |",
             "|---" * (len(names) + 1) + "|"]
    for ratio, row in table.items():
        cells = [f"{a:.1e}" + (f" ({u:.2f} ulp)" if "split" in n else "")
                 for n, (a, u) in row.items()]
        lines.append(f"| {ratio:.0e} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_onnx_bench(file: TextIO | None = None, quick: bool = False,
                   repeats: int | None = None) -> dict[str, Any]:
    """Time the graphs on one array, print medians, ratios and the accuracy table;
    return them."""
    import onnxruntime as ort

    file = file or sys.stdout
    repeats = repeats or (3 if quick else 9)
    shape = QUICK_SHAPE if quick else FULL_SHAPE
    rng = np.random.default_rng(0)
    aff = standardization(1e4, shape[1], rng)
    x = (aff.mean + rng.standard_normal(shape) / aff.scale).astype(np.float32)
    builders = {**FORMS, **SAME_AS_EXACT}
    print(f"onnxruntime {ort.__version__} on {cpu_model()} ({os.cpu_count()} CPUs), float32 "
          f"{shape}, medians of {repeats} (sessions run in turn); wall time, and CPU time "
          "of this process (all its threads)", file=file)
    result: dict[str, Any] = {"shape": list(shape), "repeats": repeats, "cpu": cpu_model(),
                              "onnxruntime": ort.__version__, "speed_by_options": {},
                              "same_as_exact": {}}
    for label, options in OPTIONS.items():
        contenders = {name: session(builders[name], aff, options, shared_arena=True)
                      for name in SPEED}
        wall: dict[str, list[float]] = {name: [] for name in contenders}
        cpu: dict[str, list[float]] = {name: [] for name in contenders}
        exact_y: np.ndarray | None = None
        for r in range(repeats + 1):
            for name, sess in contenders.items():
                t0, c0 = time.perf_counter(), time.process_time()
                y = sess.run(None, {"x": x})[0]
                if r:
                    wall[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
                elif name == EXACT:
                    exact_y = y
                elif name in SAME_AS_EXACT and exact_y is not None:
                    same = bool(np.array_equal(y, exact_y))
                    result["same_as_exact"][name] = same and result["same_as_exact"].get(
                        name, True)
                del y
        del exact_y, contenders
        base_wall = statistics.median(wall["Sub/Div"])
        base_cpu = statistics.median(cpu["Sub/Div"])
        print(f"session options: {label}" + (f" {options}" if options else ""), file=file)
        speed = result["speed_by_options"][label] = {}
        for name in SPEED:
            w, c = statistics.median(wall[name]), statistics.median(cpu[name])
            note = " (bit for bit the exact graph's output)" if name in SAME_AS_EXACT \
                and result["same_as_exact"][name] else ""
            print(f"  {name:<26} {w * 1e3:8.1f} ms {w / base_wall:5.2f}x Sub/Div   CPU "
                  f"{c * 1e3:8.1f} ms {c / base_cpu:5.2f}x{note}", file=file)
            speed[name] = {"median_s": w, "ratio": w / base_wall, "cpu_median_s": c,
                           "cpu_ratio": c / base_cpu, "times_s": wall[name],
                           "cpu_times_s": cpu[name]}
    result["speed"] = result["speed_by_options"]["default"]
    table = accuracy_table(n=10_000 if quick else 100_000)
    print("\nmax abs error against float64 (float32 input, 16 channels, std 1e-2..1e2):",
          file=file)
    print(format_table(table), file=file)
    result["accuracy"] = {f"{r:g}": row for r, row in table.items()}
    return result
