"""nbbn.fit on Datasets, DataLoaders and iterables of samples: samples of different sizes
against a float64 reference, the misread of issue 13, ``batched=``, resume."""

from __future__ import annotations

import re

import numpy as np
import pytest

import nbbn
from nbbn.errors import CheckpointError

torch = pytest.importorskip("torch")
from torch.utils.data import (  # noqa: E402
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    SequentialSampler,
    TensorDataset,
)


def _images(rng, n, dtype=np.uint8, channels=3, hwc=False):
    """``n`` images of random sizes, CHW (HWC when ``hwc``)."""
    out = []
    for _ in range(n):
        h, w = (int(v) for v in rng.integers(3, 17, 2))
        a = rng.integers(0, 256, (channels, h, w)).astype(dtype)
        out.append(np.ascontiguousarray(a.transpose(1, 2, 0)) if hwc else a)
    return out


def _ref(images, axis):
    """Float64 per-channel mean and variance of all pixels of all images."""
    flat = np.concatenate([np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)
                           for a in images], axis=1).astype(np.float64)
    return flat.shape[1], flat.mean(1), flat.var(1)


class Images(Dataset):
    """A map-style Dataset of (image tensor, label) items of different sizes."""

    def __init__(self, images, fail_at=None):
        self.images = images
        self.fail_at = fail_at

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        if i == self.fail_at:
            raise OSError(f"cannot decode image {i}")
        return torch.from_numpy(self.images[i]), i % 10


class Stream(IterableDataset):
    def __init__(self, images):
        self.images = images

    def __iter__(self):
        return (torch.from_numpy(a) for a in self.images)


def _check(rs, images, axis, rtol=1e-12):
    n, mean, var = _ref(images, axis)
    np.testing.assert_array_equal(rs.count, n)
    np.testing.assert_allclose(rs.mean, mean, rtol=rtol)
    np.testing.assert_allclose(rs.variance(), var, rtol=rtol)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_dataset_of_chw_samples_of_different_sizes(dtype):
    images = _images(np.random.default_rng(0), 23, dtype)
    rs = nbbn.fit(Images(images), key=0, progress=False)
    assert rs.num_channels == 3
    _check(rs, images, 0)


def test_hwc_samples_and_other_sources_of_samples():
    images = _images(np.random.default_rng(1), 9, hwc=True)
    _check(nbbn.fit(Images(images), -1, key=0, progress=False), images, -1)
    _check(nbbn.fit(Stream(images), -1, progress=False), images, -1)  # IterableDataset
    _check(nbbn.fit(images, -1, batched=False, progress=False), images, -1)  # a list
    _check(nbbn.fit(iter(images), -1, batched=False, progress=False), images, -1)
    loader = DataLoader(Images(images), batch_size=None)  # no automatic batching: samples
    _check(nbbn.fit(loader, -1, key=0, progress=False), images, -1)


def test_batches_of_different_sizes():
    rng = np.random.default_rng(2)
    batches = [rng.normal(size=(int(rng.integers(1, 4)), 2, int(rng.integers(2, 9)), 5))
               for _ in range(6)]
    rs = nbbn.fit(iter(batches), progress=False)
    flat = np.concatenate([np.moveaxis(b, 1, 0).reshape(2, -1) for b in batches], 1)
    np.testing.assert_allclose(rs.mean, flat.mean(1), rtol=1e-13)
    np.testing.assert_allclose(rs.variance(), flat.var(1), rtol=1e-12)
    bad = [*batches, np.zeros((1, 3, 4, 5))]
    with pytest.raises(ValueError, match=r"item 6 has 3 channels .* item 0 has 2"):
        nbbn.fit(bad, progress=False)


