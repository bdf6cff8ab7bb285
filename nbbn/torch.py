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

import contextlib
import numbers
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

import numpy as np

from ._progress import Progress
from ._torch_arrays import rounded_once
from ._torch_fold import fold_normalizer, fuse_bn
from ._torch_modules import NormalizerModule, _is_bn, check_initialized, torch
from .running_stats import RunningStats, counted_nothing

__all__ = ["NormalizerModule", "fold_normalizer", "fuse_bn", "recompute_bn_stats"]


def recompute_bn_stats(model: torch.nn.Module, data: Iterable, *, num_samples: int | None = None,
                       device: Any = None, progress: bool = True, mode: str = "batch",
                       forward: Callable[[torch.nn.Module, Any], Any] | None = None,
                       ) -> dict[str, RunningStats]:
    """Set every BatchNorm layer's running statistics to the exact statistics of its input.

    ``mode="batch"`` (the default): one pass over ``data`` ("precise BN", as fvcore's
    ``update_bn_stats``): every ``BatchNorm1d/2d/3d`` and ``SyncBatchNorm`` layer with
    running statistics (a lazy one once initialized) normalizes with the batch statistics,
    as in training, while a forward pre-hook merges its input into a float64
    :class:`nbbn.RunningStats` (all N x spatial positions, Chan's formula). Then each layer
    gets ``running_mean`` = the mean, ``running_var`` = the unbiased variance (as torch
    stores it) and ``num_batches_tracked`` = the number of batches it saw. The result is the
    population statistics of the activations of the pass, whatever the batch sizes (a ragged
    last batch weighs by its size); under ``torch.distributed`` each rank's (count, mean,
    M2) are gathered and merged in rank order, so every rank ends with identical buffers,
    equal (to rounding) to one process reading all the data.

    In this mode the other modules keep their mode (dropout stays off in an eval-mode
    model). In both modes, modes and hooks are restored afterwards, and the buffers are
    left as they were if a pass raises. Momenta are not used or changed.

    ``mode="eval"``: the statistics the deployed eval-mode model sees at every BatchNorm
    input. The whole model runs in eval mode (dropout off), and the layers are collected
    one at a time in forward order, each with every earlier BatchNorm layer already
    normalizing with its freshly computed exact statistics (its buffers). A layer's
    input then does not depend on the batch size or on how the data are cut (up to the
    float32 rounding of the model's own ops), which ``mode="batch"`` cannot give past
    the first layer (there a deeper layer's input was normalized upstream with batch
    statistics). It costs one partial pass per layer: the pass for a layer stops as soon
    as that layer has read its input, so ``data`` is iterated once per layer and must be
    re-iterable (a ``DataLoader``, list, tuple or ``Dataset`` of batches; a one-shot
    iterator is a ``TypeError``), yielding the same batches each time. The order is the
    order in which the layers run on the first batch (a layer that does not run there
    keeps its buffers); a layer used more than once in a
    forward is collected over all its uses (the layers not yet collected, itself
    included, normalize with their old buffers in between). Under
    ``torch.distributed`` each layer's statistics are merged across the ranks before the
    next layer's pass.

    Parameters
    ----------
    model : torch.nn.Module
        The model; its BatchNorm layers are recomputed.
    data : iterable
        Batches: tensors, or tuples/lists whose first item is the input tensor (a
        ``DataLoader`` of (input, target)); called as ``model(x)``. With ``forward``,
        items of any kind (dicts, lists of dicts).
    num_samples : int, optional
        Stop after this many samples (the last batch is cut to fit); default: all data.
        Not with ``forward`` (nbbn cannot cut an item it does not read: cut ``data``,
        e.g. with ``itertools.islice``).
    device : torch.device or str, optional
        Move each input there first (default: as it comes). Not with ``forward``, which
        moves its inputs itself.
    progress : bool, default True
        Show a progress bar on stderr (one per pass in ``mode="eval"``).
    mode : {"batch", "eval"}, default "batch"
        ``"batch"``: one pass, BatchNorm layers normalizing with batch statistics (as in
        training; fvcore's and detectron2's procedure). ``"eval"``: one partial pass per
        layer through the eval-mode model, every earlier layer using its new statistics
        (the deployed model's statistics, independent of the batching).

    Returns
    -------
    dict of str to RunningStats
        The exact statistics per layer name (as in ``model.named_modules()``); a layer
        that saw no data is left unchanged and is not in the dict.

    Raises
    ------
    ValueError
        No data, an uninitialized lazy layer, ``num_samples < 1``, an unknown ``mode``,
        ``num_samples`` or ``device`` with ``forward``, or (``mode="eval"``) ranks whose
        models run their layers in different orders.
    TypeError
        An item of ``data`` is not a tensor or a tuple/list starting with one (without
        ``forward``), ``forward`` is not callable, (``mode="eval"``) ``data`` is a
        one-shot iterator, or ``model`` is a TorchScript module or a ``torch.export``
        graph whose batch norms are function calls (no layer to hook: recompute on the
        Python model, then script or export it).

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
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(
            num_samples, numbers.Integral)):
        raise TypeError(f"num_samples must be a positive int or None, got {num_samples!r}")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}")
    if mode not in ("batch", "eval"):
        raise ValueError(f'mode must be "batch" or "eval", got {mode!r}')
    _check_forward(forward, num_samples, device)
    _check_device(device)
    if mode == "eval" and (isinstance(data, Iterator) or not (
            isinstance(data, Iterable) or hasattr(data, "__getitem__"))):
        raise TypeError(
            'mode="eval" reads data once per BatchNorm layer, so data must be re-iterable '
            f"(a DataLoader, list, tuple or Dataset of batches), got a one-shot "
            f"{type(data).__name__}: pass list(data) or the DataLoader itself")
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError("model is a TorchScript module (torch.jit.script or trace): nbbn "
                        "reads each BatchNorm layer's input with a forward hook, which "
                        "TorchScript does not run; recompute the statistics on the Python "
                        "model, then script it")
    layers = _bn_layers(model)
    if not layers and isinstance(model, torch.fx.GraphModule) and not any(
            _is_bn(m) for m in model.modules()) and _graph_has_batch_norm(model):
        raise TypeError("model is a graph module (torch.export or fx) whose batch norms are "
                        "calls of functions, not BatchNorm modules that nbbn can hook; "
                        "recompute the statistics on the Python model, then export it")
    if not layers:
        return {}
    if mode == "eval":
        return _recompute_eval(model, layers, data, num_samples, device, progress, forward)
    stats = {name: RunningStats(channel_axis=1) for name, _ in layers}
    calls = dict.fromkeys(stats, 0)
    with _restoring(model, layers) as (handles, saved):
        for name, m in layers:
            handles.append(m.register_forward_pre_hook(_collector(stats[name], calls, name),
                                                       with_kwargs=True))
            m.train()
        seen = _run(model, data, num_samples, device, progress, forward)
        if seen == 0:
            raise ValueError("data yielded no samples: the BatchNorm statistics were not changed")
        stats, calls = _merge_ranks(stats, calls)
        result = {name: rs for name, rs in stats.items() if not counted_nothing(rs)}
        _write(layers, result, calls)
        # (a layer that saw only empty inputs is left as it was: torch's training
        # forward counted those calls in its num_batches_tracked)
        _copy_back([(name, m) for name, m in layers if name not in result], saved)
    return result


def _buffers(layers: list[tuple[str, Any]]) -> dict[str, tuple]:
    """Copies of each layer's running buffers, by name."""
    return {name: (m.running_mean.clone(), m.running_var.clone(),
                   None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
            for name, m in layers}


def _copy_back(layers: list[tuple[str, Any]], saved: dict[str, tuple]) -> None:
    """The buffers of ``layers`` set back to their ``saved`` copies."""
    with torch.no_grad():
        for name, m in layers:
            mean, var, nbt = saved[name]
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)


