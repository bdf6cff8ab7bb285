"""The CUDA backend: launch configuration, device state, and the operations on it.

Imported by :func:`nbbn.backends.resolve` only when a device array or
``backend="cuda"`` asks for it (``import nbbn`` never imports ``numba.cuda``). The
operations mirror the CPU backend's, on device data:

* ``canonical(x, axis, what)``: validate and wrap the input (:mod:`.cuda_arrays`);
* ``accumulate(state, can, policy) -> DeviceStats``: batch statistics merged into a
  running state that stays on the device (two launches);
* ``batch_stats(can, policy) -> DeviceStats``: the batch's own statistics;
* ``prepare_params(a, s, b)``, ``prepare_out(out, can, what)``, ``affine(...)`` and
  ``result(...)``: the per-channel affine map into an output of the input's kind;
* ``batchnorm_train(...)``: statistics, affine parameters, running-buffer update and
  the normalized output, in three launches.

Only per-channel numbers cross to the host, and only when the state is read.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import cuda

from . import cuda_kernels as kk
from ._stats import BatchStats
from .cuda_arrays import (
    SIMULATOR,
    DeviceInput,
    canonical,
    empty_like_input,
    flat_view,
    overlaps,
    user_out,
)

__all__ = ["name", "canonical", "accumulate", "batch_stats", "DeviceStats", "LaunchConfig"]

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
    """

    threads: int
    block_elements: int
    max_blocks: int
    merge_threads: int = 4
    merge_blocks: int | None = None  # finalize blocks; None: one per channel
    unroll: int | None = None  # loads per thread and group; None: by dtype (32 bytes)


BLOCKS_PER_SM = 24  # statistics blocks per multiprocessor and launch (see design.md)


def _default_config() -> LaunchConfig:
    if SIMULATOR:  # each simulated thread is a Python thread: small blocks, few of them
        return LaunchConfig(threads=4, block_elements=64, max_blocks=8, merge_threads=1,
                            merge_blocks=1, unroll=2)
    sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
    return LaunchConfig(threads=256, block_elements=8192, max_blocks=BLOCKS_PER_SM * sms,
                        merge_threads=128)


_config: LaunchConfig | None = None


def config() -> LaunchConfig:
    global _config
    if _config is None:
        _config = _default_config()
    return _config


def set_config(cfg: LaunchConfig | None) -> None:
    """Replace the launch configuration (None: back to the default); for tests and tuning."""
    global _config
    _config = cfg


@functools.lru_cache(maxsize=None)
def _kernels(threads: int, unroll: int | None, dtype: np.dtype):
    """The statistics kernels for inputs of ``dtype`` (one set per kernel family)."""
    return _family_kernels(threads, kk.family(dtype), unroll or kk.unroll(dtype))


@functools.lru_cache(maxsize=None)
def _family_kernels(threads: int, fam: str, unroll: int):
    return kk.make_kernels(threads, fam, unroll)


@functools.lru_cache(maxsize=None)
def _channel_kernels(threads: int):
    return kk.make_channel_kernels(threads)


@functools.lru_cache(maxsize=None)
def _affine_kernels(unroll: int):
    return kk.make_affine_kernels(unroll)


# ---------------------------------------------------------------------------- state
@dataclass
class DeviceStats:
    """``BatchStats`` on the device: int64 (3, C) [count, nan, inf] and float64 (4, C)
    [mean, M2, min, max], plus the stream that last wrote them."""

    ints: Any
    floats: Any
    stream: Any = 0

    @property
    def num_channels(self) -> int:
        return int(self.ints.shape[1])

    @classmethod
    def from_host(cls, st: BatchStats, stream=0) -> DeviceStats:
        ints = np.stack([st.count, st.nan, st.inf]).astype(np.int64)
        floats = np.stack([st.mean, st.m2, st.min, st.max]).astype(np.float64)
        return cls(cuda.to_device(ints, stream=stream), cuda.to_device(floats, stream=stream),
                   stream)

    def to_host(self) -> BatchStats:
        ints = self.ints.copy_to_host(stream=self.stream)
        floats = self.floats.copy_to_host(stream=self.stream)
        _sync(self.stream)
        return BatchStats(ints[0], floats[0], floats[1], floats[2], floats[3], ints[1], ints[2])

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
    """The per-block results: int64 (3, C, parts) and float64 (4, C, parts)."""
    return _workspace(("parts", nchan, nparts, id(stream)), lambda: (
        cuda.device_array((3, nchan, nparts), np.int64, stream=stream),
        cuda.device_array((4, nchan, nparts), np.float64, stream=stream)))


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


