"""``nbbn.torch.recompute_bn_stats``: exact precise BN against a float64 reference over all
activations, batching, torch.distributed (gloo, 2 spawned processes), restoring state."""

from __future__ import annotations

import copy
import datetime
import os
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nbbn.torch as nt  # noqa: E402

N = 45  # 45 = 6 * 7 + 3: batch size 7 leaves a ragged last batch


def _net(seed: int = 0):
    torch.manual_seed(seed)
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 5, 3), nn.BatchNorm2d(5, momentum=None), nn.ReLU(),
        nn.Dropout(0.5),
        nn.Conv2d(5, 4, 1), nn.BatchNorm2d(4),
    )
    with torch.no_grad():  # running buffers far from the answer
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.fill_(7.0)
                m.running_var.fill_(0.25)
    return net.eval()


def _data(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 3, 6, 6, generator=g) * 2.0 + 3.0


def _bn_names(net):
    return [n for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]


def _reference(net, batches):
    """Every BatchNorm's input over the same batches (batch statistics, other modules in
    their mode), concatenated and reduced in float64 by numpy."""
    ref = copy.deepcopy(net)
    acts: dict[str, list[np.ndarray]] = {n: [] for n in _bn_names(ref)}
    hooks = []
    for name in acts:
        m = ref.get_submodule(name)
        m.train()
        hooks.append(m.register_forward_pre_hook(
            lambda mod, a, name=name: acts[name].append(a[0].double().numpy())))
    with torch.no_grad():
        for b in batches:
            ref(b)
    for h in hooks:
        h.remove()
    out = {}
    for name, parts in acts.items():
        a = np.concatenate(parts).transpose(1, 0, 2, 3).reshape(len(parts[0][0]), -1)
        mean = a.mean(axis=1)
        var = ((a - mean[:, None]) ** 2).sum(axis=1) / (a.shape[1] - 1)
        out[name] = (mean, var, a.shape[1])
    return out


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_matches_float64_reference(batch_size):
    net, x = _net(), _data()
    batches = list(torch.split(x, batch_size))
    ref = _reference(net, batches)
    got = nt.recompute_bn_stats(net, batches, progress=False)
    assert sorted(got) == sorted(ref)
    for name, (mean, var, count) in ref.items():
        m = net.get_submodule(name)
        rs = got[name]
        assert (rs.count == count).all()
        assert _rel(rs.mean, mean) <= 1e-12 and _rel(rs.variance(ddof=1), var) <= 1e-12
        # float32 buffers: one rounding of the exact values
        assert _rel(m.running_mean.numpy(), mean) <= 1e-6, name
        assert _rel(m.running_var.numpy(), var) <= 1e-6, name
        assert int(m.num_batches_tracked) == len(batches)
        assert m.momentum == (None if name == "4" else 0.1)
    assert not net.training and not any(m.training for m in net.modules())
    assert all(not m._forward_pre_hooks for m in net.modules())


def test_same_buffers_for_any_batching():
    """A BatchNorm's input that does not depend on the batching gives the same statistics
    for batch sizes 1, 7 (ragged last batch) and 32: exactly for a BatchNorm on the data,
    to float32 rounding after a conv (torch's float32 conv rounds differently for other
    batch sizes). torch's update_bn weighs every batch equally, so its ragged last batch
    moves the result. (Deeper layers see inputs normalized with batch statistics, which
    depend on the batch size, as in training.)"""
    x = _data()
    results = []
    for bs in (1, 7, 32, N):
        on_data, net = torch.nn.Sequential(torch.nn.BatchNorm2d(3)), _net()
        exact = nt.recompute_bn_stats(on_data, torch.split(x, bs), progress=False)["0"]
        got = nt.recompute_bn_stats(net, torch.split(x, bs), progress=False)["1"]
        results.append((exact.mean, exact.variance(ddof=1), on_data[0].running_var.clone(),
                        got.mean, got.variance(ddof=1)))
    last = results[-1]
    for mean, var, buf, conv_mean, conv_var in results[:-1]:
        np.testing.assert_allclose(mean, last[0], rtol=1e-14)
        np.testing.assert_allclose(var, last[1], rtol=1e-14)
        assert torch.equal(buf, last[2])
        assert _rel(conv_mean, last[3]) <= 1e-6 and _rel(conv_var, last[4]) <= 1e-6
    swa = _net()
    torch.optim.swa_utils.update_bn(torch.split(x, 7), swa)
    assert _rel(swa[1].running_var.numpy(), last[4]) > 1e-3