@contextlib.contextmanager
def _restoring(model: torch.nn.Module, layers: list[tuple[str, Any]]
               ) -> Generator[tuple[list[Any], dict[str, tuple]], None, None]:
    """Yields a list for hook handles and the copies of the layers' buffers as they
    were (:func:`_buffers`). Afterwards the hooks are removed and every module's
    ``training`` flag is restored one by one (not ``train()``, which recurses); if the
    block raised, the layers' buffers are copied back as well."""
    modes = [(m, m.training) for m in model.modules()]
    saved = _buffers(layers)
    handles: list[Any] = []
    try:
        yield handles, saved
    except BaseException:
        _copy_back(layers, saved)
        raise
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training


class _StopPass(Exception):
    """Raised by a pre-hook of ``mode="eval"`` to end a forward once the layer being
    collected has read its input: the rest of the model is not run."""


class _LayerPass:
    """What the pre-hooks of ``mode="eval"`` share: the layer being collected (``target``),
    its statistics and calls, its uses per forward, and on the first forward that runs a
    BatchNorm layer the order in which the layers run (``sequence``)."""

    def __init__(self) -> None:
        self.target: str | None = None  # the first layer to run, on the first pass
        self.stats = RunningStats(channel_axis=1)
        self.calls = 0
        self.uses = 0  # the target's uses per forward; 0 (unknown): no stop
        self.stops = True  # False (with forward=): every pass runs whole forwards
        self.seen = 0  # the target's uses in the current forward
        self.sequence: list[str] | None = []  # None once the order is known
        self.order: list[str] = []
        self.uses_per_forward: dict[str, int] = {}
        # The first pass runs whole forwards and counts every layer's uses in each: a
        # layer used a data-dependent number of times (once per chunk of a sequence of
        # varying length) makes every later pass run whole forwards too, since a pass
        # cut at the first forward's count dropped a later forward's extra uses
        self.probing = True
        self.counted: Counter[str] = Counter()
        self.varies = False

    def before(self) -> None:
        """Called before each forward."""
        if self.sequence:
            self.found()
        self.tally()
        self.seen = 0

    def tally(self) -> None:
        """The end of a forward of the first pass: whether its uses differ from the
        first forward's (then no pass stops early)."""
        if self.probing and self.sequence is None and \
                dict(self.counted) != self.uses_per_forward:
            self.varies = True
        self.counted = Counter()

    def probed(self) -> None:
        """The first pass is over: the later passes stop early only where every forward
        used each layer as often as the first."""
        self.tally()
        self.probing = False
        if self.varies:
            self.stops = False

    def found(self) -> None:
        """The first forward that ran a BatchNorm layer is over: its order is the order."""
        assert self.sequence is not None and self.target is not None
        self.order = list(dict.fromkeys(self.sequence))
        self.uses_per_forward = dict(Counter(self.sequence))
        self.uses = self.uses_per_forward[self.target]
        self.sequence = None

    def start(self, name: str) -> None:
        """Collect layer ``name`` next."""
        self.target, self.stats, self.calls = name, RunningStats(channel_axis=1), 0
        self.uses = self.uses_per_forward[name]

    def hook(self, name: str) -> Callable[[torch.nn.Module, tuple, dict], None]:
        def pre_hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            if self.sequence is not None:
                self.sequence.append(name)
                if self.target is None:
                    self.target = name
            if self.probing:
                self.counted[name] += 1
            if name != self.target:
                return
            _read(self.stats, _layer_input(args, kwargs, name))
            self.calls += 1
            self.seen += 1
            if self.stops and not self.probing and self.seen == self.uses:
                raise _StopPass

        return _not_traced(pre_hook)