def test_the_misread_of_issue_13(capsys):
    """``iter(dataset)`` read as batches puts H on the channel axis; the channel count
    found is printed and in the result, and a Dataset itself is never misread."""
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(5.0, 2.0, (12, 3, 8, 8)).astype(np.float32))
    ds = TensorDataset(x, torch.arange(12))
    images = list(x.numpy())

    wrong = nbbn.fit(iter(ds), key=0)
    assert wrong.num_channels == 8 and "num_channels=8" in repr(wrong)
    assert "8 channels along channel_axis=1 (items read as batches, the first of shape " \
           "(3, 8, 8))" in capsys.readouterr().err

    rs = nbbn.fit(ds, key=0)
    assert "3 channels along channel_axis=1 (items read as samples" in capsys.readouterr().err
    _check(rs, images, 0)
    _check(nbbn.fit(iter(ds), key=0, batched=False, progress=False), images, 0)
    loader_rs = nbbn.fit(DataLoader(ds, batch_size=5), key=0, progress=False)
    _check(loader_rs, images, 0)
    with pytest.raises(ValueError, match="batched=True was given for a Dataset"):
        nbbn.fit(ds, key=0, batched=True)
    with pytest.raises(ValueError, match="batched=True was given for a Dataset"):
        nbbn.fit(Stream(images), batched=True)


def test_bad_arguments():
    images = _images(np.random.default_rng(4), 3)
    with pytest.raises(ValueError, match="batch_size=4 does not apply to samples"):
        nbbn.fit(Images(images), key=0, batch_size=4)
    with pytest.raises(TypeError, match="batched=False applies to iterables"):
        nbbn.fit(np.zeros((4, 3, 2)), batched=False)
    with pytest.raises(TypeError, match="batched must be"):
        nbbn.fit(images, batched="no")
    with pytest.raises(ValueError, match="pass key=0"):
        nbbn.fit(Images(images), progress=False)


def test_bfloat16_samples():
    images = [a.astype(np.float32) / 7 for a in _images(np.random.default_rng(5), 5)]
    tensors = [torch.from_numpy(a).to(torch.bfloat16) for a in images]
    rs = nbbn.fit(tensors, batched=False, progress=False)
    _check(rs, [t.float().numpy() for t in tensors], 0)
    batch = torch.stack([t[:, :3, :3] for t in tensors])  # one bfloat16 tensor, in batches
    want = list(batch.float().numpy())
    _check(nbbn.fit(batch, batch_size=2, progress=False), want, 0)
    _check(nbbn.fit(DataLoader(TensorDataset(batch), batch_size=2), key=0, progress=False),
           want, 0)


def test_resume_a_dataset(tmp_path):
    images = _images(np.random.default_rng(6), 17)
    whole = nbbn.fit(Images(images), key=0, progress=False)
    ck = tmp_path / "fit.ckpt"
    with pytest.raises(OSError, match="cannot decode image 11"):
        nbbn.fit(Images(images, fail_at=11), key=0, checkpoint=ck, checkpoint_interval=0,
                 progress=False)
    resumed = nbbn.fit(Images(images), key=0, checkpoint=ck, resume=True, progress=False)
    a, b = resumed.to_dict(), whole.to_dict()
    assert a.keys() == b.keys()
    for name in a:  # bit for bit the uninterrupted fit
        np.testing.assert_array_equal(a[name], b[name])

    with pytest.raises(OSError):
        nbbn.fit(Images(images, fail_at=11), key=0, checkpoint=tmp_path / "b.ckpt",
                 checkpoint_interval=0, progress=False)
    other = Images(images[::-1])
    with pytest.raises(CheckpointError, match="does not hold the samples"):
        nbbn.fit(other, key=0, checkpoint=tmp_path / "b.ckpt", resume=True, progress=False)
    with pytest.raises(CheckpointError, match="batched"):
        nbbn.fit(iter(Images(images)), key=0, checkpoint=tmp_path / "b.ckpt", resume=True,
                 progress=False)


def test_an_array_like_without_iter_is_not_a_dataset():
    """An object with ``__len__``, ``__getitem__`` and ``shape`` but no ``__iter__`` is
    an array-like, not a map-style Dataset."""
    from nbbn._datasets import data_kind

    class ArrayLike:
        shape, dtype, ndim = (4, 3), np.dtype(np.float64), 2

        def __len__(self):
            return 4

        def __getitem__(self, k):
            return np.arange(12.0).reshape(4, 3)[k]

    assert data_kind(ArrayLike()) is None


