"""nbbn for PyTorch models: exact precise BatchNorm statistics, folding, module interop.

``import nbbn.torch`` needs torch (``pip install 'nbbn[torch]'``); ``import nbbn`` never
imports this module.

- :func:`recompute_bn_stats`: every BatchNorm layer's running buffers from the exact
  float64 statistics of its inputs over a dataset, merged exactly across
  ``torch.distributed`` ranks.
- :func:`fold_normalizer`, :func:`fuse_bn`: a normalizer before, or a BatchNorm after, a
  Conv/Linear layer folded into a new layer, in float64.
- :class:`NormalizerModule`: what :meth:`nbbn.Normalizer.to_torch` returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ._progress import Progress
from ._torch_fold import fold_normalizer, fuse_bn
from ._torch_modules import NormalizerModule, _is_bn, check_initialized, torch
from .running_stats import RunningStats

__all__ = ["NormalizerModule", "fold_normalizer", "fuse_bn", "recompute_bn_stats"]


def recompute_bn_stats(model: torch.nn.Module, data: Iterable, *, num_samples: int | None = None,
                       device: Any = None, progress: bool = True) -> dict[str, RunningStats]:
    """Set every BatchNorm layer's running statistics to the exact statistics of its input.

    One pass over ``data`` ("precise BN", as fvcore's ``update_bn_stats``): every
    ``BatchNorm1d/2d/3d`` and ``SyncBatchNorm`` layer with running statistics (a lazy one
    once initialized) normalizes with the batch statistics, as in training, while a
    forward pre-hook merges its input into a float64 :class:`nbbn.RunningStats` (all N x
    spatial positions, Chan's formula). Then each layer gets ``running_mean`` = the mean,
    ``running_var`` = the unbiased variance (as torch stores it) and
    ``num_batches_tracked`` = the number of batches it saw. The result is the population
    statistics of the activations of the pass, whatever the batch sizes (a ragged last
    batch weighs by its size); under ``torch.distributed`` each rank's (count, mean, M2)
    are gathered and merged in rank order, so every rank ends with identical buffers,
    equal (to rounding) to one process reading all the data.

    The other modules keep their mode (dropout stays off in an eval-mode model). Modes
    and hooks are restored afterwards, and the buffers are left as they were if the pass
    raises. Momenta are not used or changed.

    Parameters
    ----------
    model : torch.nn.Module
        The model; its BatchNorm layers are recomputed.
    data : iterable
        Batches: tensors, or tuples/lists whose first item is the input tensor (a
        ``DataLoader`` of (input, target)); called as ``model(x)``.
    num_samples : int, optional
        Stop after this many samples (the last batch is cut to fit); default: all data.
    device : torch.device or str, optional
        Move each input there first (default: as it comes).
    progress : bool, default True
        Show a progress bar on stderr.

    Returns
    -------
    dict of str to RunningStats
        The exact statistics per layer name (as in ``model.named_modules()``); a layer
        that saw no data is left unchanged and is not in the dict.

    Raises
    ------
    ValueError
        No data, an uninitialized lazy layer, or ``num_samples < 1``.
    TypeError
        An item of ``data`` is not a tensor or a tuple/list starting with one.

    Notes
    -----
    Under ``torch.distributed`` every rank of the default group must call it (the
    statistics are gathered collectively), each with its own share of the data.

    Examples
    --------
    >>> import torch, nbbn.torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    >>> x = torch.randn(10, 3, 5, 5)
    >>> stats = nbbn.torch.recompute_bn_stats(net, torch.split(x, 4), progress=False)
    >>> stats["1"].count.tolist(), int(net[1].num_batches_tracked)
    ([250, 250, 250, 250], 3)
    """
    if num_samples is not None and (isinstance(num_samples, bool) or int(num_samples) < 1):
        raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}")
    layers = _bn_layers(model)
    if not layers:
        return {}
    stats = {name: RunningStats(channel_axis=1) for name, _ in layers}
    calls = dict.fromkeys(stats, 0)
    modes = [(m, m.training) for m in model.modules()]
    saved = [(m, m.running_mean.clone(), m.running_var.clone(),
              None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for _, m in layers]
    handles = []
    done = False
    try:
        for name, m in layers:
            handles.append(m.register_forward_pre_hook(_collector(stats[name], calls, name)))
            m.train()
        seen = _run(model, data, num_samples, device, progress)
        if seen == 0:
            raise ValueError("data yielded no samples: the BatchNorm statistics were not changed")
        stats, calls = _merge_ranks(stats, calls)
        result = {name: rs for name, rs in stats.items() if rs.num_channels is not None}
        _write(layers, result, calls)
        done = True
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
        if not done:
            with torch.no_grad():
                for m, mean, var, nbt in saved:
                    m.running_mean.copy_(mean)
                    m.running_var.copy_(var)
                    if nbt is not None:
                        m.num_batches_tracked.copy_(nbt)
    return result


def _bn_layers(model: torch.nn.Module) -> list[tuple[str, Any]]:
    layers: list[tuple[str, Any]] = []
    for name, m in model.named_modules():
        if _is_bn(m):
            check_initialized(m, f"BatchNorm layer {name!r}")
            if m.track_running_stats:
                layers.append((name, m))
    return layers


def _collector(rs: RunningStats, calls: dict[str, int], name: str):
    def hook(module: torch.nn.Module, args: tuple) -> None:
        x = args[0].detach()
        if x.dtype == torch.bfloat16:  # numpy has no bfloat16; exact in float32
            x = x.float()
        rs.update(x.cpu().numpy())
        calls[name] += 1

    return hook


def _input(item: Any) -> torch.Tensor:
    x = item[0] if isinstance(item, (tuple, list)) and item else item
    if not isinstance(x, torch.Tensor):
        raise TypeError("each item of data must be a tensor or a tuple/list whose first item "
                        f"is the input tensor, got {type(item).__name__}")
    return x


def _run(model: torch.nn.Module, data: Iterable, num_samples: int | None, device: Any,
         progress: bool) -> int:
    """The forward passes; returns the number of samples read."""
    bar = Progress(progress, "nbbn precise BN", None, 0, 0)
    seen = 0
    try:
        with torch.no_grad():
            for item in data:
                x = _input(item)
                if num_samples is not None:
                    x = x[: num_samples - seen]
                if device is not None:
                    x = x.to(device)
                if x.shape[0] == 0:
                    continue
                model(x)
                seen += int(x.shape[0])
                bar.update(x.numel() * x.element_size(), seen)
                if num_samples is not None and seen >= num_samples:
                    break
    finally:
        bar.close()
    return _sum_ranks(seen)


def _distributed() -> Any:
    dist = torch.distributed
    return dist if dist.is_available() and dist.is_initialized() else None


def _sum_ranks(n: int) -> int:
    dist = _distributed()
    if dist is None:
        return n
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, n)
    return sum(out)


def _merge_ranks(stats: dict[str, RunningStats], calls: dict[str, int]
                 ) -> tuple[dict[str, RunningStats], dict[str, int]]:
    """Every rank's statistics, merged in rank order (identical on every rank)."""
    dist = _distributed()
    if dist is None:
        return stats, calls
    mine = {name: (rs.to_dict(), calls[name]) for name, rs in stats.items()}
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    merged = {name: RunningStats(channel_axis=1) for name in stats}
    total = dict.fromkeys(stats, 0)
    for part in gathered:
        for name in stats:
            d, n = part[name]
            merged[name] += RunningStats.from_dict(d, backend="cpu")
            total[name] += n
    return merged, total


def _write(layers: list[tuple[str, Any]], stats: dict[str, RunningStats],
           calls: dict[str, int]) -> None:
    """Write all buffers, after checking all of them (all or nothing)."""
    values = {}
    for name, rs in stats.items():
        mean, var = rs.mean, rs.variance(ddof=1)
        if not (np.isfinite(mean).all() and np.isfinite(var).all()):
            raise ValueError(f"BatchNorm layer {name!r}: the statistics of its input hold "
                             "NaN or inf (a channel with fewer than 2 values, or non-finite "
                             "activations); the buffers were not changed")
        values[name] = (mean, var)
    with torch.no_grad():
        for name, m in layers:
            if name not in values:
                continue
            mean, var = values[name]
            m.running_mean.copy_(torch.from_numpy(mean))
            m.running_var.copy_(torch.from_numpy(var))
            if m.num_batches_tracked is not None:
                m.num_batches_tracked.fill_(calls[name])