def _recompute_eval(model: torch.nn.Module, layers: list[tuple[str, Any]], data: Iterable,
                    num_samples: int | None, device: Any, progress: bool,
                    forward: Callable[[torch.nn.Module, Any], Any] | None,
                    ) -> dict[str, RunningStats]:
    """``mode="eval"``: one partial pass per layer through the eval-mode model, each
    layer's buffers written (merged over the ranks) before the next layer's pass."""
    modules = dict(layers)
    lp = _LayerPass()
    # forward= may call the model any number of times per item (once per element of a
    # list): a pass cut after the first item's number of uses would drop the rest
    lp.stops = forward is None
    result: dict[str, RunningStats] = {}
    with _restoring(model, layers) as (handles, _):
        for m in model.modules():
            m.training = False
        for name, m in layers:
            handles.append(m.register_forward_pre_hook(lp.hook(name), with_kwargs=True))
        desc = "nbbn precise BN (eval), layer"
        seen = _run(model, data, num_samples, device, progress, forward, f"{desc} 1",
                    lp.before, eval_mode=True)
        if lp.sequence:
            lp.found()
        lp.probed()
        if seen == 0:
            raise ValueError("data yielded no samples: the BatchNorm statistics were not changed")
        _agree_order(lp)
        for k, name in enumerate(lp.order):
            if k:
                lp.start(name)
                _run(model, data, num_samples, device, progress, forward,
                     f"{desc} {k + 1}/{len(lp.order)} {name!r}", lp.before, eval_mode=True)
            merged, calls = _merge_ranks({name: lp.stats}, {name: lp.calls})
            if counted_nothing(merged[name]):
                continue  # ran on the first batch, not in its own pass: left as it was
            _write([(name, modules[name])], merged, calls)
            result[name] = merged[name]
    return result