def test_num_samples_tuples_and_device():
    x = _data()
    y = torch.zeros(N)
    net, ref_net = _net(), _net()
    batches = [(a, b) for a, b in zip(torch.split(x, 7), torch.split(y, 7), strict=True)]
    got = nt.recompute_bn_stats(net, batches, num_samples=17, device="cpu", progress=True)
    ref = _reference(ref_net, [x[0:7], x[7:14], x[14:17]])
    for name, (mean, var, _) in ref.items():
        assert got[name].count[0] == ref[name][2]
        assert _rel(got[name].mean, mean) <= 1e-12 and _rel(got[name].variance(1), var) <= 1e-12
    assert int(net[1].num_batches_tracked) == 3


def test_sync_lazy_and_untracked_layers():
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4), nn.LazyBatchNorm2d(),
                        nn.BatchNorm2d(4, track_running_stats=False))
    x = _data()
    with pytest.raises(ValueError, match="uninitialized lazy"):
        nt.recompute_bn_stats(net, [x], progress=False)
    net(x[:4])  # initializes the lazy layer
    ref = _reference_any(net, [x[:20], x[20:]])
    got = nt.recompute_bn_stats(net, [x[:20], x[20:]], progress=False)
    assert sorted(got) == ["1", "2"]
    for name in ("1", "2"):
        # the mean of a normalized input is ~0: compare it on the scale of the std
        np.testing.assert_allclose(got[name].mean, ref[name][0], rtol=1e-12,
                                   atol=1e-12 * np.sqrt(ref[name][1].max()))
        assert _rel(got[name].variance(ddof=1), ref[name][1]) <= 1e-12
        assert _rel(net.get_submodule(name).running_var.numpy(), ref[name][1]) <= 1e-6


def _reference_any(net, batches):
    acts: dict[str, list] = {}
    ref = copy.deepcopy(net).train()
    for name, m in ref.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            acts[name] = []
            m.register_forward_pre_hook(lambda mod, a, n=name: acts[n].append(a[0].double()))
    with torch.no_grad():
        for b in batches:
            ref(b)
    out = {}
    for name, parts in acts.items():
        a = torch.cat(parts).transpose(0, 1).reshape(parts[0].shape[1], -1).numpy()
        out[name] = (a.mean(axis=1), a.var(axis=1, ddof=1))
    return out


class _Boom(torch.nn.Module):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.calls, self.after = 0, after

    def forward(self, x):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("boom")
        return x


def test_exception_restores_modes_hooks_and_buffers():
    net = _net()
    net.append(_Boom(after=2))
    net[0].train()  # a mixed set of modes
    net[6].train()
    modes = [m.training for m in net.modules()]
    momenta = [m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    state = copy.deepcopy(net.state_dict())
    pre_hooks = {id(m): len(m._forward_pre_hooks) for m in net.modules()}
    with pytest.raises(RuntimeError, match="boom"):
        nt.recompute_bn_stats(net, torch.split(_data(), 7), progress=False)
    assert [m.training for m in net.modules()] == modes
    assert [m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)] == momenta
    assert {id(m): len(m._forward_pre_hooks) for m in net.modules()} == pre_hooks
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_bad_data_leaves_buffers():
    net = _net()
    state = copy.deepcopy(net.state_dict())
    with pytest.raises(ValueError, match="no samples"):
        nt.recompute_bn_stats(net, [], progress=False)
    with pytest.raises(TypeError, match="tensor"):
        nt.recompute_bn_stats(net, [np.zeros((2, 3, 6, 6), np.float32)], progress=False)
    with pytest.raises(ValueError, match="num_samples"):
        nt.recompute_bn_stats(net, [_data()], num_samples=0, progress=False)
    with pytest.raises(TypeError, match="num_samples must be a positive int or None, got 1.5"):
        nt.recompute_bn_stats(net, [_data()], num_samples=1.5, progress=False)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got function"):
        nt.recompute_bn_stats(lambda x: x, [_data()], progress=False)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert nt.recompute_bn_stats(torch.nn.Linear(2, 2), [torch.zeros(1, 2)]) == {}


