"""The exact ONNX graph run over row tiles by a ``Scan`` node, so that its three
elementwise nodes work on cache-sized pieces: a candidate for the issue's "within 1.3x
of ``Sub``/``Div``" line, measured against the plain graphs (docs/sklearn.md, "Speed").

    python scripts/onnx_scan_tiles.py [TILE_ROWS ...]

(1,000,000, 64) float32 input, means of 1e4 standard deviations; the graph reshapes
the input to (-1, TILE_ROWS, 64) (so the row count must be a multiple), scans the tiles
through ``Sub(hi)``, ``Sub(lo)``, ``Mul(scale)`` and reshapes back. Per intra-op thread
setting (0: onnxruntime's default; 1), medians of 9 runs of each session after one
untimed run; the tiled output is checked bit for bit against the exact graph's.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from nbbn.tools.bench_env import cpu_line

N, C = 1_000_000, 64


def _model(nodes, inits) -> bytes:
    shape = ["N", C]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(a, k) for k, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _exact_nodes(x: str, y: str) -> list:
    return [helper.make_node("Sub", [x, "hi"], ["t"]),
            helper.make_node("Sub", ["t", "lo"], ["u"]),
            helper.make_node("Mul", ["u", "s"], [y])]


def _tiled(consts: dict, rows: int) -> bytes:
    tile = [rows, C]
    body = helper.make_graph(_exact_nodes("xt", "yt"), "tile",
                             [helper.make_tensor_value_info("xt", TensorProto.FLOAT, tile)],
                             [helper.make_tensor_value_info("yt", TensorProto.FLOAT, tile)])
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Reshape", ["x", "tiles"], ["x3"]),
             helper.make_node("Scan", ["x3"], ["y3"], body=body, num_scan_inputs=1),
             helper.make_node("Reshape", ["y3", "shape"], ["y"])]
    return _model(nodes, {**consts, "tiles": np.array([-1, rows, C], np.int64)})


def _median_ms(model: bytes, x: np.ndarray, threads: int) -> tuple[np.ndarray, float]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x})[0]
    times = []
    for _ in range(9):
        t0 = time.perf_counter()
        sess.run(None, {"x": x})
        times.append(time.perf_counter() - t0)
    return y, statistics.median(times) * 1e3


def main(tile_rows: list[int]) -> None:
    print(cpu_line(), f"onnxruntime {ort.__version__}")
    rng = np.random.default_rng(0)
    mean, std = rng.uniform(-1e4, 1e4, C), rng.uniform(0.1, 10, C)
    x = (mean + std * rng.standard_normal((N, C))).astype(np.float32)
    hi = mean.astype(np.float32)
    consts = {"hi": hi, "lo": (mean - hi).astype(np.float32),
              "s": (1 / std).astype(np.float32)}
    subdiv = _model([helper.make_node("Sub", ["x", "m"], ["t"]),
                     helper.make_node("Div", ["t", "sd"], ["y"])],
                    {"m": hi, "sd": std.astype(np.float32)})
    exact = _model(_exact_nodes("x", "y"), consts)
    for threads in (0, 1):
        _, base = _median_ms(subdiv, x, threads)
        y_exact, t_exact = _median_ms(exact, x, threads)
        line = f"threads {threads}: Sub/Div {base:.1f} ms, exact {t_exact / base:.2f}x"
        for rows in tile_rows:
            y, t = _median_ms(_tiled(consts, rows), x, threads)
            same = "" if np.array_equal(y, y_exact) else " (output differs!)"
            line += f", Scan {rows} rows {t / base:.2f}x{same}"
        print(line, flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [250, 1000, 4000, 10000])