def _agree_order(lp: _LayerPass) -> None:
    """Under ``torch.distributed``: every rank takes the order of the first rank that ran
    a BatchNorm layer (a ValueError on every rank if two ranks found different orders)."""
    dist = _distributed()
    if dist is None:
        return
    mine = (lp.order, lp.uses_per_forward) if lp.order else None
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    found = [g for g in gathered if g is not None]
    if any(g != found[0] for g in found):
        raise ValueError('mode="eval": the ranks ran their BatchNorm layers in different orders '
                         f"(rank order: {[g and g[0] for g in gathered]})")
    if found:
        lp.order, lp.uses_per_forward = found[0]


def _graph_has_batch_norm(model: Any) -> bool:
    """Whether the graph of an fx ``GraphModule`` calls a batch-norm function."""
    return any(n.op in ("call_function", "call_method") and "batch_norm" in str(n.target)
               for n in model.graph.nodes)


def _bn_layers(model: torch.nn.Module) -> list[tuple[str, Any]]:
    layers: list[tuple[str, Any]] = []
    for name, m in model.named_modules():
        if _is_bn(m):
            check_initialized(m, f"BatchNorm layer {name!r}")
            # (a layer built with track_running_stats=False has no buffers, whatever
            # the flag says since: torch normalizes it with batch statistics in both modes)
            if m.track_running_stats and m.running_mean is not None:
                layers.append((name, m))
    return layers


def _collector(rs: RunningStats, calls: dict[str, int], name: str):
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        _read(rs, _layer_input(args, kwargs, name))
        calls[name] += 1

    return _not_traced(hook)


def _layer_input(args: tuple, kwargs: dict, name: str) -> Any:
    """The input of a BatchNorm layer's call, positional or ``bn(input=x)`` (a forward
    pre-hook registered ``with_kwargs``)."""
    if args:
        return args[0]
    if "input" in kwargs:
        return kwargs["input"]
    raise TypeError(f"BatchNorm layer {name!r} was called without its input (positional, "
                    f"or input=...); got keywords {sorted(kwargs)}")


def _not_traced(hook: Callable) -> Callable:
    """``hook`` run as plain Python inside a ``torch.compile``d model: dynamo traced the
    hooks into nbbn and numba's compiler, which failed whenever a kernel was not in
    numba's disk cache yet (a graph break per call instead)."""
    disable = getattr(getattr(torch, "compiler", None), "disable", None)
    return hook if disable is None else disable(hook)


def _read(rs: RunningStats, x: torch.Tensor) -> None:
    rs.update(x.detach().cpu())  # a CPU tensor as it is: bfloat16 too, without a copy


def _check_forward(forward: Any, num_samples: int | None, device: Any) -> None:
    if forward is None:
        return
    if not callable(forward):
        raise TypeError("forward must be a callable forward(model, item) or None, got "
                        f"{type(forward).__name__}")
    if num_samples is not None:
        raise ValueError(
            f"num_samples={num_samples} cannot be used with forward=: the items go to forward "
            "unchanged, so nbbn cannot cut the last one; cut data instead (e.g. "
            "itertools.islice(loader, n_batches))")
    if device is not None:
        raise ValueError(f"device={device!r} cannot be used with forward=: the items go to "
                         "forward unchanged; move the inputs to the device in forward")


def _check_device(device: Any) -> None:
    if device is None:
        return
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise TypeError("device must be a torch.device, a str such as 'cuda:0', an int "
                        f"index or None, got {type(device).__name__} {device!r}")
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={device!r} is not a device torch can use: {exc}") from None