def test_loaders_and_iterable_datasets_of_chw_samples():
    """A DataLoader with a ``batch_sampler`` yields batches; one without automatic
    batching, and an IterableDataset, yield samples (CHW: channels on axis 0)."""
    images = [a.astype(np.float32) for a in _images(np.random.default_rng(7), 6)]
    same = [a[:, :3, :3] for a in images]
    ds = TensorDataset(torch.from_numpy(np.stack(same)))
    loader = DataLoader(ds, batch_sampler=BatchSampler(SequentialSampler(ds), 4, False))
    _check(nbbn.fit(loader, key=0, progress=False), same, 0)
    _check(nbbn.fit(Stream(images), progress=False), images, 0)
    unbatched = DataLoader(Images(images), batch_size=None)
    _check(nbbn.fit(unbatched, key=0, progress=False), images, 0)


def test_transform_of_a_dataset_or_loader_says_what_to_pass():
    """``nbbn.transform(Dataset)`` said "cannot read batches from a Images: expected an
    array, ... or an iterable of arrays", and a DataLoader (an iterable) was then refused
    anyway ("cannot write an iterable source"). Each is refused up front now, named as
    what it is, with what to pass instead; no item is read."""
    x = np.arange(12.0).reshape(4, 3)
    stats = nbbn.fit(x, progress=False)
    read = []

    class Rows(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            read.append(i)
            return torch.from_numpy(x[i])

    class Plain:  # map-style, not torch's
        __len__, __getitem__ = Rows.__len__, Rows.__getitem__

    for source, what, items in (
            (Rows(), "a torch Dataset (Rows)", "samples"),
            (DataLoader(Rows(), batch_size=2), "a torch DataLoader (DataLoader)", "batches"),
            (Stream([x]), "a torch IterableDataset (Stream)", "samples"),
            (Plain(), "a map-style dataset (Plain)", "samples"),
            (iter([x]), "an iterable (list_iterator)", "batches")):
        with pytest.raises(TypeError, match=rf"transform does not take {re.escape(what)}: "
                           r".* Pass the "
                           rf"data as an array or files .* loop over its {items} and "
                           r"normalize each with the Normalizer"):
            nbbn.transform(source, stats, np.empty((4, 3)), progress=False)
    assert read == []


def test_a_dict_is_not_an_iterable_of_samples():
    with pytest.raises(TypeError, match="batched=False applies to iterables"):
        nbbn.fit({"a": np.ones((2, 3))}, batched=False, progress=False)


def test_a_checkpoint_past_the_end_of_the_dataset_is_refused(tmp_path):
    """A position at or past the last sample is refused with a CheckpointError, not
    the Dataset's IndexError (a resume with a Dataset of exactly the counted samples
    raised its ``__getitem__``'s IndexError)."""
    from nbbn._datasets import DatasetSource
    from nbbn._shards import Slot
    from nbbn.sources import Position

    three = Images(_images(np.random.default_rng(8), 3))
    for start in (Position(3, 0), Position(3, 1), Position(4, 0)):
        with pytest.raises(CheckpointError, match=f"checkpoint is at sample {start.shard}"):
            list(DatasetSource(three, key=0).batches(None, start, Slot))
    images = _images(np.random.default_rng(9), 8)
    ck = tmp_path / "fit.ckpt"
    with pytest.raises(OSError, match="cannot decode image 6"):
        nbbn.fit(Images(images, fail_at=6), key=0, checkpoint=ck, checkpoint_interval=0,
                 progress=False)
    with pytest.raises(CheckpointError, match="has 5 samples, but the checkpoint"):
        nbbn.fit(Images(images[:5]), key=0, checkpoint=ck, resume=True, progress=False)


@pytest.mark.parametrize("change", ["shorter", "last_counted"])
def test_a_resume_with_another_dataset_is_refused(tmp_path, change):
    """The digest holds the Dataset's length and the last counted sample: a Dataset one
    sample shorter, or with another sample 4, is refused."""
    images = _images(np.random.default_rng(10), 8)
    ck = tmp_path / "fit.ckpt"
    with pytest.raises(OSError, match="cannot decode image 5"):
        nbbn.fit(Images(images, fail_at=5), key=0, checkpoint=ck, checkpoint_interval=0,
                 progress=False)
    other = images[:7] if change == "shorter" else [*images[:4], images[4] + 1, *images[5:]]
    with pytest.raises(CheckpointError, match="does not hold the samples"):
        nbbn.fit(Images(other), key=0, checkpoint=ck, resume=True, progress=False)


def test_a_shuffled_bfloat16_loader_does_not_resume_another_order(tmp_path):
    """Only numpy items' first rows were in the iterable's digest; a bfloat16 batch
    stays a tensor, so a loader shuffled otherwise resumed the checkpoint, counting some
    rows twice and others never (float32 was refused)."""
    data = torch.randn(40, 3).to(torch.bfloat16)
    ck = str(tmp_path / "fit.ckpt")

    def loader(seed):
        return DataLoader(TensorDataset(data), batch_size=8, shuffle=True,
                          generator=torch.Generator().manual_seed(seed))

    with pytest.raises(RuntimeError, match="stop"):
        nbbn.fit(_stop_after(loader(0), 2), key=0, checkpoint=ck, checkpoint_interval=0,
                 progress=False)
    with pytest.raises(CheckpointError, match="first rows differ"):
        nbbn.fit(loader(1), key=0, checkpoint=ck, resume=True, progress=False)
    stats = nbbn.fit(loader(0), key=0, checkpoint=ck, resume=True, progress=False)
    np.testing.assert_allclose(stats.mean, data.double().mean(0).numpy(), rtol=1e-12)
    assert stats.count.tolist() == [40] * 3


def _stop_after(items, n):
    for i, item in enumerate(items):
        if i == n:
            raise RuntimeError("stop")
        yield item


def test_samples_collated_as_a_list_of_pairs_are_refused_with_a_key():
    """collate_fn=list over (x, y) samples: key=0 picked sample 0 and pooled its x and y
    as the batch's rows (same shapes), or let numpy's ragged error through."""
    x = torch.randn(16, 3)
    for y in (torch.randn(16, 3), torch.arange(16)):
        loader = DataLoader(TensorDataset(x, y), batch_size=4, collate_fn=list)
        with pytest.raises(ValueError, match=r"item 0 of the iterable is a list of 4 tuples "
                                             r"\(samples such as \(x, y\)\): a batch collated"):
            nbbn.fit(loader, key=0, progress=False)


def test_pil_images_are_refused_not_read_as_rows_or_palette_indices():
    # torchvision's ImageFolder without a transform gives (PIL image, label): np.asarray
    # made (H, W, C) samples whose rows were counted as channels, with no error
    image = pytest.importorskip("PIL.Image")
    rgb = image.fromarray(np.arange(126, dtype=np.uint8).reshape(6, 7, 3))
    palette = image.fromarray(np.zeros((4, 4), np.uint8), "P")

    class Folder:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return rgb, 0

    words = "is a PIL image (mode 'RGB', 7x6), which nbbn does not read as an array"
    with pytest.raises(TypeError, match=re.escape(f"item 0 {words}")):
        nbbn.fit(Folder(), key=0, progress=False)
    with pytest.raises(TypeError, match=re.escape(f"item 0 {words}")):
        nbbn.fit([rgb, rgb], progress=False)
    rs = nbbn.RunningStats(channel_axis=-1)
    rs.update(np.asarray(rgb))
    before = rs.to_dict()
    with pytest.raises(TypeError, match="PILToTensor"):
        rs.update(rgb)
    with pytest.raises(TypeError, match=re.escape("an item of batch is a PIL image (mode 'P'")):
        rs.update([palette])
    assert all(np.array_equal(before[k], v) for k, v in rs.to_dict().items())
