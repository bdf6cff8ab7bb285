"""``nbbn.sklearn.StandardScaler``: scikit-learn's ``StandardScaler`` on nbbn's kernels.

A drop-in for :class:`sklearn.preprocessing.StandardScaler` (same name, parameters,
attributes and results), computed by nbbn: the statistics are nbbn's exact float64
state merged with Chan's formula (no sums are formed, so ``partial_fit`` does not
overflow on any stream length or value range, scikit-learn #5602), the transform is
one pass of nbbn's affine kernel in float64 arithmetic. Added: ``channel_axis`` for N-d
arrays (images with ``channel_axis=1`` pool N, H, W), ``nan_policy`` and ``ddof``.

Importing this module imports scikit-learn (the ``sklearn`` extra); ``import nbbn`` does
not import it.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
import weakref
from collections.abc import Iterator

import numpy as np

from ._policy import NAN_POLICIES
from .errors import MissingExtraError
from .normalizer import Normalizer
from .running_stats import RunningStats

try:
    from scipy.sparse import issparse  # a dependency of scikit-learn
    from sklearn import get_config
    from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_array, check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtraError(
        "nbbn.sklearn needs scikit-learn >= 1.6, which is not installed: "
        "pip install 'nbbn[sklearn]'"
    ) from exc

__all__ = ["InvalidParameterError", "StandardScaler"]


def _sparse_frame(X) -> bool:
    """Whether ``X`` is a pandas DataFrame of sparse columns, which scikit-learn's
    validation turns into a sparse matrix."""
    dtypes = getattr(X, "dtypes", None)
    return type(X).__name__ == "DataFrame" and dtypes is not None and len(dtypes) > 0 and \
        all(type(t).__name__ == "SparseDtype" for t in dtypes)

_FLOAT_DTYPES = (np.float64, np.float32, np.float16)  # scikit-learn's FLOAT_DTYPES
_FITTED = ("n_samples_seen_", "mean_", "var_", "scale_", "stats_")
# Each estimator's normalizer, kept while what it was built from is unchanged (see
# StandardScaler._normalizer): outside the estimator's __dict__, which transform must
# not change (scikit-learn's check_dict_unchanged), and never pickled or cloned.
_KEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_KEPT_MAX_FEATURES = 1 << 16  # beyond, building one costs little next to the transform


class InvalidParameterError(ValueError, TypeError):
    """A parameter of the wrong type or value: a ValueError and a TypeError, as
    scikit-learn's own ``InvalidParameterError``, so that either ``except`` clause
    catches it."""


class StandardScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Standardize features: ``z = (x - mean_) / scale_``, as scikit-learn's
    ``StandardScaler``, with nbbn's exact streaming statistics.

    The parameters, attributes and results are those of
    :class:`sklearn.preprocessing.StandardScaler` (NaNs skipped per feature,
    ``scale_`` 1 for constant and near-constant features by scikit-learn's bound,
    float16, float32 and float64 preserved, other dtypes converted to float64; scipy sparse
    matrices with ``with_mean=False``), plus ``channel_axis`` for N-d arrays,
    ``nan_policy`` and ``ddof``. A call that raises leaves the fitted state as it was
    (``fit`` too: the earlier fit is kept).

    Parameters
    ----------
    copy : bool, default True
        False: ``transform`` and ``inverse_transform`` write into ``X`` when it is a
        writable float32/float64 numpy array (or CSR matrix).
    with_mean : bool, default True
        Center the data (``mean_`` is computed either way while ``with_std``). Must be
        False for sparse input, which centering would make dense.
    with_std : bool, default True
        Scale the data to unit variance.
    channel_axis : int, default -1
        The features axis. 2-d input has its features on axis 1 (``-1`` or ``1``);
        for N-d numpy arrays every other axis is pooled (``channel_axis=1`` for NCHW
        images, ``-1`` for NHWC). Axis 0 is the samples axis.
    nan_policy : {"omit", "propagate", "raise"}, default "omit"
        "omit": NaNs are skipped per feature (scikit-learn's behaviour; counts may then
        differ between features); "propagate": a NaN makes its feature's statistics
        NaN; "raise": NaN in ``fit``, ``partial_fit`` or ``transform`` is an error.
        Infinities are always an error, as in scikit-learn.
    ddof : int, default 0
        ``var_ = M2 / (n_samples_seen_ - ddof)``; 1 gives the unbiased variance.

    Attributes
    ----------
    mean_ : numpy.ndarray of shape (n_features,) or None
        Per-feature mean (float64); None when ``with_mean`` and ``with_std`` are False.
    var_ : numpy.ndarray of shape (n_features,) or None
        Per-feature variance (float64, ``ddof``); None when ``with_std`` is False.
    scale_ : numpy.ndarray of shape (n_features,) or None
        ``sqrt(var_)``, 1 for (near-)constant features; None when ``with_std`` is False.
    n_samples_seen_ : int or numpy.ndarray of shape (n_features,)
        Samples counted per feature (NaNs excluded); an integer when all features have
        the same count; the sum of the sample weights when weights were given.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : numpy.ndarray of shape (n_features_in_,)
        Column names of a DataFrame seen in ``fit`` (only then).
    stats_ : nbbn.RunningStats
        The exact statistics (e.g. ``stats_.save(path)``, ``stats_.to_normalizer()``).

    Examples
    --------
    >>> import numpy as np
    >>> from nbbn.sklearn import StandardScaler
    >>> X = np.array([[0.0, 1.0], [2.0, np.nan], [4.0, 3.0]])
    >>> sc = StandardScaler().fit(X)
    >>> sc.mean_, sc.n_samples_seen_
    (array([2., 2.]), array([3, 2]))
    >>> sc.transform(X)[:, 0] * sc.scale_[0]
    array([-2.,  0.,  2.])
    """

    def __init__(self, *, copy: bool = True, with_mean: bool = True, with_std: bool = True,
                 channel_axis: int = -1, nan_policy: str = "omit", ddof: int = 0) -> None:
        self.copy = copy
        self.with_mean = with_mean
        self.with_std = with_std
        self.channel_axis = channel_axis
        self.nan_policy = nan_policy
        self.ddof = ddof

    def __sklearn_tags__(self):
        """The estimator's tags: NaN allowed (but "raise"), float32/64 preserved, N-d
        arrays read (the channels on ``channel_axis``)."""
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self.nan_policy != "raise"
        tags.input_tags.three_d_array = True
        tags.input_tags.sparse = not self.with_mean  # (as scikit-learn: no centering)
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # ------------------------------------------------------------------ checks
    def _check_params(self) -> None:
        for name in ("copy", "with_mean", "with_std"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise InvalidParameterError(f"{name} must be a bool, got "
                                            f"{getattr(self, name)!r}")
        if (not isinstance(self.channel_axis, numbers.Integral)
                or isinstance(self.channel_axis, bool)):
            raise InvalidParameterError(f"channel_axis must be an int, got "
                                        f"{self.channel_axis!r}")
        if self.nan_policy not in NAN_POLICIES:
            raise InvalidParameterError(f"nan_policy must be one of {NAN_POLICIES}, "
                                        f"got {self.nan_policy!r}")
        if (not isinstance(self.ddof, numbers.Integral) or isinstance(self.ddof, bool)
                or self.ddof < 0):
            raise InvalidParameterError(f"ddof must be an int >= 0, got {self.ddof!r}")

    def _validate(self, X, *, reset: bool, writeable: bool = False, copy: bool = False,
                  sparse: str | tuple[str, ...] = ("csr", "csc"), names: bool = True,
                  as_is: bool = False):
        """``X`` as a float32/float64 numpy array (or a CSR/CSC matrix, of the formats
        ``sparse`` accepts), its features checked against ``fit``; a copy if ``copy``.
        With ``as_is``, a numpy array of integers or of byte-swapped floats stays as it
        is (no float64 copy of the whole input): nbbn's kernels read it directly.

        A plain 2-d float array (or, ``as_is``, integer array; native, not empty, no
        ``copy``; after the first fit, of the fitted features and with no feature names
        fitted) is returned as ``validate_data`` would return it, without the call.
        Other 2-d input goes through scikit-learn's ``validate_data`` (feature names,
        ``n_features_in_``, its error messages; without ``names``, as scikit-learn's
        ``inverse_transform``, ``check_array`` and the feature count alone); N-d numpy
        arrays through ``check_array`` with the features on ``channel_axis``. Array-API
        inputs under scikit-learn's ``array_api_dispatch`` are refused clearly (nbbn
        computes with numpy; scikit-learn's own estimators without array-API support
        fail inside ``check_array``). Infinities (and NaNs
        under "raise") are not looked for here: nbbn's statistics kernels count them
        (:meth:`_refuse_nonfinite`), on all threads, in the pass ``fit`` makes anyway.
        """
        if (not copy and type(X) is np.ndarray and X.ndim == 2
                and (X.dtype in _FLOAT_DTYPES or (as_is and X.dtype.kind in "iu"))
                and X.dtype.isnative
                and (X.flags.writeable or not writeable) and X.shape[0] > 0
                and X.shape[1] > 0 and self.channel_axis in (1, -1)
                and (reset or (X.shape[1] == self.__dict__.get("n_features_in_")
                               and "feature_names_in_" not in self.__dict__))):
            # what validation does with a plain float array (of the fitted features, after
            # the first fit), or an integer one ``as_is``: X itself, whose checks have
            # nothing to say; a first fit takes its feature count and forgets earlier
            # names. Its checks took 90-110 us of a small batch's 170-260 (benchmarks.md,
            # "Twenty-first session", "Twenty-fourth session": integers)
            if reset:
                self.n_features_in_ = X.shape[1]
                self.__dict__.pop("feature_names_in_", None)
            return X
        if not reset and not copy and type(X).__name__ == "DataFrame":
            frame = self._plain_frame(X, writeable)
            if frame is not None:
                return frame
        if (get_config().get("array_api_dispatch") and not isinstance(X, np.ndarray)
                and (hasattr(X, "__array_namespace__") or hasattr(X, "__dlpack__"))):
            raise TypeError(
                f"X is a {type(X).__module__}.{type(X).__name__} and scikit-learn's "
                "array_api_dispatch is on, but nbbn.sklearn.StandardScaler computes with "
                "numpy (no array API support, as its tags say): pass a numpy array, or "
                "turn array_api_dispatch off")
        dtype: tuple | None = _FLOAT_DTYPES
        if as_is and isinstance(X, np.ndarray) and (X.dtype.kind in "iu" or (
                X.dtype.kind == "f" and not X.dtype.isnative and X.dtype.itemsize in (2, 4, 8))):
            dtype = None
        if getattr(X, "ndim", 2) <= 2:
            if names:
                X = validate_data(self, X, reset=reset, dtype=dtype,
                                  accept_sparse=sparse, ensure_all_finite=False,
                                  force_writeable=writeable, copy=copy)
            else:
                X = check_array(X, dtype=dtype, accept_sparse=sparse,
                                ensure_all_finite=False, force_writeable=writeable,
                                copy=copy, estimator=self, input_name="X")
                expected = int(getattr(self, "n_features_in_"))  # noqa: B009 (set by fit)
                if X.shape[1] != expected:
                    raise ValueError(f"X has {X.shape[1]} features, but StandardScaler is "
                                     f"expecting {expected} features as input.")
            if self.channel_axis not in (1, -1):
                raise ValueError(f"channel_axis={self.channel_axis} does not fit 2-d input, "
                                 "whose features are axis 1: use channel_axis=-1 or 1")
            return X
        X = check_array(X, dtype=dtype, ensure_all_finite=False, allow_nd=True,
                        force_writeable=writeable, estimator=self, input_name="X")
        if not -X.ndim < self.channel_axis < X.ndim or self.channel_axis % X.ndim == 0:
            raise ValueError(f"channel_axis={self.channel_axis} is not a features axis of "
                             f"{X.ndim}-d input (axis 0 is the samples axis): expected "
                             f"1 to {X.ndim - 1} or -1 to {1 - X.ndim}")
        nfeat = X.shape[self.channel_axis]
        if nfeat == 0:  # (scikit-learn's words for 2-d input)
            raise ValueError(f"Found array with 0 feature(s) (shape={X.shape}) while a "
                             f"minimum of 1 is required by StandardScaler (the features "
                             f"are channel_axis={self.channel_axis}).")
        if X.size == 0:  # (a zero-size pooled axis; check_array refused 0 samples)
            raise ValueError(f"Found array with no values to pool (shape={X.shape}) while "
                             "a minimum of 1 is required by StandardScaler.")
        if reset:
            self.n_features_in_ = nfeat
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif nfeat != self.n_features_in_:
            raise ValueError(f"X has {nfeat} features along channel_axis={self.channel_axis}, "
                             f"but StandardScaler is expecting {self.n_features_in_} "
                             "features as input.")
        return X

    # ------------------------------------------------------------------ fitting
    def _plain_frame(self, X, writeable: bool):
        """``X`` as ``validate_data`` makes it (``np.asarray``), without the call, for a
        pandas DataFrame of the fitted feature names, in order, whose columns are all of
        one numpy dtype, float32 or float64, and which has rows; else None (the long
        way). Its checks, conversion included, took 750 us of a (256, 16) DataFrame's
        transform (benchmarks.md, "Twenty-first session")."""
        names = self.__dict__.get("feature_names_in_")
        if (names is None or not type(X).__module__.startswith("pandas")
                or self.channel_axis not in (1, -1) or X.shape[0] == 0
                or X.shape[1] != len(names) or X.columns.tolist() != names.tolist()):
            return None
        dtypes = set(X.dtypes.tolist())
        dtype = dtypes.pop() if len(dtypes) == 1 else None
        if not isinstance(dtype, np.dtype) or dtype not in (np.float32, np.float64):
            return None  # (mixed dtypes, extension dtypes: nullable, sparse, categories)
        values = np.asarray(X)  # (as check_array: a read-only view of a frame's block,
        # where to_numpy() would give one that writes into the frame)
        if type(values) is not np.ndarray or (writeable and not values.flags.writeable):
            return None
        return values

    def _reset(self) -> None:
        for name in _FITTED:
            if hasattr(self, name):
                delattr(self, name)

    def fit(self, X, y=None, sample_weight=None) -> StandardScaler:
        """Compute the mean and standard deviation of ``X`` (forgetting earlier fits).

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features), or an N-d numpy array
            The data; features along ``channel_axis``.
        y : None
            Ignored.
        sample_weight : array_like of shape (n_samples,), optional
            Frequency weights per sample (finite, >= 0; a scalar weighs every sample
            the same, as scikit-learn).

        Returns
        -------
        StandardScaler
            ``self``.
        """
        with self._unchanged_on_error():
            self._reset()
            return self.partial_fit(X, y, sample_weight)

    def partial_fit(self, X, y=None, sample_weight=None) -> StandardScaler:
        """Merge the statistics of the batch ``X`` into the fitted ones (exact, any
        number of batches).

        Parameters
        ----------
        X : array_like or sparse matrix
            The batch, with the features along ``channel_axis`` (as for :meth:`fit`).
        y : None
            Ignored (scikit-learn's API).
        sample_weight : array_like of shape (n_samples,), optional
            Frequency weights of the rows, >= 0 and finite.

        Returns
        -------
        StandardScaler
            ``self``; on an error the fitted state is unchanged.
        """
        with self._unchanged_on_error():
            return self._partial_fit(X, sample_weight)

    def fit_transform(self, X, y=None, **fit_params):
        """``fit`` then ``transform`` of ``X``, as scikit-learn's.

        Parameters
        ----------
        X : array_like or sparse matrix
            The data (as for :meth:`fit`).
        y : None
            Ignored.
        **fit_params
            Passed to :meth:`fit` (``sample_weight``).

        Returns
        -------
        ndarray, sparse matrix or DataFrame
            ``X`` scaled; on an error (in the fit, the transform, or ``set_output``'s
            conversion, which refuses N-d and sparse output) the earlier fit is kept.
        """
        with self._unchanged_on_error():
            return super().fit_transform(X, y, **fit_params)

    def _partial_fit(self, X, sample_weight) -> StandardScaler:
        self._check_params()
        first = not hasattr(self, "n_samples_seen_")
        X = self._validate(X, reset=first, as_is=True)
        if issparse(X):
            self._refuse_centering()
        if not first:
            self._refuse_fit_without_stats()
            self._refuse_changed_settings(X.ndim)
        weight = _sample_weight(sample_weight, X.shape[0])
        # the batch merged into a copy of the fitted statistics, which replaces them once
        # every check has passed: where ``update`` merges a batch as it reads it (a wide
        # table of few rows), its statistics are never written out and merged after
        # (the same bits as ``self.stats_ + batch``; (16, 262144) float32 1.3-1.6x); the
        # copy shares the fitted state read-only, and the merge writes the new one
        # (RunningStats._shared_copy: no copy of the state first)
        stats = (RunningStats(self.channel_axis, nan_policy=self.nan_policy, backend="cpu")
                 if first else self.stats_._shared_copy())
        stats.update(X, sample_weight=weight)
        unchanged = " The fitted statistics were not changed."
        if weight is not None:
            absent = np.flatnonzero(np.asarray(weight, np.float64) == 0.0)
            if absent.size == weight.shape[0]:
                raise ValueError("sample_weight holds only zero weights: at least one "
                                 "weight must be > 0 (as scikit-learn)")
            if absent.size:  # rows the statistics skip, checked as scikit-learn checks X
                self._refuse_nonfinite_in(X[absent], unchanged)
        self._set_fitted(stats, unchanged)
        return self

    def _refuse_fit_without_stats(self) -> None:
        """ValueError for fitted attributes without ``stats_`` (set by hand: a scaler
        rebuilt from scikit-learn's attributes): partial_fit merges into ``stats_``, the
        exact statistics, and failed with an AttributeError naming it. The attributes
        hold too little to rebuild them (no M2 of NaN-aware counts, minimum, maximum)."""
        if "stats_" not in self.__dict__:
            raise ValueError(
                "this StandardScaler has n_samples_seen_ but no stats_, the exact "
                "statistics nbbn's partial_fit merges into (its attributes were set by "
                "hand?): call fit, or partial_fit on a new StandardScaler")

    def _refuse_changed_settings(self, ndim: int) -> None:
        """ValueError when ``set_params`` changed ``channel_axis`` (to another axis of
        this data) or ``nan_policy`` since the fit: the fitted statistics pool other
        values, or treated NaNs otherwise (a partial_fit merged as before, silently)."""
        fitted = self.stats_
        for name, old, new in (("channel_axis", fitted.channel_axis % ndim,
                                self.channel_axis % ndim),
                               ("nan_policy", fitted.nan_policy, self.nan_policy)):
            if old != new:
                raise ValueError(
                    f"{name} is {getattr(self, name)!r}, but the fitted statistics were "
                    f"computed with {getattr(fitted, name)!r}: partial_fit cannot merge "
                    f"them; call fit to start over with the new {name}")

    @contextlib.contextmanager
    def _unchanged_on_error(self) -> Iterator[None]:
        """On an error, the fitted attributes (and ``n_features_in_``,
        ``feature_names_in_``, which validation sets first) are put back as they were."""
        names = (*_FITTED, "n_features_in_", "feature_names_in_")
        saved = {k: self.__dict__[k] for k in names if k in self.__dict__}
        try:
            yield
        except BaseException:
            for k in names:
                self.__dict__.pop(k, None)
            self.__dict__.update(saved)
            raise

    def _refuse_centering(self, inverse: bool = False) -> None:
        if self.with_mean:
            verb = "uncenter" if inverse else "center"
            raise ValueError(f"Cannot {verb} sparse matrices: pass `with_mean=False` "
                             "instead (centering would make every zero nonzero). See "
                             "docstring for motivation and alternatives.")

    def _refuse_nonfinite(self, batch: RunningStats, note: str = "") -> None:
        """ValueError when the statistics of a batch counted an infinity (scikit-learn's
        rule; a NaN too under ``nan_policy="raise"``, which ``update`` refused already
        in ``fit``)."""
        bad = batch.inf_count
        what = "infinity"
        if self.nan_policy == "raise" and not bad.any():
            bad, what = batch.nan_count, "NaN"
        if bad.any():
            feats = np.flatnonzero(bad)
            shown = ", ".join(str(f) for f in feats[:10]) + (", ..." if feats.size > 10 else "")
            allowed = "" if self.nan_policy == "raise" else " or NaN"
            raise ValueError(f"Input X contains {what} ({int(bad.sum())} values, in features "
                             f"{shown}); expected finite values{allowed} (nan_policy="
                             f"{self.nan_policy!r}).{note}")

    def _mapped(self, X, copy: bool, inverse: bool):
        """``transform`` (or, ``inverse``, ``inverse_transform``) of ``X`` after
        validation (features, dtype), refusing infinities as scikit-learn does. A new
        output (``copy``) is written by the normalizer kernel that also counts the
        infinities it reads: one read of ``X``. In place (the input must not change
        before the check) or under ``nan_policy="raise"`` (NaNs refused too), the
        statistics kernel counts them first: two reads."""
        from .backends import cpu

        if issparse(X) or _sparse_frame(X):  # (a DataFrame of sparse columns: CSR, as
            return self._mapped_sparse(X, copy, inverse)  # scikit-learn's validation)
        X = self._validate(X, reset=False, writeable=not copy, names=not inverse, as_is=True)
        if X.ndim > 2 and not inverse:
            self._refuse_table_output(X)
        counted = not copy or self.nan_policy == "raise"
        if counted:
            self._refuse_nonfinite_in(X)
        norm = self._normalizer(self.n_features_in_)
        params = (norm.bias, norm._inv_scale, norm.mean) if inverse else (
            norm.mean, norm.scale, norm.bias)
        inp = cpu.prepare(X, self.channel_axis, "X")
        # integers read as they are give a new float64 array (scikit-learn's converted
        # copy, copy=False too); byte-swapped floats are scaled in place with copy=False
        out = cpu.prepare_out(np.empty_like(X, np.float64) if X.dtype.kind in "iu" else
                              None if copy else X, inp, "X")
        if inp.size and cpu.affine(inp, params, out, count_inf=not counted):
            self._refuse_nonfinite_in(X)  # the count says there is one; this says where
        return out

    def _mapped_sparse(self, X, copy: bool, inverse: bool):
        """:meth:`_mapped` of a sparse matrix (as scikit-learn: CSR out, no centering):
        its stored values times ``1 / scale_`` (``scale_``, ``inverse``)."""
        from .backends import cpu_sparse

        self._refuse_centering(inverse)
        X = self._validate(X, reset=False, writeable=True, copy=copy, sparse="csr",
                           names=not inverse)
        bad = ~np.isfinite(X.data) if self.nan_policy == "raise" else np.isinf(X.data)
        if bad.any():
            self._refuse_nonfinite_in(X)
        if self.with_std:
            scale = self._mean_scale(X.shape[1])[1]
            cpu_sparse.scale_columns(X, scale if inverse else 1.0 / scale)
        return X

    def _refuse_nonfinite_in(self, X, note: str = "") -> None:
        """:meth:`_refuse_nonfinite` of the statistics of ``X`` (one read)."""
        self._refuse_nonfinite(RunningStats(self.channel_axis, backend="cpu").update(X), note)

    def _refuse_table_output(self, X) -> None:
        """ValueError for N-d ``X`` when ``set_output`` (or the global setting) asks for
        DataFrames, which are 2-d: scikit-learn would fail while wrapping the result."""
        config = getattr(self, "_sklearn_output_config", {})
        kind = config.get("transform", get_config().get("transform_output", "default"))
        if kind != "default":
            raise ValueError(f"set_output(transform={kind!r}) makes 2-d tables, but X is "
                             f"{X.ndim}-d {X.shape}: use set_output(transform='default') "
                             "for N-d arrays")

    def _set_fitted(self, stats: RunningStats, note: str) -> None:
        """The fitted attributes from ``stats``, in one pass over its state
        (``cpu_scaler.fitted``), or a ValueError (with ``note``) where it counted an
        infinity, or a NaN under "raise" (:meth:`_refuse_nonfinite`): the fitted
        statistics count none, as every fit refused them, so these are the batch's."""
        from .backends import cpu_scaler

        fit = stats._read(lambda st: cpu_scaler.fitted(st, self.ddof, self.with_std), None)
        if fit.infs or (self.nan_policy == "raise" and fit.nans):
            self._refuse_nonfinite(stats, note)
        if self.with_std and self.ddof and fit.few:
            few = np.flatnonzero(stats.count <= self.ddof)
            warnings.warn(f"Degrees of freedom <= 0 in features {few[:10].tolist()} "
                          f"(n_samples_seen_ <= ddof={self.ddof}): their var_ and scale_ "
                          "are NaN, and so is their transform", RuntimeWarning,
                          stacklevel=4)
        if self.with_std and fit.huge:
            # (an infinite variance, beyond float64, is not a constant feature's: its
            # scale_ is inf)
            huge = np.flatnonzero(fit.var == np.inf)
            warnings.warn(f"The variance of features {huge[:10].tolist()} overflows "
                          "float64 (a standard deviation beyond about 1e154 / "
                          "sqrt(n_samples_seen_)): their "
                          "var_ and scale_ are inf, and their transform is 0; scale "
                          "the data down first", RuntimeWarning, stacklevel=4)
        self.stats_ = stats
        self.n_samples_seen_ = fit.n_samples_seen
        self.mean_ = fit.mean if (self.with_mean or self.with_std) else None
        self.var_ = fit.var if self.with_std else None
        self.scale_ = fit.scale

    # ------------------------------------------------------------------ transforming
    def _mean_scale(self, nfeat: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``mean_`` and ``scale_`` that transforming applies (0 and 1 where the
        flags say so); NotFittedError for a flag switched on after fitting (e.g.
        ``set_params(with_std=True)``), where scikit-learn fails on the None."""
        out = []
        for flag, name, neutral in (("with_mean", "mean_", 0.0), ("with_std", "scale_", 1.0)):
            v = getattr(self, name)
            if getattr(self, flag) and v is None:
                raise NotFittedError(f"{flag}=True, but this StandardScaler was fitted with "
                                     f"{flag}=False ({name} is None): call fit again")
            out.append(v if getattr(self, flag) else np.full(nfeat, neutral))
        return out[0], out[1]

    def _normalizer(self, nfeat: int) -> Normalizer:
        """The normalizer of ``transform`` (and of ``inverse_transform``), kept for the
        next call while the flags are the same and ``mean_`` and ``scale_`` hold the
        same bits as copies taken then (an edit in place is seen): building one took
        35-55 us of a (256, 64) transform's 260 (benchmarks.md, "Twenty-first
        session"), and a kept one's parameters are tiled once (``cpu._tiles``)."""
        mean, scale = self.__dict__.get("mean_"), self.__dict__.get("scale_")
        key = (self.with_mean, self.with_std, self.channel_axis, nfeat)
        try:
            kept = _KEPT.get(self)
        except TypeError:  # (a subclass that defines __eq__ and no __hash__: not kept)
            return self._new_normalizer(nfeat)
        if (kept is not None and kept[0] == key and _same_bits(kept[1], mean)
                and _same_bits(kept[2], scale)):
            return kept[3]
        norm = self._new_normalizer(nfeat)
        if nfeat <= _KEPT_MAX_FEATURES:
            _KEPT[self] = (key, _snapshot(mean), _snapshot(scale), norm)
        return norm

    def _new_normalizer(self, nfeat: int) -> Normalizer:
        mean, scale = self._mean_scale(nfeat)
        # (x - mean) * (1 / scale): var 1 and eps 0 make the normalizer's scale the weight
        return Normalizer(mean, np.ones(nfeat), eps=0.0, weight=1.0 / scale,
                          channel_axis=self.channel_axis, backend="cpu")

    def transform(self, X, copy: bool | None = None):
        """Standardize ``X``: ``(X - mean_) / scale_`` per feature.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features), or an N-d numpy array
            The data to scale.
        copy : bool, optional
            Overrides the ``copy`` parameter.

        Returns
        -------
        numpy.ndarray
            The dtype of float16, float32 and float64 input, else float64; NaNs stay NaN.
        """
        check_is_fitted(self)
        return self._mapped(X, self.copy if copy is None else copy, inverse=False)

    def inverse_transform(self, X, copy: bool | None = None):
        """Scale back to the original representation: ``X * scale_ + mean_``.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features), or an N-d numpy array
            Standardized data.
        copy : bool, optional
            Overrides the ``copy`` parameter.

        Returns
        -------
        numpy.ndarray
            The dtype of float16, float32 and float64 input, else float64.
        """
        check_is_fitted(self)
        return self._mapped(X, self.copy if copy is None else copy, inverse=True)


def _snapshot(a):
    """A copy of a fitted array (None stays None), to compare with it later."""
    return None if a is None else np.array(a, copy=True)


def _same_bits(kept, now) -> bool:
    """Whether ``now`` is an array holding what ``kept`` (a snapshot) holds, bit for bit
    (NaNs included), or both are None."""
    if kept is None or now is None:
        return kept is now
    return (isinstance(now, np.ndarray) and now.shape == kept.shape
            and now.dtype == kept.dtype and now.tobytes() == kept.tobytes())


def _sample_weight(sample_weight, nrows: int):
    """scikit-learn's forms of ``sample_weight`` for the core's check: None, a scalar
    (every row weighs it) or an (n_samples,) array, bools read as 0 and 1."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.ndim == 0 and w.dtype.kind in "biuf":
        return np.full(nrows, w, np.float64)
    return w.astype(np.float64) if w.dtype.kind == "b" else w
