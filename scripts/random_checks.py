"""Random-case checks of nbbn's results against references (a fuzzer, not a test: the
tests hold the cases that matter; this looks for the ones nobody wrote down).

    python scripts/random_checks.py stats [SEED] [CASES]      # RunningStats vs float64
    python scripts/random_checks.py normalizer [SEED] [CASES] # Normalizer vs float64
    python scripts/random_checks.py sklearn [SEED] [CASES]    # vs scikit-learn's scaler
    python scripts/random_checks.py batchnorm [SEED] [CASES]  # vs torch.nn.BatchNormNd
    python scripts/random_checks.py inplace [SEED] [CASES]    # in place vs not vs shared

Each case draws a shape (1 to 4 axes), a channel axis, a dtype, values near a random
mean (NaNs and infinities in floats), a strided or transposed view, and for the
statistics several batches and row weights; it prints every case that disagrees (up to
20) and the count. The references: per-channel sums in long double (``stats``); the
map in float64, allowed 3 eps of the output dtype times the terms' size plus one ulp
(``normalizer``); for ``sklearn``, ``mean_`` and ``var_`` against long-double sums,
``n_samples_seen_`` and which attributes are None against scikit-learn's
``StandardScaler``, and the transform and its inverse against the float64 map of the
fitted statistics (within a float32 ulp, or 4 eps of its terms in float64: scikit-learn's
own float32 transform and sparse float32 statistics are further off); torch's modules
in float64 (``batchnorm``: outputs, running buffers, ``num_batches_tracked``; batches
of at least two values per channel, as torch refuses one after counting it).
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np

import nbbn

INTS = ["uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64"]
DTYPES = ["float16", "float32", "float64", *INTS]


class Cases:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.fails = 0

    def report(self, *what) -> None:
        self.fails += 1
        if self.fails <= 20:
            print(*what, flush=True)

    def shape(self, limit: int = 300_000) -> tuple[int, ...]:
        while True:
            ndim = int(self.rng.integers(1, 5))
            shape = tuple(int(self.rng.choice([1, 2, 3, 5, 7, 16, 33, 64, 130]))
                          for _ in range(ndim))
            if math.prod(shape) <= limit:
                return shape

    def values(self, shape, dtype: str, loc: float, scale: float, nonfinite: bool = True):
        base = self.rng.normal(loc, scale, shape)
        if dtype in INTS:
            info = np.iinfo(dtype)
            return np.clip(np.round(base), info.min, info.max).astype(dtype)
        x = base.astype(dtype)
        if nonfinite and self.rng.random() < 0.3:
            x[self.rng.random(shape) < 0.05] = np.nan
        if nonfinite and self.rng.random() < 0.1:
            x[self.rng.random(shape) < 0.01] = np.inf
        return x

    def view(self, x):
        """``x``, or the same values through a transposed, strided or flipped view."""
        v, ndim = self.rng.random(), x.ndim
        if v < 0.2 and ndim >= 2:
            perm = self.rng.permutation(ndim)
            return np.ascontiguousarray(np.transpose(x, perm)).transpose(np.argsort(perm))
        if v < 0.35:
            return np.repeat(x, 2, axis=ndim - 1)[..., ::2]
        if v < 0.45:
            return np.flip(np.ascontiguousarray(np.flip(x, 0)), 0)
        return x


def check_stats(c: Cases, ncases: int) -> None:
    for trial in range(ncases):
        shape = c.shape()
        ndim = len(shape)
        ax = int(c.rng.integers(-ndim, ndim))
        dt = str(c.rng.choice(DTYPES))
        policy = str(c.rng.choice(["omit", "propagate"]))
        weighted = bool(c.rng.random() < 0.25 and ndim >= 2 and ax % ndim != 0)
        rs = nbbn.RunningStats(ax, nan_policy=policy)
        chans = shape[ax]
        vals: list[list[np.ndarray]] = [[] for _ in range(chans)]
        wts: list[list[np.ndarray]] = [[] for _ in range(chans)]
        ctx = f"case {trial}: {shape} axis {ax} {dt} {policy} weighted {weighted}"
        try:
            for _ in range(int(c.rng.integers(1, 4))):
                x = c.view(c.values(shape, dt, float(c.rng.choice([0, 3, 1e3, 1e6])),
                                    float(c.rng.choice([1e-3, 1, 100]))))
                w = c.rng.choice([0.0, 0.5, 1.0, 3.0], shape[0]) if weighted else None
                rs.update(x, sample_weight=w)
                xm = np.moveaxis(x.astype(np.float64), ax, 0).reshape(chans, -1)
                wm = np.ones_like(xm) if w is None else np.moveaxis(np.broadcast_to(
                    np.expand_dims(w, tuple(range(1, ndim))), shape), ax, 0).reshape(chans, -1)
                for ch in range(chans):
                    vals[ch].append(xm[ch])
                    wts[ch].append(wm[ch])
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            c.report("ERROR", ctx, type(exc).__name__, str(exc)[:200])
            continue
        for ch in range(chans):
            v, w = np.concatenate(vals[ch]), np.concatenate(wts[ch])
            v, w = v[w > 0], w[w > 0]
            nan = np.isnan(v)
            if policy == "omit":
                v, w = v[~nan], w[~nan]
            n = w.sum()
            if not np.isclose(rs.count[ch], n, rtol=1e-15):
                c.report("COUNT", ctx, ch, rs.count[ch], n)
                continue
            if n == 0 or np.isinf(v).any():
                continue
            if nan.any() and policy == "propagate":
                if not math.isnan(rs.mean[ch]):
                    c.report("PROPAGATE", ctx, ch, rs.mean[ch])
                continue
            lw, lv = np.longdouble(w), np.longdouble(v)
            m = float(np.sum(lw * lv) / np.longdouble(n))
            var = float(np.sum(lw * (lv - np.longdouble(m)) ** 2) / np.longdouble(n))
            size = max(abs(m), math.sqrt(var), 1e-300)
            if abs(rs.mean[ch] - m) > 2e-14 * size:
                c.report("MEAN", ctx, ch, rs.mean[ch], m)
            if abs(rs.var[ch] - var) > 1e-12 * var + 1e-14 * size * math.sqrt(var) + 1e-300:
                c.report("VAR", ctx, ch, rs.var[ch], var)
            if rs.min[ch] != v.min() or rs.max[ch] != v.max():
                c.report("MIN/MAX", ctx, ch, rs.min[ch], v.min(), rs.max[ch], v.max())


def check_normalizer(c: Cases, ncases: int) -> None:
    for trial in range(ncases):
        shape = c.shape()
        ndim = len(shape)
        ax = int(c.rng.integers(-ndim, ndim))
        chans = shape[ax]
        dt = str(c.rng.choice(DTYPES))
        mean = c.rng.normal(0, 100, chans)
        eps = float(c.rng.choice([0.0, 1e-5]))
        var = c.rng.choice([1e-6, 1.0, 1e4], chans) * c.rng.random(chans) + (eps == 0) * 1e-3
        w = c.rng.normal(1, 0.5, chans) if c.rng.random() < 0.5 else None
        b = c.rng.normal(0, 1, chans) if c.rng.random() < 0.5 else None
        norm = nbbn.Normalizer(mean, var, eps=eps, weight=w, bias=b, channel_axis=ax)
        x = c.view(c.values(shape, dt, 0.0, 200.0, nonfinite=False))
        out, odt = None, np.dtype(dt if dt.startswith("float") else "float32")
        if c.rng.random() < 0.3:
            odt = np.dtype(str(c.rng.choice(["float16", "float32", "float64"])))
            out = x if (x.dtype == odt and c.rng.random() < 0.3) else np.empty(shape, odt)
        ctx = f"case {trial}: {shape} axis {ax} {dt} out {odt} in place {out is x}"
        sh = [1] * ndim
        sh[ax] = chans
        scale = ((np.ones(chans) if w is None else w) / np.sqrt(var + eps)).reshape(sh)
        bias = (np.zeros(chans) if b is None else b).reshape(sh)
        xf = x.astype(np.float64)
        ref = (xf - mean.reshape(sh)) * scale + bias
        try:
            y = norm(x, out=out)
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            c.report("ERROR", ctx, type(exc).__name__, str(exc)[:150])
            continue
        if y.dtype != odt:
            c.report("DTYPE", ctx, y.dtype)
            continue
        terms = (np.abs(xf) + np.abs(mean.reshape(sh))) * np.abs(scale) + np.abs(bias)
        with np.errstate(over="ignore"):
            ulp = np.spacing(np.abs(ref.astype(odt))).astype(np.float64)
        tol = 3 * np.finfo(odt).eps * terms + ulp
        err = np.abs(y.astype(np.float64) - ref)
        bad = ~((err <= tol) | (np.isnan(ref) & np.isnan(y)))
        if odt == np.float16:
            bad &= np.abs(ref) < 65504
        if bad.any():
            i = np.flatnonzero(bad)[0]
            c.report("VALUE", ctx, int(bad.sum()), y.ravel()[i], ref.ravel()[i])


def check_sklearn(c: Cases, ncases: int) -> None:
    from scipy import sparse
    from sklearn.preprocessing import StandardScaler as Reference

    from nbbn.sklearn import StandardScaler

    for trial in range(ncases):
        nf = int(c.rng.integers(1, 6))
        dt = str(c.rng.choice(["float32", "float64", "int64", "uint8"]))
        batches = []
        for _ in range(int(c.rng.integers(1, 4))):
            x = c.rng.normal(c.rng.choice([0, 3, 1e4]), c.rng.choice([1e-3, 1, 100]),
                             (int(c.rng.integers(1, 30)), nf))
            if c.rng.random() < 0.3:
                x[:, 0] = 7.0  # a constant feature
            x = (np.abs(x).round() % 200).astype(dt) if dt in INTS else x.astype(dt)
            if dt.startswith("float") and c.rng.random() < 0.5:
                x[c.rng.random(x.shape) < 0.2] = np.nan
            batches.append(x)
        weighted = bool(c.rng.random() < 0.4)
        ws = [c.rng.choice([0.5, 1.0, 2.0, 3.0], len(x)) if weighted else None
              for x in batches]
        is_sparse = bool(c.rng.random() < 0.25 and dt.startswith("float"))
        kw = {"with_mean": bool(c.rng.random() < 0.8) and not is_sparse,
              "with_std": bool(c.rng.random() < 0.8)}
        ours, ref = StandardScaler(**kw), Reference(**kw)
        ctx = f"case {trial}: {dt} {nf} features weighted {weighted} sparse {is_sparse} {kw}"
        wrap = sparse.csr_matrix if is_sparse else (lambda a: a)
        try:
            for x, w in zip(batches, ws, strict=True):
                ref.partial_fit(wrap(x), sample_weight=w)
                ours.partial_fit(wrap(x), sample_weight=w)
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            c.report("ERROR", ctx, type(exc).__name__, str(exc)[:200])
            continue
        # mean_ and var_ against long-double sums over all batches (scikit-learn's own
        # are off where it sums float32 in float32, e.g. sparse float32 at mean/std 1e7:
        # var_ 1-5% off; NaN for a feature one batch held only NaNs of; rounding noise
        # for a constant feature), n_samples_seen_ and None-ness against scikit-learn's
        allx = np.concatenate(batches).astype(np.float64)
        allw = np.concatenate([np.ones(len(x)) if w is None else w
                               for x, w in zip(batches, ws, strict=True)])
        keep = ~np.isnan(allx)
        lw = np.where(keep, allw[:, None], 0.0).astype(np.longdouble)
        lx = np.where(keep, allx, 0.0).astype(np.longdouble)
        n = lw.sum(0)
        mean = (lw * lx).sum(0) / n
        var = (lw * (lx - mean) ** 2).sum(0) / n
        mean, var = mean.astype(np.float64), var.astype(np.float64)
        size = np.maximum(np.abs(mean), np.sqrt(var))
        for name, want, tol in (("mean_", mean, 2e-14 * size),
                                ("var_", var, 1e-12 * var + 1e-14 * size * np.sqrt(var))):
            got = getattr(ours, name)
            if (got is None) != (getattr(ref, name) is None):
                c.report(name, ctx, got, getattr(ref, name))
            elif got is not None and not ((np.abs(got - want) <= tol + 1e-300)
                                          | (np.isnan(got) & np.isnan(want))).all():
                c.report(name, ctx, got, want)
        if not (weighted and not (kw["with_mean"] or kw["with_std"])):
            # (there scikit-learn's dense path counts rows, unweighted: docs/sklearn.md)
            if not np.allclose(ours.n_samples_seen_, ref.n_samples_seen_, rtol=1e-12):
                c.report("n_samples_seen_", ctx, ours.n_samples_seen_, ref.n_samples_seen_)
        # the transform and its inverse against the float64 map of the fitted statistics
        # (scikit-learn's own float32 transform rounds the mean to float32 first: 20% off
        # at mean/std 1e7), correctly rounded to float32, or within 4 eps of its terms
        x = wrap(batches[-1])
        s = 1.0 if ours.scale_ is None else ours.scale_
        m = ours.mean_ if (kw["with_mean"] and ours.mean_ is not None) else 0.0
        for inverse in (False, True):
            src = ours.transform(x) if inverse else x
            got = (ours.inverse_transform if inverse else ours.transform)(src)
            src = src.toarray() if is_sparse else src
            got = got.toarray() if is_sparse else got
            xf = src.astype(np.float64)
            exact = xf * s + m if inverse else (xf - m) / s
            if got.dtype == np.float32:
                tol = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
            else:
                tol = 4 * 2.0**-52 * ((np.abs(xf) * s + np.abs(m)) if inverse
                                      else (np.abs(xf) + np.abs(m)) / s)
            bad = ~((np.abs(got - exact) <= tol + 1e-300) | np.isnan(exact))
            if bad.any():
                c.report("inverse_transform" if inverse else "transform", ctx,
                         got[bad][:3], exact[bad][:3])


def check_batchnorm(c: Cases, ncases: int) -> None:
    import torch

    for trial in range(ncases):
        dim = int(c.rng.integers(1, 4))
        chans, n = int(c.rng.choice([1, 3, 8, 17])), int(c.rng.choice([2, 5, 16]))
        spatial = ((int(c.rng.choice([1, 4, 9])),) if dim == 1 and c.rng.random() < 0.5
                   else () if dim == 1 else
                   tuple(int(c.rng.choice([1, 3, 6])) for _ in range(dim)))
        shape = (n, chans, *spatial)
        momentum = c.rng.choice([0.1, 0.5, None, 1.0, 0.0])
        momentum = None if momentum is None else float(momentum)
        affine, track = bool(c.rng.random() < 0.7), bool(c.rng.random() < 0.8)
        eps = float(c.rng.choice([1e-5, 1e-3]))
        module = [torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d][dim - 1](
            chans, eps=eps, momentum=momentum, affine=affine, track_running_stats=track,
            dtype=torch.float64)
        if affine:
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(c.rng.normal(1, 0.3, chans)))
                module.bias.copy_(torch.from_numpy(c.rng.normal(0, 0.3, chans)))
        ours = nbbn.BatchNorm.from_torch(module)
        dt = np.float32 if c.rng.random() < 0.5 else np.float64
        tol = 1e-5 if dt == np.float32 else 1e-10
        ctx = f"case {trial}: {shape} momentum {momentum} affine {affine} track {track} {dt}"
        for step in range(int(c.rng.integers(1, 5))):
            train = bool(c.rng.random() < 0.75)
            module.train(train)
            ours.train(train)
            x = c.rng.normal(c.rng.choice([0, 5]), c.rng.choice([0.1, 3]), shape).astype(dt)
            want = module(torch.from_numpy(x.astype(np.float64))).detach().numpy()
            got = ours(x)
            if not np.allclose(got, want, rtol=tol, atol=tol):
                c.report("output", ctx, step, np.abs(got - want).max())
            if track:
                for name in ("running_mean", "running_var"):
                    if not np.allclose(getattr(ours, name), getattr(module, name).numpy(),
                                       rtol=tol / 10, atol=tol / 100):
                        c.report(name, ctx, step)
                if ours.num_batches_tracked != int(module.num_batches_tracked):
                    c.report("num_batches_tracked", ctx, step)


def check_in_place(c: Cases, ncases: int) -> None:
    """Streams of wide tables of few rows (1 to 64 rows, 64 to 3,000 channels, every
    dtype, NaNs and infinities, C- or Fortran-ordered, both NaN policies), merged into
    the state as they are computed (``cpu.reduce_into``), with it turned off, and with
    the last batch merged into a copy sharing the state read-only
    (``RunningStats._shared_copy``, which must leave the shared state as it was): the
    same bits."""
    from nbbn.backends import cpu

    into = cpu.reduce_into
    merged = 0

    def counted(*args):
        nonlocal merged
        took = into(*args)
        merged += took is not None
        return took

    def bits(st):
        return st.ints.tobytes() + st.floats.view(np.int64).tobytes()

    for case in range(ncases):
        dtype = str(c.rng.choice(DTYPES))
        policy = str(c.rng.choice(["propagate", "omit"]))
        nchan = int(c.rng.integers(64, 3000))
        batches = []
        for _ in range(int(c.rng.integers(2, 5))):
            shape = (int(c.rng.integers(1, 65)), nchan)
            x = c.values(shape, dtype, float(c.rng.uniform(-1e3, 1e3)),
                         float(10 ** c.rng.uniform(-3, 3)))
            batches.append(np.asfortranarray(x) if c.rng.random() < 0.2 else x)
        got = []
        for mode in ("in place", "off", "shared"):
            cpu.reduce_into = (lambda *args: None) if mode == "off" else counted
            try:
                rs = nbbn.RunningStats(-1, nan_policy=policy)
                for i, x in enumerate(batches):
                    if mode == "shared" and i == len(batches) - 1:
                        base, kept = rs, bits(rs._snapshot())
                        rs = rs._shared_copy()
                    rs.update(x)
            finally:
                cpu.reduce_into = into
            got.append(bits(rs._snapshot()))
            if mode == "shared" and bits(base._snapshot()) != kept:
                c.report("shared state written", case, dtype, policy,
                         [x.shape for x in batches])
        if len(set(got)) != 1:
            c.report("in place", case, dtype, policy, [x.shape for x in batches])
    print(f"(merged in place: {merged} batches)")


CHECKS = {"stats": check_stats, "normalizer": check_normalizer, "sklearn": check_sklearn,
          "batchnorm": check_batchnorm, "inplace": check_in_place}


def main(argv: list[str]) -> int:
    name = argv[0] if argv else "stats"
    seed = int(argv[1]) if len(argv) > 1 else 0
    ncases = int(argv[2]) if len(argv) > 2 else 300
    cases = Cases(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        CHECKS[name](cases, ncases)
    print(f"{name}, seed {seed}: {ncases} cases, {cases.fails} disagreeing")
    return 1 if cases.fails else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