def _launch_partials(can: DeviceInput):
    """Launch the per-block reduction; returns the (C, parts) workspace arrays."""
    cfg = config()
    kern = _kernels(cfg.threads, cfg.unroll, can.dtype)
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


def _per_channel_grid(nchan: int) -> tuple[int, int]:
    threads = min(128, config().threads)
    return -(-nchan // threads), threads


def empty_state(nchan: int, stream=0) -> DeviceStats:
    return DeviceStats.from_host(BatchStats.empty(nchan), stream)


def accumulate(state: DeviceStats | None, can: DeviceInput, policy: int) -> DeviceStats:
    """Merge the statistics of ``can`` into ``state`` (created when None), on the device:
    two launches, no allocation after the first call."""
    if state is None:
        state = empty_state(can.channels, can.stream)
    state.follow(can.stream)
    parts = _launch_partials(can)
    bi, bf = _workspace(("batch", can.channels, id(can.stream)),
                        lambda: _new_stats_arrays(can.channels, can.stream))
    _finalize(can)(policy, *parts, bi, bf, True, state.ints, state.floats)
    return state


def _finalize(can: DeviceInput):
    """The finalize kernel configured for one block per channel of ``can``."""
    cfg = config()
    return _channel_kernels(cfg.merge_threads).finalize[_merge_grid(can.channels, cfg),
                                                         cfg.merge_threads, can.stream]


def _merge_grid(nchan: int, cfg: LaunchConfig) -> int:
    return max(1, min(nchan, cfg.merge_blocks or nchan))


def _new_stats_arrays(nchan: int, stream):
    return (cuda.device_array((3, nchan), np.int64, stream=stream),
            cuda.device_array((4, nchan), np.float64, stream=stream))


def batch_stats(can: DeviceInput, policy: int) -> DeviceStats:
    """The statistics of one input, as a new ``DeviceStats``."""
    parts = _launch_partials(can)
    bi, bf = _new_stats_arrays(can.channels, can.stream)
    # merge=False: the state arguments are not touched, any arrays of the right type do
    _finalize(can)(policy, *parts, bi, bf, False, bi, bf)
    return DeviceStats(bi, bf, can.stream)


def merge(state: DeviceStats | None, batch: DeviceStats) -> DeviceStats:
    """Merge ``batch`` into ``state`` on the device (``state`` None: ``batch`` itself)."""
    if state is None:
        return batch
    state.follow(batch.stream)
    grid, threads = _per_channel_grid(state.num_channels)
    kk.merge_state[grid, threads, state.stream](state.ints, state.floats, batch.ints,
                                                batch.floats)
    return state


# --------------------------------------------------------------------------- affine
class DeviceParams:
    """The per-channel ``[a, s, b]`` of the affine map on the device: ``packed``, a
    float64 (3, C) device array."""

    __slots__ = ("packed",)

    def __init__(self, packed):
        self.packed = packed


def _pack(a: np.ndarray, s: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack([a, s, b]).astype(np.float64)


def prepare_params(a: np.ndarray, s: np.ndarray, b: np.ndarray) -> DeviceParams:
    return DeviceParams(cuda.to_device(_pack(a, s, b)))


def _upload(key, host: np.ndarray, stream):
    """A float64 device copy of ``host``, kept per thread, key and stream, and copied
    again only when the values change: a copy from pageable host memory first waits
    for the stream, which would cost every call its overlap with the GPU."""
    entry = _workspace((key, host.shape, id(stream)), lambda: [
        cuda.device_array(host.shape, np.float64, stream=stream), None])
    dev, last = entry
    if last is None or not np.array_equal(last, host):
        dev.copy_to_device(host, stream=stream)
        entry[1] = host.copy()
    return dev


def cached_params(a: np.ndarray, s: np.ndarray, b: np.ndarray, stream=0) -> DeviceParams:
    """``prepare_params`` for parameters that are recomputed on every call but rarely
    change (BatchNorm in eval mode): uploaded only when their values change."""
    return DeviceParams(_upload("params", _pack(a, s, b), stream))


def prepare_out(out, can: DeviceInput, dtype: np.dtype, what: str):
    """``(user array, device array)``; ``out=None`` allocates one of the input's kind."""
    if out is None:
        if can.kind == "numpy":
            dev = cuda.device_array(can.shape, dtype)
            return None, dev
        return empty_like_input(can, dtype)
    target, dev = user_out(out, can, what)
    shape = tuple(int(n) for n in dev.shape)
    if shape != can.shape:
        raise ValueError(f"out must have the shape of {what} {can.shape}, got {shape}")
    dt = np.dtype(dev.dtype)
    if dt.kind != "f" or dt.itemsize not in (2, 4, 8):
        raise ValueError(f"out must have a float16/32/64 dtype, got {dt}")
    return target, dev


def affine(can: DeviceInput, params: DeviceParams, out_dev) -> None:
    """``out = (x - a[c]) * s[c] + b[c]`` on the device; ``out`` may be the input itself."""
    target = out_dev
    tmp = None
    if overlaps(can.dev, out_dev):  # a partial overlap: write through a temporary
        tmp = target = cuda.device_array(can.shape, np.dtype(out_dev.dtype),
                                         stream=can.stream)
    o = _out_view(can, target)
    cfg = config()
    kern = _affine_kernels(cfg.unroll or kk.affine_unroll(can.dtype))
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
        kern.affine_cf[can.outer * can.channels * bpr, cfg.threads, can.stream](
            can.checked_view(), params.packed, o, bpr, chunk)
    if tmp is not None:
        _copy_device(tmp, out_dev, can)


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
        raise ValueError("out has a negative or zero row stride; pass a contiguous device "
                         "array")
    return f


def _copy_device(src, dst, can: DeviceInput) -> None:
    """dst[...] = src for two device arrays of one shape (an affine map with a=0, s=1)."""
    ident = prepare_params(np.zeros(can.channels), np.ones(can.channels),
                           np.zeros(can.channels))
    staged = DeviceInput(src, src, "numba", can.stream, can.axis, can.outer, can.channels,
                         can.inner)
    affine(staged, ident, dst)


def result(target, out_dev, can: DeviceInput):
    """What the user gets back: the output of the input's kind (numpy for numpy input)."""
    if can.kind != "numpy":
        return target
    host = out_dev.copy_to_host(stream=can.stream)
    _sync(can.stream)
    if target is None:
        return host
    target[...] = host
    return target


# ------------------------------------------------------------------------ batchnorm
def batchnorm_train(can: DeviceInput, eps: float, weight: np.ndarray, bias: np.ndarray,
                    running, factor: float, out_dev) -> None:
    """Training-mode forward on the device: statistics, parameters, running update, map.

    ``running`` is a float64 (2, C) device array [running_mean, running_var], updated in
    place, or None when the running statistics are not tracked.
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
        running if update else params.packed)
    affine(can, params, out_dev)


def to_device(host: np.ndarray, stream=0):
    return cuda.to_device(np.ascontiguousarray(host), stream=stream)


def to_host(dev, stream=0) -> np.ndarray:
    host = dev.copy_to_host(stream=stream)
    _sync(stream)
    return host