# ------------------------------------------------------------------ torch.distributed
def _dist_worker(rank: int, world: int, folder: str, batch_size: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                            world_size=world)
    try:
        net, net_eval = _net(), _net()
        batches = list(torch.split(_data(), batch_size))[rank::world]
        got = nt.recompute_bn_stats(net, batches, progress=False)
        got_eval = nt.recompute_bn_stats(net_eval, batches, progress=False, mode="eval")
        out = {"buffers": net.state_dict(),
               "stats": {k: (rs.mean, rs.variance(ddof=1)) for k, rs in got.items()},
               "eval_buffers": net_eval.state_dict(),
               "eval_stats": {k: (rs.mean, rs.variance(ddof=1)) for k, rs in got_eval.items()}}
        torch.save(out, os.path.join(folder, f"rank{rank}.pt"))
        # both ranks done before either tears gloo down: a rank that destroyed the group
        # while the other was still in a collective aborted once, under a loaded suite
        # ("terminate called without an active exception", SIGABRT)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_distributed_gloo_two_ranks(tmp_path):
    import torch.multiprocessing as mp

    bs = 4
    single, single_eval = _net(), _net()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: torch's float32 conv rounds per thread count
    try:
        want = nt.recompute_bn_stats(single, torch.split(_data(), bs), progress=False)
        want_eval = nt.recompute_bn_stats(single_eval, torch.split(_data(), bs),
                                          progress=False, mode="eval")
    finally:
        torch.set_num_threads(threads)
    mp.spawn(_dist_worker, args=(2, str(tmp_path), bs), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for k, v in ranks[0]["buffers"].items():
        assert torch.equal(v, ranks[1]["buffers"][k]), k  # identical on every rank
    for name, rs in want.items():
        for r in ranks:
            mean, var = r["stats"][name]
            assert np.array_equal(mean, ranks[0]["stats"][name][0])
            np.testing.assert_allclose(mean, rs.mean, rtol=1e-12)
            np.testing.assert_allclose(var, rs.variance(ddof=1), rtol=1e-12)
        buf = ranks[0]["buffers"]
        np.testing.assert_allclose(buf[f"{name}.running_var"].numpy(),
                                   single.get_submodule(name).running_var.numpy(), rtol=1e-6)
        assert int(buf[f"{name}.num_batches_tracked"]) == len(torch.split(_data(), bs))
    # mode="eval": each layer merged over the ranks before the next layer's pass
    for k, v in ranks[0]["eval_buffers"].items():
        assert torch.equal(v, ranks[1]["eval_buffers"][k]), k
    assert sorted(want_eval) == sorted(ranks[0]["eval_stats"])
    for name, rs in want_eval.items():
        mean, var = ranks[0]["eval_stats"][name]
        assert np.array_equal(var, ranks[1]["eval_stats"][name][1])
        # a buffer rounded the other way upstream moves the activations by float32 rounding
        assert _sd_close(mean, rs.mean, var, 1e-6) and _rel(var, rs.variance(ddof=1)) <= 1e-6
        np.testing.assert_allclose(ranks[0]["eval_buffers"][f"{name}.running_var"].numpy(),
                                   single_eval.get_submodule(name).running_var.numpy(), rtol=1e-6)


def test_bfloat16_and_float64_models():
    x = _data()
    for dtype in (torch.bfloat16, torch.float64):
        net = torch.nn.Sequential(torch.nn.BatchNorm2d(3)).to(dtype)
        xd = x.to(dtype)
        got = nt.recompute_bn_stats(net, torch.split(xd, 7), progress=False)["0"]
        a = xd.double().numpy().transpose(1, 0, 2, 3).reshape(3, -1)
        assert _rel(got.mean, a.mean(axis=1)) <= 1e-12
        assert _rel(got.variance(ddof=1), a.var(axis=1, ddof=1)) <= 1e-12
        assert net[0].running_var.dtype == dtype


# ------------------------------------------------------------------ mode="eval"
def _eval_reference(net, x):
    """Layer by layer in forward order: the eval-mode model run over all of ``x`` at once,
    each BatchNorm's input reduced in float64 by numpy and written into its buffers (in
    the model's dtype) before the next layer's input is taken."""
    ref = copy.deepcopy(net).eval()
    out = {}
    for name in _bn_names(ref):
        m = ref.get_submodule(name)
        seen: list[np.ndarray] = []
        h = m.register_forward_pre_hook(
            lambda mod, a, seen=seen: seen.append(a[0].double().numpy()))
        with torch.no_grad():
            ref(x)
        h.remove()
        a = seen[0].transpose(1, 0, 2, 3).reshape(seen[0].shape[1], -1)
        mean, var = a.mean(axis=1), ((a - a.mean(axis=1)[:, None]) ** 2).sum(1) / (a.shape[1] - 1)
        with torch.no_grad():
            m.running_mean.copy_(torch.from_numpy(mean))
            m.running_var.copy_(torch.from_numpy(var))
        out[name] = (mean, var, a.shape[1])
    return out


def _sd_close(mean, ref_mean, ref_var, tol):
    """The mean to ``tol`` on the scale of the std (a mean near 0 has no relative error)."""
    return bool(np.all(np.abs(np.asarray(mean) - ref_mean) <= tol * np.sqrt(ref_var)))


class _Count(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eval_mode_same_buffers_for_any_batching(dtype):
    """mode="eval" gives every layer the statistics of the deployed eval-mode model, so
    batch sizes 1, 7 (ragged last batch), 32 (ragged) and 45 agree: to 1e-12 in a float64
    model; in a float32 one to float32 rounding (torch's conv rounds differently per
    batch size; measured 4e-8), against the layer-by-layer float64 reference."""
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    x = _data().to(dtype)
    ref = _eval_reference(_net().to(dtype), x)
    buffers = []
    for bs in (1, 7, 32, N):
        net = _net().to(dtype)
        tail = _Count()
        net.append(tail)
        net.train(bs == 32)  # 32: dropout on; mode="eval" runs the whole model in eval mode
        got = nt.recompute_bn_stats(net, torch.split(x, bs), progress=False, mode="eval")
        assert sorted(got) == sorted(ref)
        for name, (mean, var, count) in ref.items():
            rs, m = got[name], net.get_submodule(name)
            assert (rs.count == count).all()
            assert _sd_close(rs.mean, mean, var, tol), (bs, name)
            assert _rel(rs.variance(ddof=1), var) <= tol, (bs, name)
            assert _rel(m.running_var.double().numpy(), var) <= max(tol, 1e-6)
            assert m.running_var.dtype == dtype
            assert int(m.num_batches_tracked) == len(torch.split(x, bs))
        # the first pass's forwards run to the end (the order, and each layer's uses
        # per forward); the later passes stop at their layer's last use
        assert tail.calls == len(torch.split(x, bs))
        assert all(m.training == (bs == 32) for m in net.modules())
        assert all(not m._forward_pre_hooks for m in net.modules())
        buffers.append({k: v for k, v in net.state_dict().items() if "running" in k})
    for b in buffers[1:]:
        for k, v in b.items():
            torch.testing.assert_close(v, buffers[0][k], rtol=max(tol, 1e-6), atol=0)


def test_eval_mode_num_samples_tuples_and_a_layer_used_twice():
    x = _data()
    net = _net()
    batches = [(a, torch.zeros(len(a))) for a in torch.split(x, 7)]
    got = nt.recompute_bn_stats(net, batches, num_samples=17, device="cpu", progress=True,
                                mode="eval")
    ref = _eval_reference(_net(), x[:17])
    for name, (mean, var, count) in ref.items():
        assert got[name].count[0] == count
        assert _sd_close(got[name].mean, mean, var, 1e-6)
        assert _rel(got[name].variance(ddof=1), var) <= 1e-6
        assert int(net.get_submodule(name).num_batches_tracked) == 3

    class Twice(torch.nn.Module):  # one BatchNorm used twice in a forward
        def __init__(self) -> None:
            super().__init__()
            self.bn, self.conv, self.head = (torch.nn.BatchNorm2d(3), torch.nn.Conv2d(3, 3, 1),
                                             torch.nn.BatchNorm2d(3))

        def forward(self, x):
            return self.head(self.bn(self.conv(self.bn(x))))

    twice = Twice().eval()
    old = copy.deepcopy(twice)
    got = nt.recompute_bn_stats(twice, torch.split(x, 7), progress=False, mode="eval")
    assert list(got) == ["bn", "head"]  # the order they first run in
    assert got["bn"].count[0] == 2 * N * 36 and int(twice.bn.num_batches_tracked) == 14
    assert got["head"].count[0] == N * 36
    with torch.no_grad():  # both uses; the second one after the old buffers (itself)
        both = torch.cat([x, old.conv(old.bn(x))]).double().numpy()
    a = both.transpose(1, 0, 2, 3).reshape(3, -1)
    assert _rel(got["bn"].variance(ddof=1), a.var(axis=1, ddof=1)) <= 1e-6


def test_eval_mode_exception_restores_modes_hooks_and_buffers():
    net = _net()
    written = []

    class Boom(_Boom):  # between the first and the second BatchNorm
        def forward(self, x):
            if self.calls == self.after:
                written.append(net[1].running_var.clone())
            return super().forward(x)

    # the first pass's whole forwards (one per batch), then 2 batches of layer 2's pass
    net.insert(3, Boom(after=len(torch.split(_data(), 7)) + 2))
    net[0].train()
    net[7].train()
    modes = [m.training for m in net.modules()]
    state = copy.deepcopy(net.state_dict())
    with pytest.raises(RuntimeError, match="boom"):
        nt.recompute_bn_stats(net, torch.split(_data(), 7), progress=False, mode="eval")
    assert not torch.equal(written[0], state["1.running_var"])  # written before the raise
    assert [m.training for m in net.modules()] == modes
    assert all(not m._forward_pre_hooks for m in net.modules())
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_eval_mode_refuses_a_one_shot_iterator():
    net = _net()
    state = copy.deepcopy(net.state_dict())
    batches = list(torch.split(_data(), 7))
    it = iter(batches)
    for data in (it, (b for b in batches), map(lambda b: b, batches)):
        with pytest.raises(TypeError, match="re-iterable"):
            nt.recompute_bn_stats(net, data, progress=False, mode="eval")
    assert next(it) is batches[0]  # nothing was read
    with pytest.raises(ValueError, match="mode"):
        nt.recompute_bn_stats(net, batches, progress=False, mode="train")
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k
    # a Dataset of batches is re-iterable (by index)
    ds = torch.utils.data.TensorDataset(torch.stack(batches[:6]))
    got = nt.recompute_bn_stats(net, ds, progress=False, mode="eval")
    assert int(net[1].num_batches_tracked) == 6 and got["1"].count[0] == 42 * 36


def test_bench_smoke():
    import io

    from nbbn.cli import build_parser
    from nbbn.tools.bench_precise_bn import run_precise_bn_bench

    assert build_parser().parse_args(["bench", "--torch"]).torch

    out = io.StringIO()
    res = run_precise_bn_bench(quick=True, repeats=1, file=out)
    assert res["speed"]["nbbn_over_forward"] > 0
    assert res["speed"]["nbbn_eval_over_forward"] > 0
    assert res["accuracy"]["nbbn"] < 1e-6  # the float32 rounding of the buffer
    assert "recompute_bn_stats" in out.getvalue()


def test_a_last_batch_of_one_sample_is_explained():
    """mode="batch" with num_samples that leaves one sample: torch's BatchNorm1d refuses
    it in training mode; the error says why, and the buffers are as they were."""
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    y = torch.randn(64, 3)
    before = mlp[1].running_mean.clone()
    with pytest.raises(ValueError, match="num_samples=33 cut the last batch to 1 sample"):
        nt.recompute_bn_stats(mlp, [y[:32], y[32:]], num_samples=33, progress=False)
    assert torch.equal(before, mlp[1].running_mean)


def test_a_torch_compiled_model_with_a_cold_kernel_cache(tmp_path):
    """torch.compile traced the pre-hooks into nbbn and numba's compiler, which failed
    ("exception table entry start instruction has no offset") whenever the kernel was
    not in numba's disk cache yet: a fresh machine, a new dtype. A fresh cache folder in
    a subprocess, both modes, against the float64 reference."""
    import subprocess
    import sys

    code = """if True:
        import torch, nbbn.torch as nt
        torch.manual_seed(0)
        data = [torch.randn(8, 3, 6, 6) for _ in range(3)]
        for mode in ("batch", "eval"):
            m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
            cm = torch.compile(m, backend="eager")
            cm(data[0])
            stats = nt.recompute_bn_stats(cm, data, progress=False, mode=mode)
            with torch.no_grad():
                a = torch.cat([m[0](x) for x in data]).double().transpose(0, 1).reshape(4, -1)
            err = ((m[1].running_var.double() - a.var(1)).abs() / a.var(1)).max().item()
            assert list(stats) == ["_orig_mod.1"] and err < 1e-6, (mode, list(stats), err)
        print("ok")
    """
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=env, timeout=600)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-3000:]


