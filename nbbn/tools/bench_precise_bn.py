"""``nbbn bench --torch``: ``nbbn.torch.recompute_bn_stats`` against the same forward
passes without nbbn, and its accuracy against torch's ``update_bn`` and fvcore's formula.

Speed: a small conv net (3 Conv + BatchNorm + ReLU blocks, float32, CPU) over CPU
batches. "forward" is the same passes with the BatchNorm layers in training mode and no
hooks (what precise BN cannot avoid); "nbbn" is ``recompute_bn_stats`` (hooks, float64
statistics, writing the buffers); "update_bn" is ``torch.optim.swa_utils.update_bn``. The
contenders alternate within each repeat; medians and the median of the per-repeat
ratios are reported.

Accuracy: the relative error of ``running_var`` of a BatchNorm on the raw input (the one
layer whose input does not depend on the batching) against a float64 numpy reference,
for data with an offset (mean 50, std 1) in batches of 32 with a ragged last batch of 8:
nbbn, ``update_bn`` (equal weight per batch, unbiased per-batch variances) and fvcore's
estimator (weights by batch size, ``E[x^2] - E[x]^2`` in float32), re-implemented here
from its description.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any, TextIO


def _net(torch: Any) -> Any:
    nn = torch.nn
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
    ).eval()


def _forward_only(torch: Any, net: Any, batches: list) -> None:
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.train()
    with torch.no_grad():
        for x in batches:
            net(x)
    for m in bns:
        m.eval()


def bench_recompute_speed(quick: bool, repeats: int, file: TextIO) -> dict[str, Any]:
    """Time ``recompute_bn_stats`` against the bare forward passes and ``update_bn``."""
    import torch

    import nbbn.torch as nt

    n_batches, bs, hw = (4, 16, 16) if quick else (8, 32, 32)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(bs, 3, hw, hw, generator=g) for _ in range(n_batches)]
    net = _net(torch)
    contenders = {
        "forward": lambda: _forward_only(torch, net, batches),
        "nbbn": lambda: nt.recompute_bn_stats(net, batches, progress=False),
        "nbbn_eval": lambda: nt.recompute_bn_stats(net, batches, progress=False, mode="eval"),
        "update_bn": lambda: torch.optim.swa_utils.update_bn(batches, net),
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for fn in contenders.values():  # warm-up: compilation, allocator
        fn()
    names = list(contenders)
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            t0 = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - t0)
    ratios = [a / b for a, b in zip(times["nbbn"], times["forward"], strict=True)]
    res: dict[str, Any] = {
        "batches": n_batches, "batch_shape": [bs, 3, hw, hw], "repeats": repeats,
        "threads": torch.get_num_threads(),
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "nbbn_over_forward": statistics.median(ratios),
        "nbbn_eval_over_forward": statistics.median(
            [a / b for a, b in zip(times["nbbn_eval"], times["forward"], strict=True)]),
        "update_bn_over_forward": statistics.median(
            [a / b for a, b in zip(times["update_bn"], times["forward"], strict=True)]),
    }
    m = res["median_s"]
    res["nbbn_median_over_forward_median"] = m["nbbn"] / m["forward"]
    print(f"precise BN, conv net 3x(Conv+BN+ReLU), {n_batches} batches of {bs}x3x{hw}x{hw} "
          f"float32, {res['threads']} torch threads, median of {repeats}:", file=file)
    print(f"  forward passes only {m['forward'] * 1e3:8.1f} ms", file=file)
    print(f"  recompute_bn_stats  {m['nbbn'] * 1e3:8.1f} ms   "
          f"x{res['nbbn_over_forward']:.3f} of forward (median of paired ratios; ratio of "
          f"medians {res['nbbn_median_over_forward_median']:.3f})", file=file)
    print(f"  mode=\"eval\"         {m['nbbn_eval'] * 1e3:8.1f} ms   "
          f"x{res['nbbn_eval_over_forward']:.3f} of forward (3 partial passes)", file=file)
    print(f"  swa_utils.update_bn {m['update_bn'] * 1e3:8.1f} ms   "
          f"x{res['update_bn_over_forward']:.3f} of forward", file=file)
    return res


def _fvcore_like_var(torch: Any, batches: list) -> Any:
    """The population estimate of fvcore, from its description: per batch the BatchNorm's
    float32 mean and unbiased variance (momentum 1), combined weighted by batch size as
    ``E[x^2] - E[x]^2`` in float32."""
    bn = torch.nn.BatchNorm2d(batches[0].shape[1], momentum=1.0).train()
    total = 0
    mean = torch.zeros(bn.num_features)
    sq = torch.zeros(bn.num_features)
    with torch.no_grad():
        for x in batches:
            bn(x)
            n = x.shape[0]
            m = x.numel() // x.shape[1]  # values per channel: biased = unbiased * (m-1)/m
            total += n
            mean += (bn.running_mean - mean) * n / total
            sq += (bn.running_var * (m - 1) / m + bn.running_mean ** 2 - sq) * n / total
    return sq - mean ** 2  # population variance, as fvcore stores it


def bench_recompute_accuracy(quick: bool, file: TextIO) -> dict[str, Any]:
    """The relative error of ``running_var`` of a BatchNorm on the data, three ways."""
    import numpy as np
    import torch

    import nbbn.torch as nt

    n, bs, hw = (200, 32, 8) if quick else (1000, 32, 16)  # last batch: 8
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, hw, hw, generator=g) + 50.0
    batches = list(torch.split(x, bs))
    a = x.double().numpy().transpose(1, 0, 2, 3).reshape(3, -1)
    ref = a.var(axis=1, ddof=1)
    ref_pop = a.var(axis=1)

    def rel(v: Any, r: Any) -> float:
        return float(np.max(np.abs(np.asarray(v, np.float64) - r) / r))

    ours: Any = torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    nt.recompute_bn_stats(ours, batches, progress=False)
    swa: Any = torch.nn.Sequential(torch.nn.BatchNorm2d(3))
    torch.optim.swa_utils.update_bn(batches, swa)
    res = {
        "samples": n, "batch_size": bs, "last_batch": len(batches[-1]),
        "nbbn": rel(ours[0].running_var.numpy(), ref),
        "update_bn": rel(swa[0].running_var.numpy(), ref),
        "fvcore_formula": rel(_fvcore_like_var(torch, batches).numpy(), ref_pop),
    }
    print(f"precise BN accuracy: running_var of a BatchNorm on {n} samples 3x{hw}x{hw} "
          f"(mean 50, std 1), batches of {bs}, last batch {res['last_batch']}; max relative "
          "error against float64:", file=file)
    print(f"  nbbn {res['nbbn']:.1e}   update_bn {res['update_bn']:.1e}   "
          f"fvcore's formula {res['fvcore_formula']:.1e}", file=file)
    return res


def run_precise_bn_bench(quick: bool = False, repeats: int | None = None,
                         file: TextIO | None = None) -> dict[str, Any]:
    """Both measurements; printed to ``file`` (default stdout) and returned as a dict."""
    out = sys.stdout if file is None else file
    repeats = repeats or (3 if quick else 7)
    return {"speed": bench_recompute_speed(quick, repeats, out),
            "accuracy": bench_recompute_accuracy(quick, out)}