def _input(item: Any) -> torch.Tensor:
    x = item[0] if isinstance(item, (tuple, list)) and item else item
    if not isinstance(x, torch.Tensor):
        raise TypeError("each item of data must be a tensor or a tuple/list whose first item "
                        f"is the input tensor, got {type(item).__name__}; for other items "
                        "(dicts, several inputs) pass forward=, e.g. "
                        "forward=lambda model, batch: model(**batch)")
    return x


def _run(model: torch.nn.Module, data: Iterable, num_samples: int | None, device: Any,
         progress: bool, forward: Callable[[torch.nn.Module, Any], Any] | None = None,
         desc: str = "nbbn precise BN", before: Callable[[], None] | None = None,
         eval_mode: bool = False) -> int:
    """The forward passes (``before`` called before each); returns the number of samples
    (with ``forward``: of batches) read over all ranks. A forward ended by
    :class:`_StopPass` counts as done."""
    bar = Progress(progress, desc, None, 0, 0, unit="B" if forward is None else "batch")
    seen = 0
    try:
        with torch.no_grad():
            for item in data:
                if forward is not None:
                    if before is not None:
                        before()
                    with contextlib.suppress(_StopPass):
                        forward(model, item)
                    seen += 1
                    bar.update(1, seen)
                    continue
                x = _input(item)
                if num_samples is not None:
                    x = x[: num_samples - seen]
                if device is not None:
                    x = x.to(device)
                if x.shape[0] == 0:
                    continue
                if before is not None:
                    before()
                try:
                    model(x)
                except _StopPass:
                    pass
                except ValueError as exc:
                    # (only torch's own refusal of one value per channel: a model's other
                    # errors on a batch of 1, such as BatchNorm2d's "expected 4D input"
                    # for the samples of a Dataset, were blamed on the batch's size)
                    if x.shape[0] != 1 or "more than 1 value per channel" not in str(exc):
                        raise
                    why = (f"num_samples={num_samples} cut the last batch to 1 sample"
                           if num_samples is not None and num_samples - seen == 1
                           and int(_input(item).shape[0]) > 1 else "a batch of 1 sample")
                    layer = ("a BatchNorm without running statistics "
                             "(track_running_stats=False: batch statistics in eval mode too)"
                             if eval_mode else "a BatchNorm in training mode")
                    way = "" if eval_mode else ", or mode='eval'"
                    raise ValueError(
                        f"{why}, which {layer} cannot normalize when it has one value per "
                        "channel (BatchNorm1d on (N, C) input): use a num_samples that "
                        f"leaves no batch of 1, or drop such a batch{way}. The buffers were "
                        f"not changed. ({exc})") from exc
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
    buffers = {name: m.running_var for name, m in layers}
    for name, rs in stats.items():
        mean, var = rs.mean, rs.variance(ddof=1)
        if not (np.isfinite(mean).all() and np.isfinite(var).all()):
            raise ValueError(f"BatchNorm layer {name!r}: the statistics of its input hold "
                             "NaN or inf (a channel with fewer than 2 values, or non-finite "
                             "activations); the buffers were not changed")
        # a float16 model's buffers took a variance of 1e6 as inf (outputs all 0), where
        # BatchNorm.to_torch refuses it
        dtype = buffers[name].dtype if name in buffers else torch.float64
        big = np.flatnonzero((np.abs(mean) > torch.finfo(dtype).max)
                             | (var > torch.finfo(dtype).max))
        if big.size:
            raise ValueError(f"BatchNorm layer {name!r}: the statistics of its input are "
                             f"beyond its buffers' {dtype} range in channels "
                             f"{big[:5].tolist()} (they would be stored as inf); use a "
                             "wider dtype for the model (model.float()); the buffers were "
                             "not changed")
        values[name] = (mean, var)
    with torch.no_grad():
        for name, m in layers:
            if name not in values:
                continue
            mean, var = values[name]
            m.running_mean.copy_(rounded_once(mean, m.running_mean.dtype))
            m.running_var.copy_(rounded_once(var, m.running_var.dtype))
            if m.num_batches_tracked is not None:
                m.num_batches_tracked.fill_(calls[name])