class _KwModel(torch.nn.Module):
    """A model of two keyword inputs: the net on ``image + shift``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _net()

    def forward(self, image, shift):
        return self.net(image + shift)


class _DictModel(_KwModel):
    """A model that takes a dict batch (as detectron2's take lists of dicts)."""

    def forward(self, batch):
        return super().forward(**batch)


@pytest.mark.parametrize("mode", ["batch", "eval"])
def test_forward_passes_items_unchanged(mode, capsys):
    """``forward=`` gets each item as it comes (a dict here, or keyword inputs): the same
    statistics as the tensors themselves, in both modes; the bar counts batches."""
    x = _data()
    parts = torch.split(x, 7)
    items = [{"image": p - 1.0, "shift": torch.ones(())} for p in parts]
    dict_model, plain = _DictModel(), _net()
    got = nt.recompute_bn_stats(dict_model, items, forward=lambda m, b: m(b), mode=mode)
    ref = nt.recompute_bn_stats(plain, list(parts), progress=False, mode=mode)
    assert sorted(got) == [f"net.{name}" for name in sorted(ref)]
    for name in ref:
        ours = got[f"net.{name}"]
        np.testing.assert_array_equal(ours.count, ref[name].count)
        assert _rel(ours.mean, ref[name].mean) <= 1e-6
        assert _rel(ours.variance(ddof=1), ref[name].variance(ddof=1)) <= 1e-6
        assert int(dict_model.net.get_submodule(name).num_batches_tracked) == len(parts)
    assert "batch" in capsys.readouterr().err
    kw = _KwModel()
    got_kw = nt.recompute_bn_stats(kw, items, progress=False, mode=mode,
                                   forward=lambda m, b: m(**b))
    assert sorted(got_kw) == sorted(got)
    for a, b in zip(kw.state_dict().values(), dict_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_forward_refuses_what_it_cannot_do():
    """``num_samples`` and ``device`` need the input tensor, which ``forward=`` hides; a
    dict item without ``forward`` points to it. Nothing is changed."""
    model = _DictModel()
    state = copy.deepcopy(model.state_dict())
    items = [{"image": _data(), "shift": torch.zeros(())}]

    def fwd(m, b):
        return m(b)

    with pytest.raises(ValueError, match="num_samples=5 cannot be used with forward="):
        nt.recompute_bn_stats(model, items, forward=fwd, num_samples=5, progress=False)
    with pytest.raises(ValueError, match="device='cpu' cannot be used with forward="):
        nt.recompute_bn_stats(model, items, forward=fwd, device="cpu", progress=False)
    with pytest.raises(TypeError, match="forward must be a callable"):
        nt.recompute_bn_stats(model, items, forward="m(b)", progress=False)
    with pytest.raises(TypeError, match=r"got dict; for other items .* pass forward="):
        nt.recompute_bn_stats(model, items, progress=False)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_eval_mode_forward_calling_the_model_any_number_of_times():
    """With ``forward=``, an item may hold any number of inputs (a list, one model call
    each): ``mode="eval"`` runs whole forwards then, where it stops a pass once a layer
    has read its first item's number of inputs (which dropped the rest, found in
    review). The first BatchNorm gets the exact statistics of every input."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 3),
                                torch.nn.BatchNorm1d(3)).eval()
    data = [[torch.randn(4, 3), torch.randn(4, 3) + 5],
            [torch.randn(4, 3) - 5, torch.randn(4, 3) + 10, torch.randn(4, 3) * 3]]
    every = torch.cat([t for item in data for t in item]).double().numpy()
    for mode in ("batch", "eval"):
        got = nt.recompute_bn_stats(model, data, forward=lambda m, item: [m(t) for t in item],
                                    mode=mode, progress=False)
        assert got["0"].count[0] == 20, mode
        assert _rel(got["0"].mean, every.mean(axis=0)) <= 1e-12, mode
        assert _rel(model[0].running_mean.numpy(), every.mean(axis=0)) <= 1e-6, mode


@pytest.mark.parametrize("mode", ["batch", "eval"])
def test_a_layer_that_saw_only_empty_inputs_is_left_as_it_was(mode):
    """torch's training forward counts an empty batch in num_batches_tracked: a layer
    that saw no value is not in the result, and is left as it was, buffers and count
    (in either mode)."""
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)

        def forward(self, x):
            return self.a(x), self.b(x[:, :, :0])

    net = Net().eval()
    net.b.num_batches_tracked.fill_(7)
    state = _state(net.b)
    got = nt.recompute_bn_stats(net, [torch.randn(4, 3, 5)] * 3, progress=False,
                                mode=mode)
    assert list(got) == ["a"] and int(net.a.num_batches_tracked) == 3
    assert int(net.b.num_batches_tracked) == 7
    assert _same(net.b, state)


@pytest.mark.parametrize("mode", ["batch", "eval"])
def test_a_layer_called_by_keyword(mode):
    """``self.bn(input=x)`` (torch runs it) gave an IndexError from the hooks, which read
    args[0]; now the keyword input is read, as a positional one."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm1d(3, momentum=None)

        def forward(self, x):
            return self.bn(input=x)

    net, x = Net().double(), torch.randn(40, 3, dtype=torch.float64) * 2 + 1
    nt.recompute_bn_stats(net, [x[:16], x[16:]], progress=False, mode=mode)
    np.testing.assert_allclose(net.bn.running_mean.numpy(), x.mean(0).numpy(), rtol=1e-12)
    np.testing.assert_allclose(net.bn.running_var.numpy(), x.var(0).numpy(), rtol=1e-12)


def test_a_batch_of_one_in_eval_mode_names_the_untracked_layer():
    """mode="eval" and a batch of one sample refused by a layer without running
    statistics: the message suggested mode='eval', which was the mode."""
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3, track_running_stats=False),
                              torch.nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match=r"a batch of 1 sample, which a BatchNorm without "
                                         r"running statistics .*drop such a batch\. "):
        nt.recompute_bn_stats(net, [torch.randn(4, 3), torch.randn(1, 3)], progress=False,
                              mode="eval")


