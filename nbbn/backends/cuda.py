"""The CUDA backend: the :class:`~nbbn.backends.Backend` operations on device arrays.

Imported by :func:`nbbn.backends.resolve` only when a device array or
``backend="cuda"`` asks for it (``import nbbn`` never imports ``numba.cuda``). Inputs
are wrapped without a copy by :mod:`.cuda_arrays`; the kernels are in
:mod:`.cuda_kernels`. Statistics stay on the device: ``reduce`` launches the per-block
reduction, ``merge`` the kernel that finishes it and merges it into a
:class:`DeviceStats` (two launches per update); the affine map is one launch and
BatchNorm's training forward three. Only per-channel numbers cross to the host, and
only when a state is read (``summary``, ``DeviceStats.to_host``).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import cuda

from .._affine import affine_scale, check_out, result_dtype
from .._torch_arrays import is_cpu_tensor
from ..errors import BackendUnavailableError
from . import cuda_kernels as kk
from ._stats import COUNT_LIMIT, BatchStats, count_limit_error
from .cuda_arrays import (
    SIMULATOR,
    DeviceInput,
    canonical,
    empty_like_input,
    expanded,
    flat_view,
    is_bf16_tensor,
    overlaps,
    user_out,
)

__all__ = ["name", "prepare", "reduce", "summary", "merge", "prepare_out", "params",
           "affine", "result", "running", "batchnorm_train", "batchnorm_eval", "DeviceStats",
           "LaunchConfig", "reduce_weighted"]

name = "cuda"


@dataclass
class LaunchConfig:
    """Block size and how the work is cut into blocks.

    ``threads`` per block (a power of two); a channel's values are cut into parts of at
    least ``block_elements`` values, and at most ``max_blocks`` blocks run per launch.
    ``merge_threads`` (a power of two) merge one channel's parts in ``finalize``, which
    runs ``merge_blocks`` blocks (None: one per channel; the simulator pays per block).
    ``unroll`` fixes the loads per thread and group for every dtype (the simulator's
    default, 2, keeps its Python threads short); None takes ``cuda_kernels.unroll``.
    ``stats_threads`` and ``stats_max_blocks`` replace ``threads`` and ``max_blocks`` for
    the statistics kernels (None: the same as the affine kernels'; see
    :func:`stats_config`).
    """

    threads: int
    block_elements: int
    max_blocks: int
    merge_threads: int = 4
    merge_blocks: int | None = None  # finalize blocks; None: one per channel
    unroll: int | None = None  # loads per thread and group; None: by dtype
    stats_threads: int | None = None  # None: threads
    stats_max_blocks: int | None = None  # None: max_blocks


BLOCKS_PER_SM = 24  # affine blocks per multiprocessor and launch (see design.md)
STATS_BLOCKS_PER_SM = 6  # statistics blocks of STATS_THREADS (measured on an H200)
STATS_THREADS = 128


def _default_config() -> LaunchConfig:
    if SIMULATOR:  # each simulated thread is a Python thread: small blocks, few of them
        return LaunchConfig(threads=4, block_elements=64, max_blocks=8, merge_threads=1,
                            merge_blocks=1, unroll=2)
    sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
    return LaunchConfig(threads=256, block_elements=8192, max_blocks=BLOCKS_PER_SM * sms,
                        merge_threads=128, stats_threads=STATS_THREADS,
                        stats_max_blocks=STATS_BLOCKS_PER_SM * sms)


_config: LaunchConfig | None = None
_stats_config: LaunchConfig | None = None


def config() -> LaunchConfig:
    global _config
    if _config is None:
        _config = _default_config()
    return _config


def stats_config() -> LaunchConfig:
    """:func:`config` as the statistics kernels launch it: ``threads`` and ``max_blocks``
    replaced by ``stats_threads`` and ``stats_max_blocks`` where those are set."""
    global _stats_config
    if _stats_config is None:
        cfg = config()
        _stats_config = dataclasses.replace(
            cfg, threads=cfg.stats_threads or cfg.threads,
            max_blocks=cfg.stats_max_blocks or cfg.max_blocks)
    return _stats_config


def set_config(cfg: LaunchConfig | None) -> None:
    """Replace the launch configuration (None: back to the default); for tests and tuning."""
    global _config, _stats_config
    _config, _stats_config = cfg, None


@functools.cache
def _kernels(threads: int, unroll: int | None, dtype: np.dtype, bf16: bool = False):
    """The statistics kernels for inputs of ``dtype`` (one set per kernel family;
    ``bf16``: uint16 bfloat16 bits)."""
    fam = "bf16" if bf16 else kk.family(dtype)
    return _family_kernels(threads, fam, unroll or kk.unroll(dtype))


@functools.cache
def _family_kernels(threads: int, fam: str, unroll: int):
    return kk.make_kernels(threads, fam, unroll)


@functools.cache
def _channel_kernels(threads: int):
    return kk.make_channel_kernels(threads)


@functools.cache
def _affine_kernels(unroll: int, bf16_in: bool = False, bf16_out: bool = False):
    return kk.make_affine_kernels(unroll, bf16_in, bf16_out)


# ---------------------------------------------------------------------------- state
@dataclass
class DeviceStats:
    """``BatchStats`` on the device: int64 (3, C) [count, nan, inf] and float64 (5, C)
    [mean, mean_lo, M2, min, max], plus the stream that last wrote them."""

    ints: Any
    floats: Any
    stream: Any = 0
    top: int = 0  # at least the largest count (exact from a host state, then + n a batch)

    @property
    def num_channels(self) -> int:
        """Number of channels C."""
        return int(self.ints.shape[1])

    @classmethod
    def from_host(cls, st: BatchStats, stream=0) -> DeviceStats:
        """Upload host statistics (on ``stream``)."""
        return cls(cuda.to_device(np.ascontiguousarray(st.ints), stream=stream),
                   cuda.to_device(np.ascontiguousarray(st.floats), stream=stream), stream,
                   int(st.ints.max(initial=0)))

    def to_host(self) -> BatchStats:
        """The statistics as host ``BatchStats`` (waits for the stream)."""
        ints = self.ints.copy_to_host(stream=self.stream)
        floats = self.floats.copy_to_host(stream=self.stream)
        _sync(self.stream)
        return BatchStats(ints, floats)

    def follow(self, stream) -> None:
        """Order later work on ``stream`` after the work already queued on the state."""
        if stream is not self.stream:
            _sync(self.stream)
            self.stream = stream


def _sync(stream) -> None:
    if stream == 0 or stream is None:
        cuda.synchronize()
    else:
        stream.synchronize()


# ------------------------------------------------------------------------ launches
_SIM_LOCK = threading.RLock()


def _sim_serial(fn):
    """Serialize ``fn``'s kernel launches under the simulator, whose launches from two
    Python threads at once share its global block/thread state (a GPU needs no lock)."""
    if not SIMULATOR:
        return fn

    @functools.wraps(fn)
    def serialized(*args, **kwargs):
        with _SIM_LOCK:
            return fn(*args, **kwargs)

    return serialized


# ------------------------------------------------------------------------ workspace
_local = threading.local()  # one workspace per thread: concurrent calls never share one


def _workspace(key, make):
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    ws = cache.get(key)
    if ws is None:
        if len(cache) > 32:
            cache.clear()
        ws = cache[key] = make()
    return ws


def _parts_arrays(nchan: int, nparts: int, stream):
    """The per-block results: int64 (3, C, parts) and float64 (5, C, parts)."""
    return _workspace(("parts", nchan, nparts, id(stream)), lambda: (
        cuda.device_array((3, nchan, nparts), np.int64, stream=stream),
        cuda.device_array((5, nchan, nparts), np.float64, stream=stream)))


def _nparts(per_channel: int, groups: int, cfg: LaunchConfig) -> int:
    """Parts per channel group: enough blocks to fill the device, none too small."""
    by_size = -(-per_channel // cfg.block_elements)
    return int(max(1, min(by_size, max(1, cfg.max_blocks // groups))))


def _lanes(nchan: int, cfg: LaunchConfig) -> int:
    """Channels per block in the channels-last kernels: at most 32.

    Every block writes one part record (56 bytes) per channel it covers, so the records
    of a launch take ``blocks * lanes * 56`` bytes: with all 256 channels of an NHWC
    input in one tile and 24 blocks per SM they would be 22% of a 205 MB input, with
    tiles of 32 channels 3%. A warp still reads 32 consecutive channels (128 bytes of
    float32) per row.
    """
    return min(nchan, 32, cfg.threads)


@_sim_serial
def _launch_partials(can: DeviceInput):
    """Launch the per-block reduction; returns the (C, parts) workspace arrays."""
    cfg = stats_config()
    kern = _kernels(cfg.threads, cfg.unroll, can.dtype, can.bf16)
    nchan = can.channels
    if can.channels_last:
        flat, (s0, s1) = can.checked_flat()
        lanes = _lanes(nchan, cfg)
        tiles = -(-nchan // lanes)
        nparts = _nparts(can.outer * lanes, tiles, cfg)
        parts = _parts_arrays(nchan, nparts, can.stream)
        kern.partial_cl[tiles * nparts, cfg.threads, can.stream](
            flat, can.outer, nchan, s0, s1, nparts, lanes, *parts)
    elif _short_rows(can, cfg):
        flat, (s0, s1, s2) = can.flat()
        nparts = max(1, min(_nparts(can.outer * can.inner, nchan, cfg), can.outer))
        parts = _parts_arrays(nchan, nparts, can.stream)
        kern.partial_rows[nchan * nparts, cfg.threads, can.stream](
            flat, can.outer, nchan, can.inner, s0, s1, s2, nparts, *parts)
    else:
        v = can.checked_view()
        nparts = _nparts(can.outer * can.inner, nchan, cfg)
        parts = _parts_arrays(nchan, nparts, can.stream)
        kern.partial_cf[nchan * nparts, cfg.threads, can.stream](v, nparts, *parts)
    return parts


def _short_rows(can: DeviceInput, cfg: LaunchConfig) -> bool:
    """Channels-first rows shorter than a block: the kernels that give each thread a
    position in the row and step over rows (a block per row would leave most of its
    threads idle and give the others one value each)."""
    return 1 < can.inner < cfg.threads and can.flat() is not None


def empty_state(nchan: int, stream=0) -> DeviceStats:
    return DeviceStats.from_host(BatchStats.empty(nchan), stream)


# ------------------------------------------------------------------ statistics
prepare = canonical


@dataclass
class DevicePartial:
    """The per-block results of one input (in this thread's workspace) and how to
    finish them: what ``reduce`` returns, ``summary`` and ``merge`` take."""

    parts: tuple
    can: DeviceInput
    policy: int


def reduce(can: DeviceInput, policy: int) -> DevicePartial:
    """Launch the per-block reduction of ``can`` (one launch, asynchronous)."""
    return DevicePartial(_launch_partials(can), can, policy)


WEIGHTS = False  # (no weighted kernels: reduce_weighted raises, for any weights)


def reduce_weighted(can: DeviceInput, policy: int, weight: np.ndarray) -> DevicePartial:
    """Weighted statistics are not implemented on the GPU: BackendUnavailableError."""
    raise BackendUnavailableError(
        "sample_weight is not supported by the CUDA backend (no weighted GPU kernels): "
        "update a RunningStats of backend='cpu' or 'auto' with a host (numpy) array, or "
        "update without sample_weight"
    )


def _finalize(can: DeviceInput):
    """The finalize kernel configured for one block per channel of ``can``."""
    cfg = config()
    return _channel_kernels(cfg.merge_threads).finalize[_merge_grid(can.channels, cfg),
                                                         cfg.merge_threads, can.stream]


def _merge_grid(nchan: int, cfg: LaunchConfig) -> int:
    return max(1, min(nchan, cfg.merge_blocks or nchan))


def _new_stats_arrays(nchan: int, stream):
    return (cuda.device_array((3, nchan), np.int64, stream=stream),
            cuda.device_array((5, nchan), np.float64, stream=stream))


@_sim_serial
def summary(part: DevicePartial) -> BatchStats:
    """The batch's own statistics on the host (one launch and a copy)."""
    can = part.can
    bi, bf = _new_stats_arrays(can.channels, can.stream)
    # merge=False: the state arguments are not touched, any arrays of the right type do
    _finalize(can)(part.policy, *part.parts, bi, bf, False, bi, bf)
    return DeviceStats(bi, bf, can.stream).to_host()


@_sim_serial
def merge(state, part: DevicePartial) -> DeviceStats:
    """Finish ``part`` and merge it into ``state`` on the device (one launch). A host
    state is uploaded first, None starts from empty statistics."""
    can = part.can
    if state is None:
        state = empty_state(can.channels, can.stream)
    elif isinstance(state, BatchStats):
        state = DeviceStats.from_host(state, can.stream)
    state.follow(can.stream)
    # the batch adds at most n to a count: the bound is enough to know no merged count
    # passes COUNT_LIMIT, else the exact counts decide (as the CPU backend's merge), so
    # that no update makes a state save cannot load back
    n = can.outer * can.inner
    if state.top > COUNT_LIMIT - n:
        own = summary(part).ints
        ints = state.ints.copy_to_host(stream=state.stream)
        _sync(state.stream)
        if (own > COUNT_LIMIT - ints).any():
            raise count_limit_error(ints, own)
        state.top = int((ints + own).max(initial=0))
    else:
        state.top += n
    bi, bf = _workspace(("batch", can.channels, id(can.stream)),
                        lambda: _new_stats_arrays(can.channels, can.stream))
    _finalize(can)(part.policy, *part.parts, bi, bf, True, state.ints, state.floats)
    return state


# --------------------------------------------------------------------------- affine
class DeviceParams:
    """The per-channel ``[a, s, b]`` of the affine map on the device: ``packed``, a
    float64 (3, C) device array."""

    __slots__ = ("packed",)

    def __init__(self, packed):
        self.packed = packed


def _upload(key, host: np.ndarray, stream):
    """A float64 device copy of ``host``, kept per thread, key and stream, and copied
    again only when the values change: a copy from pageable host memory first waits
    for the stream, which would cost every call its overlap with the GPU."""
    entry = _workspace((key, host.shape, id(stream)), lambda: [
        cuda.device_array(host.shape, np.float64, stream=stream), None])
    dev, last = entry
    # (compared bit for bit: np.array_equal took -0.0 for 0.0, so one module's bias
    # of -0.0 stayed on the device for the next one's 0.0, and NaNs were never equal)
    if last is None or last.tobytes() != host.tobytes():
        dev.copy_to_device(host, stream=stream)
        entry[1] = host.copy()
    return dev


def params(a: np.ndarray, s: np.ndarray, b: np.ndarray, can: DeviceInput,
           owner: Hashable) -> DeviceParams:
    """``[a, s, b]`` on the device: one copy per ``owner`` (the object and direction
    they belong to), thread and stream, uploaded again only when the values change (a
    normalizer's parameters once; BatchNorm's eval map, recomputed on every call, too)."""
    packed = np.stack([a, s, b]).astype(np.float64)
    return DeviceParams(_upload(("params", owner), packed, can.stream))


@dataclass
class DeviceOutput:
    """An output of the affine map: ``target`` what the caller gets (None: a host copy
    of ``dev`` for a numpy input without ``out=``), ``dev`` the device array written
    (``bf16``: a bfloat16 output, ``dev`` its uint16 bits)."""

    target: Any
    dev: Any
    can: DeviceInput
    bf16: bool = False


def prepare_out(out, can: DeviceInput, what: str) -> DeviceOutput:
    """The caller's ``out`` (validated) or a new output of the input's kind."""
    if out is None:  # bfloat16 stays bfloat16 (its bits)
        dtype = np.dtype(np.uint16) if can.bf16 else result_dtype(can.dtype)
        if can.kind == "numpy":
            return DeviceOutput(None, cuda.device_array(can.shape, dtype), can, can.bf16)
        target, dev = empty_like_input(can, dtype, can.bf16)
        return DeviceOutput(target, dev, can, can.bf16)
    target, dev = user_out(out, can, what)
    bf16 = is_bf16_tensor(out)
    check_out(tuple(int(n) for n in dev.shape), np.dtype(np.float32 if bf16 else dev.dtype),
              True, can.shape, what)
    if can.size:  # the strides the kernels need, checked before anything changes
        view = _out_view(can, dev)
        if can.channels_last:
            _checked_out_flat(flat_view(view))
    return DeviceOutput(target, dev, can, bf16)


def result(out: DeviceOutput):
    """What the caller gets back: the output of the input's kind (for host input, numpy,
    or a CPU tensor for a CPU tensor, as the CPU backend)."""
    can = out.can
    if can.kind != "numpy":
        return out.target
    host = out.dev.copy_to_host(stream=can.stream)
    _sync(can.stream)
    target = out.target
    if out.bf16 or is_cpu_tensor(target) or (target is None and is_cpu_tensor(can.array)):
        import torch

        # (bfloat16 bits: a host bfloat16 tensor, numpy has no such dtype)
        values = torch.from_numpy(host.view(np.int16)).view(torch.bfloat16) if out.bf16 \
            else torch.from_numpy(host)
        if target is None:  # laid out as the input (channels_last stays), as on the CPU
            x = can.array  # (expanded: C-contiguous, as _torch_arrays.empty_tensor_out)
            target = torch.empty(x.shape, dtype=values.dtype) if expanded(
                can.shape, x.stride()) else torch.empty_like(x, dtype=values.dtype)
        target.copy_(values)  # (a tensor's version moves: autograd sees the write)
        return target
    if target is None:
        like = can.host  # the CPU backend's new output is np.empty_like of it (order "K")
        if like is None or like.flags.c_contiguous:
            return host
        target = np.empty_like(like, host.dtype)
    target[...] = host
    return target


def affine(can: DeviceInput, params: DeviceParams, out: DeviceOutput) -> None:
    """``out = (x - a[c]) * s[c] + b[c]`` on the device; ``out`` may be the input itself."""
    _affine(can, params, out.dev, out.bf16)


@_sim_serial
def _affine(can: DeviceInput, params: DeviceParams, out_dev, out_bf16: bool = False) -> None:
    target = out_dev
    tmp = None
    if overlaps(can.dev, out_dev):  # a partial overlap: write through a temporary
        tmp = target = cuda.device_array(can.shape, np.dtype(out_dev.dtype),
                                         stream=can.stream)
    o = _out_view(can, target)
    cfg = config()
    kern = _affine_kernels(cfg.unroll or kk.affine_unroll(can.dtype), can.bf16, out_bf16)
    chunk = cfg.threads * max(kern.unroll, 8)  # values per block: 1-4 groups per thread
    short = _short_rows(can, cfg)
    oflat = flat_view(o) if short or can.channels_last else None
    if can.channels_last:
        xf, (xs0, xs1) = can.checked_flat()
        of, (os0, os1) = _checked_out_flat(oflat)
        lanes = _lanes(can.channels, cfg)
        tiles = -(-can.channels // lanes)
        nparts = _nparts(can.outer * lanes, tiles, cfg)
        kern.affine_cl[tiles * nparts, cfg.threads, can.stream](
            xf, xs0, xs1, params.packed, of, os0, os1, can.outer, can.channels, nparts, lanes)
    elif short and oflat is not None:
        xf, (xs0, xs1, xs2) = can.flat()
        of, (os0, os1, os2) = oflat
        nparts = max(1, min(can.outer, -(-(can.outer * can.inner) // chunk)))
        kern.affine_rows[can.channels * nparts, cfg.threads, can.stream](
            xf, xs0, xs1, xs2, params.packed, of, os0, os1, os2, can.outer, can.inner,
            nparts)
    else:
        bpr = -(-can.inner // chunk)
        x3 = can.checked_view()
        per = _cf_rows_per_launch(can.channels, bpr, MAX_GRID_X)
        for o0 in range(0, can.outer, per):  # (one launch, but for 2**31 blocks or more)
            o1 = min(can.outer, o0 + per)
            xs, os_ = (x3, o) if o1 - o0 == can.outer else (x3[o0:o1], o[o0:o1])
            kern.affine_cf[(o1 - o0) * can.channels * bpr, cfg.threads, can.stream](
                xs, params.packed, os_, bpr, chunk)
    if tmp is not None:
        _copy_device(tmp, out_dev, can, out_bf16)


MAX_GRID_X = 2**31 - 1  # blocks of one launch (CUDA's limit along x)


def _cf_rows_per_launch(channels: int, bpr: int, limit: int) -> int:
    """Rows (of the outer axis) of one ``affine_cf`` launch, which takes a block per
    channel row and chunk of ``bpr`` (it does not step over blocks): as many as keep the
    grid within ``limit``. Short rows that have no flat view (a zero row stride, as of
    an expanded tensor, or a negative stride) take a block each: an expanded (2**31, 1,
    2) input asked for 2**31 blocks, and the launch failed."""
    return max(1, limit // max(1, channels * bpr))


def _out_view(can: DeviceInput, dev):
    from .cuda_arrays import reshaped

    shape = (can.outer, can.channels) if can.channels_last else (
        can.outer, can.channels, can.inner)
    v = reshaped(dev, shape)
    if v is None:
        raise ValueError("out cannot be seen as (outer, channel, inner) without a copy; "
                         "pass a contiguous device array")
    return v


def _checked_out_flat(f):
    if f is None:
        raise ValueError("out has a negative stride (a reversed axis) or a zero stride "
                         "along its rows; pass a contiguous device array")
    return f


def _copy_device(src, dst, can: DeviceInput, bf16: bool = False) -> None:
    """dst[...] = src for two device arrays of one shape (an affine map with a=0, s=1,
    b=-0.0: x - 0 keeps x, and x + -0.0 keeps a -0.0 that + 0.0 would make +0.0;
    ``bf16``: both hold bfloat16 bits, copied exactly)."""
    ident = DeviceParams(cuda.to_device(np.stack([np.zeros(can.channels),
                                                  np.ones(can.channels),
                                                  np.full(can.channels, -0.0)])))
    staged = DeviceInput(src, src, "numba", can.stream, can.axis, can.outer, can.channels,
                         can.inner, bf16)
    _affine(staged, ident, dst, bf16)


# ------------------------------------------------------------------------ batchnorm
class DeviceBuffer:
    """BatchNorm's (2, C) float64 running buffer [mean, var] on the device."""

    __slots__ = ("dev", "stream")

    def __init__(self, dev, stream) -> None:
        self.dev = dev
        self.stream = stream

    def to_host(self) -> np.ndarray:
        host = self.dev.copy_to_host(stream=self.stream)
        _sync(self.stream)
        return host

    def keep(self):
        """A device copy (queued on the stream), to put back if a training step fails;
        in a per-thread workspace, as the step's own arrays."""
        dev, stream = self.dev, self.stream
        kept = _workspace(("bn-kept", dev.shape, id(stream)),
                          lambda: cuda.device_array(dev.shape, np.float64, stream=stream))
        kept.copy_to_device(dev, stream=stream)
        return kept

    def restore(self, kept) -> None:
        """Put ``kept`` (:meth:`keep`) back (queued on the stream)."""
        self.dev.copy_to_device(kept, stream=self.stream)


def running(buffer, can: DeviceInput) -> DeviceBuffer:
    """The running buffer on the device (uploaded when it is on the host)."""
    if isinstance(buffer, DeviceBuffer):
        if buffer.stream is not can.stream:
            _sync(buffer.stream)
            buffer.stream = can.stream
        return buffer
    host = np.ascontiguousarray(buffer, dtype=np.float64)
    return DeviceBuffer(cuda.to_device(host, stream=can.stream), can.stream)


def batchnorm_eval(can: DeviceInput, eps: float, weight: np.ndarray, bias: np.ndarray,
                   running: np.ndarray, out: DeviceOutput, owner: Hashable) -> None:
    """Eval mode with running statistics: ``params`` (kept on the device per ``owner``,
    re-sent on change) and the affine map."""
    affine(can, params(running[0], affine_scale(weight, running[1], eps), bias, can, owner),
           out)


@_sim_serial
def batchnorm_train(can: DeviceInput, eps: float, weight: np.ndarray, bias: np.ndarray,
                    running: DeviceBuffer | None, factor: float, out: DeviceOutput) -> None:
    """Training-mode forward on the device: statistics, parameters, running update, map.

    ``running`` (the float64 (2, C) [running_mean, running_var]) is updated in place, or
    None when the running statistics are not tracked.
    """
    nchan = can.channels
    parts = _launch_partials(can)
    params = _workspace(("bn", nchan, id(can.stream)),  # written by finalize_bn
                        lambda: DeviceParams(cuda.device_array((3, nchan), np.float64,
                                                               stream=can.stream)))
    wb = _upload("wb", np.stack([weight, bias]).astype(np.float64), can.stream)
    update = running is not None
    cfg = config()
    _channel_kernels(cfg.merge_threads).finalize_bn[_merge_grid(nchan, cfg), cfg.merge_threads,
                                                    can.stream](
        *parts, float(eps), wb, params.packed, update, float(factor),
        running.dev if running is not None else params.packed)
    _affine(can, params, out.dev, out.bf16)