# ------------------------------------------------- edges found by mutation testing
def _state(m):
    return copy.deepcopy(m.state_dict())


def _same(m, state):
    return all(torch.equal(v, state[k]) for k, v in m.state_dict().items())


def test_num_samples_true_is_refused():
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    with pytest.raises(TypeError,
                       match="num_samples must be a positive int or None, got True"):
        nt.recompute_bn_stats(net, [torch.randn(4, 3)], num_samples=True, progress=False)


def test_eval_mode_a_later_layer_used_twice():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.bn = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)

        def forward(self, x):
            return self.bn(self.bn(self.first(x)))

    net = Net().eval()
    got = nt.recompute_bn_stats(net, list(torch.randn(12, 3).split(4)), progress=False,
                                mode="eval")
    assert list(got) == ["first", "bn"]
    assert got["bn"].count[0] == 24 and int(net.bn.num_batches_tracked) == 6


def test_a_layer_whose_tracking_was_turned_off_is_left_alone():
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)).eval()
    net[1].track_running_stats = False  # (its buffers exist, but torch no longer uses them)
    state = _state(net[1])
    got = nt.recompute_bn_stats(net, [torch.randn(8, 3)], progress=False)
    assert list(got) == ["0"]
    assert _same(net[1], state)


def test_a_layer_built_without_buffers_is_left_alone():
    """A layer built with track_running_stats=False and the flag set to True since has
    no buffers (torch normalizes it with batch statistics): recompute_bn_stats failed
    with a bare AttributeError ('NoneType' object has no attribute 'clone')."""
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3, track_running_stats=False),
                              torch.nn.BatchNorm1d(3))
    net[0].track_running_stats = True
    got = nt.recompute_bn_stats(net, [torch.randn(8, 3)], progress=False)
    assert list(got) == ["1"] and net[0].running_mean is None
    assert int(net[1].num_batches_tracked) == 1


def test_compiled_graphs_are_refused_not_left_stale():
    """A TorchScript or torch.export model has no BatchNorm modules to hook: the call
    returned {} and left its running buffers stale, without a word."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)).eval()
    x = torch.randn(2, 3, 4, 4)
    with warnings.catch_warnings():  # (torch.jit is deprecated in torch 2.13)
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted, traced = torch.jit.script(net), torch.jit.trace(net, x)
    for model, match in ((scripted, "TorchScript module"), (traced, "TorchScript module"),
                         (torch.export.export(net, (x,)).module(), "graph module")):
        with pytest.raises(TypeError, match=match):
            nt.recompute_bn_stats(model, [x + 5], progress=False)
    traced = torch.fx.symbolic_trace(net)  # (an fx trace keeps the modules: recomputed)
    assert list(nt.recompute_bn_stats(traced, [x + 5], progress=False)) == ["1"]
    assert nt.recompute_bn_stats(torch.fx.symbolic_trace(torch.nn.Linear(3, 3)),
                                 [torch.randn(4, 3)], progress=False) == {}



@pytest.mark.parametrize("mode", ["batch", "eval"])
def test_an_empty_batch_is_skipped(mode):
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3)).eval()
    x = torch.randn(10, 3)
    got = nt.recompute_bn_stats(net, [x[:5], x[:0], x[5:]], progress=False, mode=mode)
    assert got["0"].count[0] == 10 and int(net[0].num_batches_tracked) == 2


def test_num_samples_stops_reading_the_data():
    pulled = []

    def endless():
        while True:
            pulled.append(1)
            if len(pulled) > 5:
                raise AssertionError("read past num_samples")
            yield torch.randn(4, 3)

    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    got = nt.recompute_bn_stats(net, endless(), num_samples=8, progress=False)
    assert got["0"].count[0] == 8 and len(pulled) == 2


def test_the_models_own_value_error_is_not_blamed_on_a_batch_of_one():
    class Bad(torch.nn.Module):
        def forward(self, x):
            raise ValueError("my own error")

    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3), Bad())
    state = _state(net)
    for n in (4, 1):  # (a batch of 1 that torch's BatchNorm takes: (1, C, L) input)
        with pytest.raises(ValueError, match="^my own error$"):
            nt.recompute_bn_stats(net, [torch.randn(n, 3, 5)], progress=False)
        assert _same(net, state)
    # the samples of a Dataset, (1, 28, 28) each: BatchNorm2d's own "expected 4D input"
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    state = _state(net)
    with pytest.raises(ValueError, match="^expected 4D input"):
        nt.recompute_bn_stats(net, [torch.randn(1, 28, 28)], progress=False)
    assert _same(net, state)


def test_a_given_batch_of_one_is_not_blamed_on_num_samples():
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    y = torch.randn(33, 3)
    with pytest.raises(ValueError, match="^a batch of 1 sample, which"):
        nt.recompute_bn_stats(mlp, [y[:32], y[32:]], num_samples=33, progress=False)


def test_statistics_beyond_a_float16_models_range_are_refused():
    # a float16 model's running_var took a variance of about 1e6 as inf (outputs all 0)
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)).half()
    state = _state(net)
    data = [(torch.randn(8, 3) * 1000).half() for _ in range(3)]
    with pytest.raises(ValueError, match=r"layer '0'.*beyond its buffers' torch.float16 "
                                         r"range in channels \[0, 1, 2\]"):
        nt.recompute_bn_stats(net, data, progress=False)
    assert _same(net, state)
    nt.recompute_bn_stats(net, [(torch.randn(8, 3) * 100).half()], progress=False)
    assert torch.isfinite(net[0].running_var).all()


def test_eval_mode_a_variance_of_one_value_is_refused():
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3)).eval()
    state = _state(net)
    with pytest.raises(ValueError, match="NaN or inf"):
        nt.recompute_bn_stats(net, [torch.randn(1, 3)], progress=False, mode="eval")
    assert _same(net, state)


def test_list_items_of_a_dataloader():
    x = torch.randn(10, 3) * 2 + 1
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, torch.zeros(10)), batch_size=5)
    assert isinstance(next(iter(loader)), list)
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    got = nt.recompute_bn_stats(net, loader, progress=False)
    assert got["0"].count[0] == 10
    np.testing.assert_allclose(got["0"].mean, x.double().mean(0).numpy(), rtol=1e-12)


def test_eval_mode_no_data_is_refused():
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match="no samples"):
        nt.recompute_bn_stats(net, [], progress=False, mode="eval")


def _net_small():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 3),
                               torch.nn.BatchNorm1d(3)).eval()


def _empty_rank_worker(rank, world, folder):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        net = _net_small()
        g = torch.Generator().manual_seed(1)
        batches = list(torch.randn(12, 3, generator=g).split(4)) if rank == 0 else []
        got = nt.recompute_bn_stats(net, batches, progress=False, mode="eval")
        torch.save({"buffers": net.state_dict(), "names": sorted(got)},
                   os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_distributed_eval_mode_with_a_rank_without_data(tmp_path):
    """A rank without data takes the other ranks' order of layers and ends with their
    buffers."""
    import torch.multiprocessing as mp

    mp.spawn(_empty_rank_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert ranks[0]["names"] == ranks[1]["names"] == ["0", "2"]
    for k, v in ranks[0]["buffers"].items():
        assert torch.equal(v, ranks[1]["buffers"][k]), k
    assert int(ranks[1]["buffers"]["2.num_batches_tracked"]) == 3


def test_eval_mode_collects_every_use_when_the_count_varies():
    """mode="eval" cut each forward of a layer's pass at the first batch's number of
    uses: a BatchNorm applied once per 4-long chunk of sequences of varying length (1
    chunk, then 3) lost the second batch's extra chunks, silently (24 of 48 values)."""
    torch.manual_seed(0)

    class Chunks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn0 = torch.nn.BatchNorm1d(2).double()
            self.bn1 = torch.nn.BatchNorm1d(2).double()

        def forward(self, x):
            x = self.bn0(x)
            return torch.cat([self.bn1(c) for c in x.split(4, dim=2)], 2)

    data = [torch.randn(3, 2, 4, dtype=torch.float64),
            torch.randn(3, 2, 12, dtype=torch.float64) * 5 + 10]
    model = Chunks()
    stats = nt.recompute_bn_stats(model, data, mode="eval", progress=False)
    assert stats["bn0"].count.tolist() == [48, 48] and stats["bn1"].count.tolist() == [48, 48]
    model.eval()
    with torch.no_grad():  # bn1's input: bn0 with its new buffers, every chunk
        seen = torch.cat([model.bn0(x).transpose(0, 1).reshape(2, -1) for x in data], 1)
    np.testing.assert_allclose(model.bn1.running_mean.numpy(), seen.mean(1).numpy(),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(model.bn1.running_var.numpy(), seen.var(1).numpy(),
                               rtol=1e-12)


@pytest.mark.parametrize("device, error, words", [
    (1.5, TypeError, "device must be a torch.device, a str such as 'cuda:0', an int index "
     "or None, got float 1.5"),
    (True, TypeError, "got bool True"),
    ("nope", ValueError, "device='nope' is not a device torch can use"),
    (-1, ValueError, "device=-1 is not a device torch can use"),
])
def test_a_device_torch_cannot_use_is_refused_before_any_pass(device, error, words):
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(error, match=re.escape(words)):
        nt.recompute_bn_stats(net, [torch.randn(4, 3)], device=device, progress=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
