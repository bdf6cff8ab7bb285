"""Image sources: exact statistics and histograms of decoded pixels, errors, resume, CLI.

Small generated files (JPEG, PNG 8/16-bit, grayscale, RGBA, WebP, TIFF, BMP, a
truncated file, a non-image file, mixed sizes). The reference is float64 numpy over
the pixels of the *same* decoder, decoded here directly (simplejpeg for JPEG, Pillow
for the rest): different JPEG decoders may differ by one level.
"""

from __future__ import annotations

import glob as glob_mod
import json
import os
import signal
import sys

import numpy as np
import pytest

PIL_Image = pytest.importorskip("PIL.Image")
simplejpeg = pytest.importorskip("simplejpeg")

import nbbn  # noqa: E402
from nbbn import ImageError, ImageSource, _images  # noqa: E402
from nbbn._histogram import Histogram  # noqa: E402
from nbbn.cli import main  # noqa: E402


def fit(src, **kw):
    kw.setdefault("progress", False)
    return nbbn.fit(src, **kw)


def smooth(rng, h, w, c, dtype=np.uint8):
    """An image with structure (gradients plus noise), so JPEG keeps it interesting."""
    top = np.iinfo(dtype).max
    y, x = np.mgrid[0:h, 0:w]
    base = [(x * top // max(w - 1, 1)), (y * top // max(h - 1, 1)), ((x + y) * 37) % (top + 1),
            np.full((h, w), top // 2)]
    img = np.stack(base[:c], -1).astype(np.int64) + rng.integers(-top // 8, top // 8,
                                                                  (h, w, c))
    return np.clip(img, 0, top).astype(dtype).squeeze(-1 if c == 1 else ())


def save(img, path, **kw):
    PIL_Image.fromarray(img).save(path, **kw)
    return str(path)


def pillow_pixels(path, mode=None):
    im = PIL_Image.open(path)
    if mode is not None:
        im = im.convert(mode)
    a = np.asarray(im)
    return a[..., None] if a.ndim == 2 else a


def jpeg_pixels(path):
    with open(path, "rb") as f:
        return simplejpeg.decode_jpeg(f.read(), colorspace="RGB")


def check_exact(stats, pixels):
    """``stats`` against float64 numpy over the (N, C) pixels of every image."""
    ref = np.concatenate([p.reshape(-1, p.shape[-1]) for p in pixels]).astype(np.float64)
    np.testing.assert_array_equal(stats.count, np.full(ref.shape[1], ref.shape[0]))
    np.testing.assert_allclose(stats.mean, ref.mean(0), rtol=1e-14, atol=0)
    np.testing.assert_allclose(stats.var, ref.var(0), rtol=1e-12, atol=0)
    np.testing.assert_array_equal(stats.min, ref.min(0))
    np.testing.assert_array_equal(stats.max, ref.max(0))
    return ref


@pytest.fixture
def rgb_folder(tmp_path, rng):
    """JPEG, PNG, WebP (lossless), TIFF and BMP RGB images of mixed sizes, in subfolders."""
    d = tmp_path / "imgs"
    (d / "b").mkdir(parents=True)
    files = [save(smooth(rng, 21, 34, 3), d / "a0.jpg", quality=90),
             save(smooth(rng, 17, 9, 3), d / "b" / "a1.JPEG", quality=75),
             save(smooth(rng, 30, 20, 3), d / "b" / "a2.png"),
             save(smooth(rng, 12, 40, 3), d / "a3.webp", lossless=True),
             save(smooth(rng, 8, 8, 3), d / "a4.tif"),
             save(smooth(rng, 5, 13, 3), d / "a5.bmp")]
    (d / "labels.txt").write_text("not an image, and not named like one\n")
    return d, sorted(files)


def reference_pixels(path):
    return jpeg_pixels(path) if path.lower().endswith((".jpg", ".jpeg")) else \
        pillow_pixels(path)


def test_folder_exact_against_float64_of_same_decoder(rgb_folder):
    d, files = rgb_folder
    stats = fit(str(d))  # a folder of images; channel_axis -1 by default
    assert stats.channel_axis == -1 and stats.histogram is None and stats.skipped == []
    check_exact(stats, [reference_pixels(f) for f in files])
    # (1, H, W, C) batches: channel axis 3 is the last axis too, accepted as -1
    check_exact(fit(str(d), channel_axis=3), [reference_pixels(f) for f in files])


def test_histogram_bincount_and_percentiles(rgb_folder):
    d, files = rgb_folder
    stats = fit(ImageSource(d, histogram=True, workers=2))
    ref = np.concatenate([reference_pixels(f).reshape(-1, 3) for f in files])
    counts = np.stack([np.bincount(ref[:, c], minlength=256) for c in range(3)])
    np.testing.assert_array_equal(stats.histogram.counts, counts)
    q = [0, 0.1, 1, 25, 50, 77.7, 99, 100]
    np.testing.assert_allclose(stats.histogram.percentile(q), np.percentile(ref, q, axis=0),
                               rtol=1e-13, atol=1e-12)


def test_pillow_jpeg_decoder_and_list_and_glob(rgb_folder):
    d, files = rgb_folder
    jpegs = [f for f in files if f.lower().endswith((".jpg", ".jpeg"))]
    stats = fit(ImageSource(jpegs, jpeg_decoder="pillow"))
    check_exact(stats, [pillow_pixels(f) for f in jpegs])
    stats = fit(os.path.join(d, "**", "*.png"))  # a glob
    check_exact(stats, [pillow_pixels(f) for f in files if f.endswith(".png")])


def test_sixteen_bit_gray_png_and_tiff(tmp_path, rng):
    files = [save(smooth(rng, 20, 11, 1, np.uint16), tmp_path / "g0.png"),
             save(smooth(rng, 7, 15, 1, np.uint16), tmp_path / "g1.tiff")]
    stats = fit(ImageSource(tmp_path, histogram=True))
    pixels = [pillow_pixels(f) for f in files]
    assert all(p.dtype == np.uint16 for p in pixels)
    ref = check_exact(stats, pixels)
    assert stats.histogram.bits == 16
    np.testing.assert_array_equal(stats.histogram.counts[0],
                                  np.bincount(ref[:, 0].astype(np.int64), minlength=65536))
    # mode="L" scales 16-bit values to 8 bits as round(v / 257)
    stats8 = fit(ImageSource(tmp_path, mode="L"))
    check_exact(stats8, [np.round(p / 257.0) for p in pixels])
    # a big-endian TIFF (Pillow's I;16B): the same values, in native uint16
    be = smooth(rng, 6, 9, 1, np.uint16)
    PIL_Image.fromarray(be.astype(">u2")).save(tmp_path / "be.tif")
    with PIL_Image.open(tmp_path / "be.tif") as im:
        assert im.mode == "I;16B"
    stats = fit(ImageSource(tmp_path / "be.tif", histogram=True))
    check_exact(stats, [be[..., None]])
    np.testing.assert_array_equal(stats.histogram.counts[0],
                                  np.bincount(be.ravel(), minlength=65536))


def test_ppm_and_pgm_files_as_torchvisions_image_folder_reads_them(tmp_path, rng):
    """``.ppm``/``.pgm`` (in torchvision's ``ImageFolder`` list) were not images, and a
    16-bit PGM, which Pillow opens in its 32-bit mode I, was refused as "32-bit
    integers"; it gives its 16-bit levels, as a 16-bit PNG does."""
    rgb = smooth(rng, 9, 7, 3, np.uint8)
    save(rgb, tmp_path / "c.ppm")
    check_exact(fit(tmp_path), [rgb])
    deep = smooth(rng, 8, 5, 1, np.uint16)
    (tmp_path / "g").mkdir()
    save(deep, tmp_path / "g" / "d.pgm")
    with PIL_Image.open(tmp_path / "g" / "d.pgm") as im:
        assert im.mode == "I"
    stats = fit(ImageSource(tmp_path / "g", histogram=True))
    check_exact(stats, [deep[..., None]])
    assert stats.histogram.bits == 16
    check_exact(fit(ImageSource(tmp_path / "g", mode="L")), [np.round(deep / 257.0)[..., None]])


def test_a_mode_read_only_through_a_conversion_is_named_as_such(tmp_path, rng):
    """An 8-bit YCbCr TIFF was refused with "(8- and 16-bit images only)": misleading
    for 8-bit pixels; the message names the modes read, and mode= converts it."""
    PIL_Image.fromarray(smooth(rng, 4, 4, 3)).convert("YCbCr").save(tmp_path / "y.tif")
    with pytest.raises(ImageError, match=r"mode YCbCr are not read as they are \(nbbn reads "
                                         r"the modes L, LA, RGB"):
        fit(str(tmp_path / "y.tif"))
    assert fit(ImageSource(tmp_path / "y.tif", mode="RGB")).count.tolist() == [16] * 3


def test_own_channels_kept_mismatch_named_mode_converts(tmp_path, rng):
    gray = save(smooth(rng, 9, 9, 1), tmp_path / "a.png")
    rgba = save(smooth(rng, 9, 6, 4), tmp_path / "b.png")
    with pytest.raises(ImageError, match=r"b\.png: the image has 4 channels.*have 1"):
        fit(str(tmp_path))
    stats = fit(ImageSource(tmp_path, on_error="skip"))
    check_exact(stats, [pillow_pixels(gray)])
    assert len(stats.skipped) == 1 and stats.skipped[0].startswith(rgba)
    stats = fit(ImageSource(tmp_path, mode="RGB"))
    check_exact(stats, [pillow_pixels(gray, "RGB"), pillow_pixels(rgba, "RGB")])
    stats = fit(ImageSource(rgba))  # RGBA kept as 4 channels
    check_exact(stats, [pillow_pixels(rgba)])


def test_bad_files_named_or_skipped_and_listed(rgb_folder, tmp_path):
    d, files = rgb_folder
    with open(files[0], "rb") as f:
        data = f.read()
    (d / "cut.jpg").write_bytes(data[: len(data) // 2])
    (d / "fake.png").write_text("hello")
    with pytest.raises(ImageError, match=r"cut\.jpg: cannot decode the image, truncated"):
        fit(str(d))
    stats = fit(ImageSource(d, on_error="skip", histogram=True))
    check_exact(stats, [reference_pixels(f) for f in files])
    assert [s.split(":")[0] for s in stats.skipped] == [str(d / "cut.jpg"), str(d / "fake.png")]
    assert "not an image file" in stats.skipped[1]
    for entry, name in zip(stats.skipped, ("cut.jpg", "fake.png"), strict=True):
        assert entry.startswith(f"{d / name}: ") and entry.count(name) == 1  # named once
    stats.save(tmp_path / "s.npz")
    back = nbbn.RunningStats.load(tmp_path / "s.npz")
    assert back.skipped == stats.skipped
    np.testing.assert_array_equal(back.histogram.counts, stats.histogram.counts)


def test_resume_after_interruption_is_bit_for_bit(rgb_folder, tmp_path, monkeypatch):
    d, files = rgb_folder
    whole = fit(ImageSource(d, histogram=True))
    account = _images.ImageBatch.account

    def ctrl_c_at_image_2(self, stats):
        if self.shard == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while image 2 is counted
        account(self, stats)

    monkeypatch.setattr(_images.ImageBatch, "account", ctrl_c_at_image_2)
    ck = tmp_path / "fit.ckpt"
    with pytest.raises(nbbn.FitInterrupted) as info:
        fit(ImageSource(d, histogram=True), checkpoint=ck, checkpoint_interval=0)
    monkeypatch.undo()
    done = sum(reference_pixels(f).shape[0] * reference_pixels(f).shape[1] for f in files[:3])
    assert int(info.value.stats.count[0]) == done
    # counted in images, as the message says (it said "3 rows"), and so when pickled
    import pickle

    from nbbn._cli_errors import interrupted_message

    assert str(info.value).startswith("fit interrupted after 3 images; checkpoint saved")
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and again.rows_done == 3
    assert "interrupted after 3 images; progress saved" in interrupted_message(
        info.value, "fit", ["fit", str(d)])
    resumed = fit(ImageSource(d, histogram=True), checkpoint=ck, resume=True)
    da, db = whole.to_dict(), resumed.to_dict()
    assert da.keys() == db.keys()
    for k in da:
        assert np.array_equal(np.asarray(da[k]), np.asarray(db[k])), k
    # another list of files, or other settings: refused
    with pytest.raises(nbbn.CheckpointError, match="digest"):
        fit(ImageSource(files[:3], histogram=True), checkpoint=ck, resume=True)
    with pytest.raises(nbbn.CheckpointError, match="histogram"):
        fit(ImageSource(d), checkpoint=ck, resume=True)


def test_size_resizes_like_pillow(rgb_folder):
    d, files = rgb_folder
    stats = fit(ImageSource(d, size=(6, 7), jpeg_decoder="pillow"))
    resized = [np.asarray(PIL_Image.open(f).convert("RGB").resize((7, 6),
                                                                  PIL_Image.Resampling.BILINEAR))
               for f in files]
    check_exact(stats, resized)
    assert int(stats.count[0]) == 6 * 7 * len(files)
    # an int is the shorter side; the longer is int(size * long / short), as torchvision
    stats = fit(ImageSource(d, size=5, jpeg_decoder="pillow"))
    resized = []
    for f in files:
        im = PIL_Image.open(f).convert("RGB")
        w, h = im.size
        want = (5, int(5 * w / h)) if h <= w else (int(5 * h / w), 5)  # (height, width)
        resized.append(np.asarray(im.resize(want[::-1], PIL_Image.Resampling.BILINEAR)))
        assert min(resized[-1].shape[:2]) == 5
    check_exact(stats, resized)


def test_histogram_object_merge_update_and_checks(rng):
    a = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (2, 5, 3), dtype=np.uint8)
    s1, s2 = nbbn.RunningStats(-1), nbbn.RunningStats(-1)
    s1.histogram, s2.histogram = Histogram.empty(3, np.uint8), Histogram.empty(3, np.uint8)
    s1.update(a)
    s2.update(b)
    both = np.concatenate([a, b]).reshape(-1, 3)
    want = np.stack([np.bincount(both[:, c], minlength=256) for c in range(3)])
    np.testing.assert_array_equal((s1 + s2).histogram.counts, want)
    s1 += s2
    np.testing.assert_array_equal(s1.histogram.counts, want)
    before = s1.to_dict()
    with pytest.raises(ValueError, match="8-bit histogram"):
        s1.update(a.astype(np.float32))
    after = s1.to_dict()
    assert all(np.array_equal(np.asarray(before[k]), np.asarray(after[k])) for k in before)
    with pytest.raises(ValueError, match=r"in \[0, 100\]"):
        s1.histogram.percentile(101)
    assert np.isnan(Histogram.empty(2, np.uint16).percentile(50)).all()


def test_percentiles_of_a_2d_q_and_merges_past_the_count_limit():
    """q of any shape gives np.percentile's shape (a 2-d q raised TypeError); a merge
    whose channel would count past 2**62 is refused, unchanged (it wrapped to negative
    counts)."""
    x = np.arange(12, dtype=np.uint8).reshape(4, 3)
    q = [[10, 20], [30, 40]]
    assert np.array_equal(Histogram.of(x).percentile(q), np.percentile(x, q, axis=0))
    h = Histogram(np.full((1, 256), 2 ** 62 // 256, np.int64))
    with pytest.raises(ValueError, match="2\\*\\*62"):
        h += h.copy()
    assert h.counts[0, 0] == 2 ** 62 // 256
    with pytest.raises(ValueError, match="sum to at most 2\\*\\*62"):
        Histogram(np.full((1, 256), 2 ** 62 // 200, np.int64))


def test_percentiles_are_numpys_to_the_bit(rng):
    """Histogram.percentile is np.percentile (method "linear") operation for operation:
    the same float64 for random counts and percentiles, and where a plain lerp from the
    lower end differs in the last bit (101 values 0, 2, ..., 200 at q = 29)."""
    x = np.arange(101, dtype=np.uint8).reshape(-1, 1) * 2
    assert Histogram.of(x).percentile(29)[0] == np.percentile(x, 29, axis=0)[0]
    for _ in range(40):
        v = rng.integers(0, 65536, size=(int(rng.integers(1, 300)), 2)).astype(np.uint16)
        q = np.concatenate([rng.uniform(0, 100, 30), [0, 25, 50, 99.9, 100]])
        np.testing.assert_array_equal(Histogram.of(v).percentile(q),
                                      np.percentile(v, q, axis=0))


def test_histograms_merge_with_statistics_of_empty_batches_and_huge_counts(rng):
    """A side that saw only empty batches keeps the other's histogram (as a side that saw
    nothing); percentile(100) of more than 2^53 values is the largest value, as numpy."""
    x = rng.integers(0, 256, (10, 3), dtype=np.uint8)
    a = nbbn.RunningStats(-1)
    a.histogram = Histogram.empty(3, np.uint8)
    a.update(x)
    for merged in (a + nbbn.RunningStats(-1).update(np.zeros((0, 3), np.uint8)),
                   nbbn.RunningStats(-1).update(np.zeros((0, 3), np.uint8)) + a):
        np.testing.assert_array_equal(merged.histogram.counts, a.histogram.counts)
    e = nbbn.RunningStats(-1).update(np.zeros((0, 3), np.uint8))
    e += a
    np.testing.assert_array_equal(e.histogram.counts, a.histogram.counts)
    counts = np.zeros((1, 256), np.int64)
    counts[0, 3], counts[0, 7] = 1, 2**54 - 1  # (n - 1 rounds up to n in float64)
    assert Histogram(counts).percentile(100)[0] == 7.0


def test_bad_arguments_and_sources(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    for kw, match in [({"mode": "CMYK"}, "mode must be"), ({"workers": 0}, "workers"),
                      ({"size": (3,)}, "size"), ({"on_error": "ignore"}, "on_error"),
                      ({"size": 0}, "size must be a positive int"),
                      ({"workers": True}, "workers must be a positive integer"),
                      ({"jpeg_decoder": "turbo"}, "jpeg_decoder must be")]:
        with pytest.raises(ValueError, match=match):
            ImageSource(tmp_path, **kw)
    with pytest.raises(ValueError, match="channel axis is -1"):
        fit(str(tmp_path), channel_axis=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .npy or .npz files, no Parquet or "
                       "CSV files, and no image files"):
        fit(str(empty))
    with pytest.raises(FileNotFoundError, match="matches no image"):
        ImageSource(str(tmp_path / "*.jpg"))
    with pytest.raises(ValueError, match="not on a cluster"):
        fit(str(tmp_path), client="tcp://127.0.0.1:1")
    with pytest.raises(TypeError, match="transform does not write images"):
        nbbn.transform(str(tmp_path), nbbn.RunningStats(-1).update(np.zeros((1, 3), np.uint8)),
                       str(tmp_path / "o.npy"))


def test_missing_pillow_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(nbbn.MissingExtraError, match=r"nbbn\[images\]"):
        ImageSource(tmp_path)


def test_cli_jpeg_decoder_gives_pillows_gray_levels(tmp_path, rng, capsys):
    """``--mode L`` of a colour JPEG: simplejpeg's stored luma by default, Pillow's
    conversion (torchvision's values) with ``--jpeg-decoder pillow``, which the CLI could
    not ask for."""
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # colour edges everywhere
    path = save(img, tmp_path / "c.jpg", quality=90)
    means = {}
    for decoder in ("auto", "pillow"):
        assert main(["fit", path, "--mode", "L", "--jpeg-decoder", decoder, "--format",
                     "json", "--no-progress"]) == 0
        means[decoder] = json.loads(capsys.readouterr().out)["mean"][0]
        want = fit(ImageSource(path, mode="L", jpeg_decoder=decoder)).mean[0]
        assert means[decoder] == want
    assert means["pillow"] == pillow_pixels(path, "L").astype(np.float64).mean()
    assert means["pillow"] != means["auto"]


def test_cli_fit_histogram_info_percentiles_skips(rgb_folder, tmp_path, capsys):
    d, files = rgb_folder
    (d / "zz.png").write_text("junk")
    out = tmp_path / "s.npz"
    assert main(["fit", str(d), "--histogram", "--workers", "2", "--mode", "RGB",
                 "--on-error", "skip", "-o", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 file:" in err and "zz.png" in err
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "exact percentiles per channel" in text and "1 file was skipped" in text
    # the JSON names the skipped files too (it left them out)
    assert main(["fit", str(d), "--mode", "RGB", "--on-error", "skip", "--format", "json",
                 "--no-progress"]) == 0
    skipped = json.loads(capsys.readouterr().out)["skipped"]
    assert len(skipped) == 1 and "zz.png" in skipped[0]
    pytest.importorskip("matplotlib")
    assert main(["plot", str(out)]) == 0
    assert (tmp_path / "s.histogram.png").stat().st_size > 1000
    assert main(["fit", str(d), "--no-progress"]) == 2
    assert "zz.png: not an image file" in capsys.readouterr().err


def test_cli_skip_reasons_give_the_commands_options(tmp_path, capsys):
    """``nbbn fit --on-error skip`` listed a skipped image's advice in Python's spelling
    ("pass mode='RGB'"), where the same error without skip says "--mode RGB"."""
    PIL_Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    PIL_Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "b.png")
    assert main(["fit", str(tmp_path), "--on-error", "skip", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "b.png: the image has 3 channels" in err and "pass --mode RGB (colour) or " \
        "--mode L (grayscale)" in err and "mode='RGB'" not in err, err
    assert "mode='RGB'" in fit(ImageSource(tmp_path, on_error="skip")).skipped[0]


def test_a_mismatch_skipped_is_said_when_it_happens(tmp_path, capsys):
    """A file skipped for its channels (or depth) gets its line when it is skipped, as
    one that cannot be decoded does: it appeared only in the final list."""
    PIL_Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    PIL_Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "b.png")
    (tmp_path / "c.png").write_text("junk")
    rs = fit(ImageSource(tmp_path, on_error="skip"))
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"nbbn: skipped {s}" for s in rs.skipped] and len(lines) == 2, lines
    assert "b.png: the image has 1 channel, but" in lines[0]
    fit(ImageSource(tmp_path, on_error="skip", progress=False))
    assert capsys.readouterr().err == ""


def test_cmyk_is_resized_as_cmyk(tmp_path, rng):
    """size= resizes a CMYK image in its own mode (as torchvision's Resize of the Pillow
    image); as an RGBA array its K channel was an alpha to premultiply by."""
    flat = np.zeros((8, 8, 4), np.uint8)
    flat[..., :3] = (200, 100, 50)
    noisy = rng.integers(0, 256, (16, 16, 4)).astype(np.uint8)
    for name, a, size in (("flat.tif", flat, 4), ("noisy.tif", noisy, 8)):
        PIL_Image.frombytes("CMYK", a.shape[1::-1], a.tobytes()).save(tmp_path / name)
        got = nbbn.fit(ImageSource(str(tmp_path / name), size=size), progress=False).mean
        with PIL_Image.open(tmp_path / name) as im:
            want = np.asarray(im.resize((size, size), PIL_Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(got, want.reshape(-1, 4).mean(0))


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_linked_folders_followed_broken_links_skipped(tmp_path):
    """A folder source follows linked folders (each real folder once, as a ** glob and
    torchvision's ImageFolder); a broken link is an ImageError naming it, or skipped."""
    real = tmp_path / "real"
    real.mkdir()
    PIL_Image.new("L", (4, 4), 9).save(real / "a.png")
    top = tmp_path / "top"
    top.mkdir()
    PIL_Image.new("L", (4, 4), 3).save(top / "own.png")
    try:
        (top / "cls").symlink_to(real, target_is_directory=True)
        (top / "loop").symlink_to(top, target_is_directory=True)  # followed once at most
    except OSError:
        pytest.skip("symbolic links not permitted")
    assert [os.path.basename(p) for p in ImageSource(str(top)).paths] == ["a.png", "own.png"]
    (top / "broken.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(ImageError, match="broken.png: cannot read the file"):
        nbbn.fit(ImageSource(str(top)), progress=False)
    rs = nbbn.fit(ImageSource(str(top), on_error="skip"), progress=False)
    assert rs.count[0] == 32 and len(rs.skipped) == 1


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_a_broken_link_in_a_glob_or_list_is_named_or_skipped(tmp_path):
    """As in a folder, a broken link a glob matches or a list names is an ImageError
    when it is decoded, or skipped: a glob left it out without a word, and a list
    refused it up front ("no such file"), under on_error="skip" too."""
    PIL_Image.new("L", (4, 4), 9).save(tmp_path / "a.png")
    try:
        (tmp_path / "broken.png").symlink_to(tmp_path / "nowhere.png")
    except OSError:
        pytest.skip("symbolic links not permitted")
    broken = str(tmp_path / "broken.png")
    for source in (str(tmp_path / "*.png"), [str(tmp_path / "a.png"), broken]):
        with pytest.raises(ImageError, match="broken.png: cannot read the file"):
            fit(ImageSource(source))
        rs = fit(ImageSource(source, on_error="skip"))
        assert rs.count[0] == 16 and rs.skipped == [
            f"{broken}: cannot read the file (No such file or directory)"], source


def test_an_image_beyond_pillows_limit_is_an_image_error(tmp_path, monkeypatch):
    PIL_Image.new("L", (40, 40), 7).save(tmp_path / "huge.png")
    monkeypatch.setattr(PIL_Image, "MAX_IMAGE_PIXELS", 100)  # 1,600 > 2 x 100: a "bomb"
    with pytest.raises(ImageError, match="huge.png: .*MAX_IMAGE_PIXELS"):
        nbbn.fit(ImageSource(str(tmp_path)), progress=False)
    assert len(nbbn.fit(ImageSource(str(tmp_path), on_error="skip"), progress=False).skipped) == 1


@pytest.mark.parametrize("decoder", ["auto", "pillow"])
def test_pillows_size_guard_holds_for_jpeg_files_too(tmp_path, monkeypatch, decoder):
    """simplejpeg (the default JPEG decoder) checked no size: a JPEG past twice Pillow's
    MAX_IMAGE_PIXELS was counted where the same PNG was refused, and one past the limit
    gave no DecompressionBombWarning."""
    jpg = save(np.zeros((40, 48, 3), np.uint8), tmp_path / "big.jpg")
    monkeypatch.setattr(PIL_Image, "MAX_IMAGE_PIXELS", 100)  # 1,920 > 2 x 100
    with pytest.raises(ImageError, match="big.jpg: .*MAX_IMAGE_PIXELS"):
        fit(ImageSource(jpg, jpeg_decoder=decoder))
    monkeypatch.setattr(PIL_Image, "MAX_IMAGE_PIXELS", 1000)  # between 1x and 2x: a warning
    with pytest.warns(PIL_Image.DecompressionBombWarning):
        assert fit(ImageSource(jpg, jpeg_decoder=decoder)).count.tolist() == [1920] * 3
    monkeypatch.setattr(PIL_Image, "MAX_IMAGE_PIXELS", None)  # no limit (as Pillow's None)
    assert fit(ImageSource(jpg, jpeg_decoder=decoder)).count.tolist() == [1920] * 3
    # exactly twice the limit: Pillow warns (raises only past it), for a PNG as a JPEG
    monkeypatch.setattr(PIL_Image, "MAX_IMAGE_PIXELS", 960)
    png = save(np.zeros((40, 48, 3), np.uint8), tmp_path / "big.png")
    with pytest.warns(PIL_Image.DecompressionBombWarning), PIL_Image.open(png) as im:
        im.load()
    with pytest.warns(PIL_Image.DecompressionBombWarning):
        assert fit(ImageSource(jpg, jpeg_decoder=decoder)).count.tolist() == [1920] * 3


def test_load_truncated_images_is_warned_about(tmp_path, monkeypatch):
    """With Pillow's LOAD_TRUNCATED_IMAGES set (as many training scripts do), a truncated
    PNG is decoded with zeros and counted: the fit says so (it said nothing)."""
    from PIL import ImageFile

    path = save(np.full((40, 48, 3), 200, np.uint8), tmp_path / "t.png")
    fit(ImageSource(path))  # (no warning while the flag is off: pytest errors on warnings)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.warns(UserWarning, match="LOAD_TRUNCATED_IMAGES"):
        fit(ImageSource(path))


def test_messages_for_image_sources_name_the_right_thing(tmp_path):
    """An ImageSource of a folder of arrays, a glob of images that matches nothing, a
    list that mixes images and other files: each message says what is wrong (they spoke
    of .npy files, or blamed the image)."""
    np.save(tmp_path / "a.npy", np.zeros((4, 3)))
    with pytest.raises(FileNotFoundError, match="holds no image files.*a.npy"):
        ImageSource(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="matches no image file"):
        fit(str(tmp_path / "*.gif"))
    png = save(np.zeros((4, 5, 3), np.uint8), tmp_path / "a.png")
    (tmp_path / "labels.txt").write_text("x")
    with pytest.raises(ValueError, match="labels.txt'?: not an image file"):
        fit([png, str(tmp_path / "labels.txt")])
    assert not _images.looks_like_images([])  # (an empty list holds no image)
    # a list naming a missing file: refused when listed (not skipped under "skip")
    with pytest.raises(FileNotFoundError, match="gone.png: no such file"):
        ImageSource([png, str(tmp_path / "gone.png")], on_error="skip")


def test_depth_mismatch_suggests_the_images_own_mode(tmp_path):
    """A grayscale folder of 8- and 16-bit PNGs is told mode='L' (it was told 'RGB',
    which would triple its channels)."""
    save(np.zeros((4, 5), np.uint8), tmp_path / "a.png")
    save(np.zeros((4, 5), np.uint16), tmp_path / "b.png")
    with pytest.raises(ImageError, match="mode='L'"):
        fit(ImageSource(str(tmp_path)))


def test_a_batch_collated_as_a_list_of_samples_is_explained(rng):
    ims = [rng.integers(0, 256, (3, 16, w)).astype(np.uint8) for w in (20, 24, 28, 32)]
    for key in (None, 0):
        with pytest.raises(ValueError, match="collated as a list of samples"):
            nbbn.fit([ims], key=key, progress=False)


def test_info_lists_the_skipped_files_when_every_file_was(tmp_path, capsys):
    """When every file was skipped the statistics have no channels, and ``nbbn info``
    returned before the list of skipped files: the one case that needs it."""
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.png").write_text("x")
    (d / "b.jpg").write_text("y")
    out = tmp_path / "s.npz"
    assert main(["fit", str(d), "--on-error", "skip", "-o", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "no data: the statistics are empty" in text
    assert "2 files were skipped by the fit:" in text
    assert str(d / "a.png") in text and str(d / "b.jpg") in text


def test_32_bit_images_refused_where_8_bits_would_clip(tmp_path):
    """The error for 32-bit pixels (Pillow's I and F) said to pass a mode such as 'RGB',
    and Pillow's conversion clips to 0-255 without a word: mode "L" gave a mean of 255
    for values up to 2**20. Now refused with the range found, whatever the mode, unless
    the values are whole numbers in 0-255 (converted exactly when a mode is given)."""
    from PIL import Image

    big = tmp_path / "big"
    big.mkdir()
    Image.fromarray((np.arange(64).reshape(8, 8) * 16000).astype(np.int32)).save(big / "a.tif")
    Image.fromarray((np.arange(64).reshape(8, 8) / 3).astype(np.float32)).save(tmp_path / "f.tif")
    small = tmp_path / "small.tif"
    Image.fromarray(np.arange(64).reshape(8, 8).astype(np.int32)).save(small)
    for src, mode in ((big, None), (big, "L"), (tmp_path / "f.tif", "L")):
        with pytest.raises(ImageError, match=r"values from 0 to .* would clip them to 0-255"):
            nbbn.fit(ImageSource(src, mode=mode), progress=False)
    # (Pillow opens a signed 16-bit TIFF as mode I too: the words were "32-bit integers")
    with pytest.raises(ImageError, match=r"mode I \(signed 16- or 32-bit integers, values"):
        nbbn.fit(ImageSource(big), progress=False)
    with pytest.raises(ImageError, match=r"whole numbers in 0-255, which a mode such as 'L'"):
        nbbn.fit(ImageSource(small), progress=False)
    stats = nbbn.fit(ImageSource(small, mode="L"), progress=False)
    assert stats.count[0] == 64 and stats.mean[0] == 31.5 and stats.max[0] == 63
    top = np.arange(256).reshape(16, 16)  # 255 included: still exact
    Image.fromarray(top.astype(np.int32)).save(tmp_path / "top.tif")
    stats = nbbn.fit(ImageSource(tmp_path / "top.tif", mode="L"), progress=False)
    assert stats.max[0] == 255 and stats.mean[0] == top.mean()


def test_key_or_columns_for_images_refused(rgb_folder):
    """``key=`` and ``columns=`` name nothing in image files and were ignored (a
    checkpoint would record them); refused as for a .npy file or an array."""
    d, _ = rgb_folder
    with pytest.raises(ValueError, match=r"key='x' was given, but the source is image files"):
        nbbn.fit(d, key="x", progress=False)
    with pytest.raises(ValueError, match=r"columns=\['a'\] was given, but the source is "
                                         r"image files"):
        nbbn.fit(d, columns=["a"], progress=False)


def test_key_columns_and_batch_size_refused_for_an_image_source_and_in_the_cli(
        rgb_folder, tmp_path, capsys):
    """An ``ImageSource`` object (which ``nbbn fit`` opens first) was returned by
    ``open_source`` unchecked: ``key``, ``columns`` and ``batch_size`` were ignored, a
    checkpoint recorded them, and a resume without them was refused."""
    d, _ = rgb_folder
    for kw, match in [({"key": "x"}, r"key='x' was given, but the source is image files"),
                      ({"columns": ["a"]}, r"columns=\['a'\] was given, but the source is "
                                           "image files"),
                      ({"batch_size": 3}, r"batch_size=3 was given, but the source is image "
                                          r"files: each image is one batch")]:
        with pytest.raises(ValueError, match=match):
            nbbn.fit(ImageSource(d), progress=False, **kw)
    ck = tmp_path / "k.ckpt"
    for extra, said in [(["--key", "x", "--columns", "a,b"], "--key x was given"),
                        (["--columns", "a,b"], "--columns a,b was given"),
                        (["--batch-size", "3"], "--batch-size 3 was given")]:
        for out in ([], ["-o", str(tmp_path / "s.npz")]):  # (-o opens the source first)
            assert main(["fit", str(d), *extra, *out, "--checkpoint", str(ck),
                         "--no-progress"]) == 2
            assert f"{said}, but the source is image files" in capsys.readouterr().err
            assert not ck.exists() and not (tmp_path / "s.npz").exists()


def test_an_output_or_checkpoint_the_image_listing_would_read_is_refused(rgb_folder, tmp_path,
                                                                         capsys):
    """``-o imgs/new.png`` was written (a zip named .png), and the next fit of the folder
    failed on it; a ``--checkpoint`` named like an image below the folder (searched
    recursively) or matched by the glob joined the list, so the fit never resumed."""
    d, _ = rgb_folder
    for args in (["-o", str(d / "new.png")], ["--checkpoint", str(d / "b" / "ck.PNG")]):
        assert main(["fit", str(d), *args, "--no-progress"]) == 2
        assert "would be read as data of" in capsys.readouterr().err
    pattern = str(d / "**" / "*.webp")  # (** matches no folder too)
    assert main(["fit", pattern, "--checkpoint", str(d / "ck.webp"), "--no-progress"]) == 2
    assert f"is matched by the pattern {pattern}: the next fit of it would read it as " \
        "data" in capsys.readouterr().err
    for source in (ImageSource(d), str(d)):
        with pytest.raises(ValueError, match="would be read as data of"):
            nbbn.fit(source, checkpoint=d / "b" / "ck.jpg", progress=False)
    assert sorted(glob_mod.glob(str(d / "**" / "*"), recursive=True)) == sorted(
        [str(d / "b"), str(d / "labels.txt"), *rgb_folder[1]])  # nothing was written
    # a glob that does not match it, or a name that is no image's: written
    assert main(["fit", str(d / "*.webp"), "--checkpoint", str(d / "b" / "ck.webp"),
                 "--no-progress"]) == 0
    (d / "b" / "ck.webp").unlink()  # (a fit of the folder would read it)
    nbbn.fit(ImageSource(d), checkpoint=d / "b" / "fit.ckpt", progress=False)
    nbbn.fit(ImageSource(d), checkpoint=d / "b" / "fit.ckpt", resume=True, progress=False)


def test_image_checkpoint_errors_name_the_kinds_the_counts_and_the_skip(rgb_folder, tmp_path,
                                                                         capsys):
    """Resumed on a .npy file, an image checkpoint said "(ImageSource vs Source)"; a stop
    on an unreadable file said "--resume continues", which stopped on the same file
    again; a changed list gave two digests only, not how many files it held."""
    d, files = rgb_folder
    (d / "b" / "zz.png").write_text("junk")  # (the last of the sorted list)
    ck = tmp_path / "k.ckpt"
    cmd = ["fit", str(d), "--checkpoint", str(ck), "--no-progress"]
    for resume in ([], ["--resume"]):
        assert main(cmd + resume) == 2
        err = capsys.readouterr().err
        assert "zz.png: not an image file" in err
        if sys.version_info >= (3, 11):  # exceptions have notes from 3.11 on
            assert f"{len(files)} images before the error were saved to" in err
            assert ("--resume continues with --on-error skip to leave the file out "
                    "(--resume alone stops on it again)") in err
    assert main(cmd + ["--resume", "--on-error", "skip"]) == 0
    assert "skipped 1 file" in capsys.readouterr().err
    (d / "b" / "zz.png").unlink()
    with pytest.raises(nbbn.CheckpointError, match=rf"digest .*\(a list of {len(files) + 1} "
                                                   rf"files then, {len(files)} now\)"):
        nbbn.fit(ImageSource(d), checkpoint=ck, resume=True, progress=False)
    ck.unlink()
    nbbn.fit(ImageSource(d), checkpoint=ck, progress=False)
    st = os.stat(files[0])
    os.utime(files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(nbbn.CheckpointError, match=rf"\(a list of {len(files)} files then and "
                                                   "now: a file was renamed, replaced"):
        nbbn.fit(ImageSource(d), checkpoint=ck, resume=True, progress=False)
    np.save(tmp_path / "x.npy", np.ones((4, 3), np.uint8))
    with pytest.raises(nbbn.CheckpointError, match=r"written for a different kind of source: "
                                                   r"image files, but the source is arrays or "
                                                   r"array files \(\.npy"):
        nbbn.fit(tmp_path / "x.npy", checkpoint=ck, resume=True, progress=False)


def test_image_source_repr(rgb_folder):
    d, files = rgb_folder
    src = ImageSource(d, mode="RGB")
    assert repr(src) == (f"ImageSource({d} ({len(files)} images), mode='RGB', size=None, "
                         "histogram=False, on_error='raise')")
    # one row per image; the bytes are the files' (what the progress bar counts)
    assert src.rows == len(files) and src.paths == files
    assert src.nbytes == sum(os.path.getsize(f) for f in files)
    one = ImageSource([files[0]])
    assert repr(one).startswith("ImageSource(1 image file, mode=None")


def test_gif_files_are_images_and_their_first_frame_is_read(tmp_path):
    """The docs read the first frame of an animated GIF, but ``.gif`` was not an image
    name: ``nbbn.fit("m.gif")`` said "not a .npy, .npz or HDF5 file"."""
    frames = [PIL_Image.fromarray(np.full((4, 5, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "m.gif", save_all=True, append_images=frames[1:])
    with PIL_Image.open(tmp_path / "m.gif") as im:
        want = np.asarray(im.convert("RGB"), np.float64)
    for source in (tmp_path / "m.gif", tmp_path, str(tmp_path / "*.gif")):
        rs = nbbn.fit(source, progress=False)
        np.testing.assert_array_equal(rs.mean, want.mean(axis=(0, 1)))
        assert rs.count.tolist() == [20] * 3


# ------------------------------------------------ contracts a mutation round found unpinned
def test_a_resume_with_another_mode_is_refused(rgb_folder, tmp_path):
    """The mode is part of the source's fingerprint: a complete RGB checkpoint resumed
    with ``mode="L"`` returned the RGB statistics."""
    d, _ = rgb_folder
    ck = tmp_path / "fit.ckpt"
    nbbn.fit(ImageSource(d), checkpoint=ck, progress=False)
    with pytest.raises(nbbn.CheckpointError, match="mode"):
        nbbn.fit(ImageSource(d, mode="L"), checkpoint=ck, resume=True, progress=False)
    with pytest.raises(nbbn.CheckpointError, match="size"):  # (so is the size)
        nbbn.fit(ImageSource(d, size=8), checkpoint=ck, resume=True, progress=False)


def test_a_resume_with_another_jpeg_decoder_is_refused(rgb_folder, tmp_path):
    """The JPEG decoder ("auto" resolved) is part of the fingerprint: simplejpeg and
    Pillow may give other pixels (a colour JPEG read with ``mode="L"`` differs by up to
    a dozen levels), so a fit must not count part of a folder with one and the rest with
    the other. A checkpoint written before the key was recorded still resumes."""
    from nbbn.checkpoint import load_checkpoint, save_checkpoint

    d, _ = rgb_folder
    ck = tmp_path / "fit.ckpt"
    auto = ImageSource(d, mode="L")
    first = nbbn.fit(auto, checkpoint=ck, progress=False)
    assert auto.fingerprint()["shards"][0]["jpeg_decoder"] == "simplejpeg"
    with pytest.raises(nbbn.CheckpointError, match="with jpeg_decoder='simplejpeg', but "
                                                   "this fit has jpeg_decoder='pillow'"):
        nbbn.fit(ImageSource(d, mode="L", jpeg_decoder="pillow"), checkpoint=ck,
                 resume=True, progress=False)
    # (other modes than RGB and L go to Pillow whatever is asked)
    assert ImageSource(d, mode="RGBA").fingerprint()["shards"][0]["jpeg_decoder"] == "pillow"
    old = load_checkpoint(ck)
    del old.fingerprint["shards"][0]["jpeg_decoder"]
    save_checkpoint(ck, old)
    again = nbbn.fit(ImageSource(d, mode="L"), checkpoint=ck, resume=True, progress=False)
    np.testing.assert_array_equal(again.mean, first.mean)


def test_a_resume_after_a_file_was_rewritten_is_refused(rgb_folder, tmp_path):
    """A file rewritten in place (same size, new pixels) or grown with its old
    modification time kept: the list's digest changes, so the resume is refused."""
    d, files = rgb_folder
    ck = tmp_path / "fit.ckpt"
    nbbn.fit(ImageSource(d), checkpoint=ck, progress=False)
    png = next(f for f in files if f.endswith(".png"))
    st = os.stat(png)
    os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same size, touched
    with pytest.raises(nbbn.CheckpointError, match="digest"):
        nbbn.fit(ImageSource(d), checkpoint=ck, resume=True, progress=False)
    with open(png, "ab") as f:
        f.write(b"\0")  # (one more byte after the PNG's end: decoded as before)
    os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old time, another size
    with pytest.raises(nbbn.CheckpointError, match="digest"):
        nbbn.fit(ImageSource(d), checkpoint=ck, resume=True, progress=False)


def test_files_skipped_are_kept_through_a_resume(tmp_path):
    """Nothing counted, two files skipped: the resumed fit still lists them."""
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.png").write_text("x")
    (d / "b.jpg").write_text("y")
    ck = tmp_path / "fit.ckpt"
    first = nbbn.fit(ImageSource(d, on_error="skip"), checkpoint=ck, progress=False)
    assert len(first.skipped) == 2
    again = nbbn.fit(ImageSource(d, on_error="skip"), checkpoint=ck, resume=True,
                     progress=False)
    assert again.skipped == first.skipped


def test_a_failed_first_image_leaves_no_histogram(monkeypatch):
    """Refused input leaves the state as it was: no histogram on statistics that
    counted nothing."""
    rs = nbbn.RunningStats(-1)

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(nbbn.RunningStats, "_update", boom)
    px = np.zeros((1, 2, 2, 3), np.uint8)
    batch = _images.ImageBatch(px, 0, 0, 1, 12, counts=Histogram.of(px[0]).counts,
                               path="x.png")
    with pytest.raises(RuntimeError):
        batch.account(rs)
    assert rs.histogram is None and rs.num_channels is None
    # statistics that counted images keep their histogram when a later update fails
    monkeypatch.undo()
    batch.account(rs)
    monkeypatch.setattr(nbbn.RunningStats, "_update", boom)
    with pytest.raises(RuntimeError):
        batch.account(rs)
    np.testing.assert_array_equal(rs.histogram.counts, Histogram.of(px[0]).counts)


def test_histograms_merge_up_to_exactly_the_limit():
    """A merged row of exactly 2**62 counts is allowed (one past it is refused)."""
    from nbbn._histogram import COUNT_LIMIT

    a, b = np.zeros((1, 256), np.int64), np.zeros((1, 256), np.int64)
    a[0, 0], b[0, 1] = COUNT_LIMIT - 5, 5
    h = Histogram(a)
    h += Histogram(b)
    assert int(h.counts.sum()) == COUNT_LIMIT
    b[0, 1] = 6
    with pytest.raises(ValueError, match="2\\*\\*62"):
        h = Histogram(a)
        h += Histogram(b)


def test_a_glob_is_counted_in_sorted_order(tmp_path, monkeypatch):
    """A glob's files are counted in sorted order whatever order the folder lists them
    in (a resume's position is an index into the list)."""
    names = [save(np.full((2, 3), v, np.uint8), tmp_path / f"{k}.png")
             for k, v in (("c", 3), ("a", 1), ("b", 2))]
    listed = glob_mod.glob

    def unsorted(*args, **kwargs):
        return sorted(listed(*args, **kwargs), reverse=True)

    monkeypatch.setattr(glob_mod, "glob", unsorted)
    assert ImageSource(str(tmp_path / "*.png")).paths == sorted(names)


def test_a_list_is_counted_in_sorted_order(rgb_folder):
    """A list's files are counted in sorted order, as documented: a list and its
    reverse gave other bits of var (and could take their channels from another file)."""
    d, files = rgb_folder
    backwards = ImageSource(files[::-1])
    assert backwards.paths == files
    a, b = fit(ImageSource(files)), fit(backwards)
    for name in ("count", "mean", "var", "min", "max"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert backwards.fingerprint() == ImageSource(files).fingerprint()


@pytest.mark.parametrize("made, mode, channels", [
    ("L", None, 1),  # a grayscale JPEG keeps its one channel
    ("RGB", "L", 1),  # a colour JPEG read as gray (simplejpeg's GRAY)
    ("RGB", "RGBA", 4),  # simplejpeg has no RGBA: Pillow converts
    ("L", "LA", 2),
])
def test_jpeg_modes_give_the_channels_asked_for(tmp_path, rng, made, mode, channels):
    c = 1 if made == "L" else 3
    jpg = save(smooth(rng, 14, 19, c), tmp_path / "a.jpg", quality=90)
    if mode in ("RGBA", "LA"):
        want = pillow_pixels(jpg, mode)
    else:
        with open(jpg, "rb") as f:
            want = simplejpeg.decode_jpeg(f.read(), colorspace="GRAY")
    assert want.shape[-1] == channels
    check_exact(fit(ImageSource(jpg, mode=mode)), [want])


def test_a_cmyk_jpeg_is_read_by_pillow_as_four_channels(tmp_path, rng):
    """simplejpeg does not convert CMYK: such a JPEG goes to Pillow, its four channels
    kept (mode=None) or converted (mode="RGB"), whatever the JPEG decoder asked for."""
    cmyk = rng.integers(0, 256, (6, 8, 4)).astype(np.uint8)
    jpg = tmp_path / "c.jpg"
    PIL_Image.frombytes("CMYK", (8, 6), cmyk.tobytes()).save(jpg, quality=95)
    check_exact(fit(ImageSource(str(jpg))), [pillow_pixels(jpg)])
    check_exact(fit(ImageSource(str(jpg), mode="RGB")), [pillow_pixels(jpg, "RGB")])
    assert pillow_pixels(jpg).shape[-1] == 4


def test_palette_and_one_bit_images_keep_their_own_channels(tmp_path, rng):
    """mode=None: a palette image is RGB, or RGBA when it has a transparent colour or an
    alpha channel (PA); a 1-bit image is L (0 and 255), as Pillow converts them; LA is
    kept."""
    rgb = smooth(rng, 9, 11, 3)
    pal = PIL_Image.fromarray(rgb).quantize(8)
    pal.save(tmp_path / "p.png")
    pal.save(tmp_path / "t.png", transparency=0)
    pal.convert("PA").save(tmp_path / "pa.tif")  # (palette and alpha: RGBA)
    PIL_Image.fromarray(rng.integers(0, 2, (7, 10)).astype(bool)).save(tmp_path / "one.png")
    PIL_Image.fromarray(smooth(rng, 5, 6, 2)).save(tmp_path / "la.png")  # (LA kept)
    for name, mode, channels in (("p.png", "RGB", 3), ("t.png", "RGBA", 4),
                                 ("pa.tif", "RGBA", 4), ("one.png", "L", 1),
                                 ("la.png", "LA", 2)):
        with PIL_Image.open(tmp_path / name) as im:
            assert im.mode in ("P", "PA", "1", "LA")
        want = pillow_pixels(tmp_path / name, mode)
        assert want.shape[-1] == channels
        check_exact(fit(ImageSource(str(tmp_path / name))), [want])


def test_statistics_without_a_histogram_refuse_an_image_with_one():
    """Counts given to statistics that have channels but no histogram: refused,
    unchanged (a histogram of the later images alone would pass for all of them)."""
    px = np.full((1, 2, 2, 3), 7, np.uint8)
    rs = nbbn.RunningStats(-1).update(px)
    batch = _images.ImageBatch(px, 0, 0, 1, 12, counts=Histogram.of(px[0]).counts,
                               path="x.png")
    with pytest.raises(ImageError, match="x.png: the statistics so far have no histogram"):
        batch.account(rs)
    assert rs.histogram is None and rs.count.tolist() == [4] * 3


@pytest.mark.parametrize("skip", [False, True])
def test_the_first_image_after_a_resume_is_checked_against_the_histograms_depth(skip):
    """After a resume the pass has counted no image yet: the depth of the images
    counted before is the histogram's, and a 16-bit image is refused (or skipped) by
    name, the statistics unchanged."""
    px8 = np.full((1, 2, 2, 1), 7, np.uint8)
    rs = nbbn.RunningStats(-1)
    rs.histogram = Histogram.empty(1, np.uint8)
    rs.update(px8)  # (as restored from a checkpoint)
    px16 = np.full((1, 2, 2, 1), 40000, np.uint16)
    batch = _images.ImageBatch(px16, 1, 0, 1, 8, counts=Histogram.of(px16[0]).counts,
                               path="b16.png", depth={}, skip_mismatch=skip)
    if skip:
        batch.account(rs)
        assert len(rs.skipped) == 1 and rs.skipped[0].startswith("b16.png: the image is "
                                                                  "16-bit")
    else:
        with pytest.raises(ImageError, match="b16.png: the image is 16-bit, but the "
                                             "images counted before it are 8-bit"):
            batch.account(rs)
    assert rs.count.tolist() == [4] and rs.histogram.counts[0, 7] == 4


@pytest.mark.parametrize("marker", [".zarray", "zarr.json", ".zgroup"])
def test_a_zarr_store_not_named_zarr_is_not_images(tmp_path, marker):
    """A folder that is a zarr store (v2 array or group, v3) is read as zarr even when
    its name does not end in .zarr: not taken for a folder of images."""
    store = tmp_path / "store"
    store.mkdir()
    (store / marker).write_text("{}")
    assert not _images.looks_like_images(str(store))
    assert _images.looks_like_images(str(tmp_path))  # (the folder above holds no marker)


# ------------------------------------------------- edges found by mutation testing
def test_histogram_counts_are_checked_when_made():
    """Negative counts and other dtypes than uint8/uint16 are refused; a row summing
    to exactly 2**62 is taken (mutants: no sign check; the limit exclusive; a uint32
    histogram a KeyError)."""
    from nbbn._histogram import COUNT_LIMIT

    neg = np.zeros((2, 256), np.int64)
    neg[1, 7] = -1
    with pytest.raises(ValueError, match="non-negative integer counts"):
        Histogram(neg)
    full = np.zeros((1, 256), np.int64)
    full[0, 0], full[0, 1] = COUNT_LIMIT - 5, 5
    assert int(Histogram(full).counts.sum()) == COUNT_LIMIT
    for dtype in (np.uint32, np.int8, np.float32):
        with pytest.raises(ValueError, match="uint8 or uint16"):
            Histogram.empty(2, dtype)


def test_histograms_of_any_channel_count_add_up(rng):
    """Histogram.add of 1, 3 and 4 channels, twice, odd and even pixel counts: numpy's
    bincount per channel; pixels of another channel count are refused, the counts
    unchanged (mutants: a second add overwrote the first's counts; the RGB kernel
    taken for 4 channels; no channel check)."""
    for c in (1, 3, 4):
        h = Histogram.empty(c, np.uint8)
        a = rng.integers(0, 256, (7, 5, c), dtype=np.uint8)
        b = rng.integers(0, 256, (4, c), dtype=np.uint8)
        h.add(a)
        h.add(b)
        both = np.concatenate([a.reshape(-1, c), b])
        want = np.stack([np.bincount(both[:, j], minlength=256) for j in range(c)])
        np.testing.assert_array_equal(h.counts, want)
        with pytest.raises(ValueError, match="channels in a 8-bit histogram"):
            h.add(rng.integers(0, 256, (4, c + 1), dtype=np.uint8))
        np.testing.assert_array_equal(h.counts, want)


def test_histograms_are_counted_in_calls_of_whole_pixels(rng, monkeypatch):
    """The kernels take ``_ROWS_PER_CALL`` pixels a call, every channel of each
    (mutant: that many values, cutting pixels between calls)."""
    monkeypatch.setattr("nbbn._histogram._ROWS_PER_CALL", 5)
    for c in (2, 3):
        x = rng.integers(0, 256, (23, c), dtype=np.uint8)
        want = np.stack([np.bincount(x[:, j], minlength=256) for j in range(c)])
        np.testing.assert_array_equal(Histogram.of(x).counts, want)


def test_histograms_of_other_channel_counts_and_nan_percentiles_are_refused():
    """Adding a histogram of another channel count is refused, unchanged (mutant: only
    the bins compared, and numpy broadcast one channel over three); a NaN percentile
    is refused by name (mutant: a bare 'cannot convert float NaN')."""
    h = Histogram.of(np.arange(6, dtype=np.uint8).reshape(2, 3))
    before = h.counts.copy()
    with pytest.raises(ValueError, match="cannot add a histogram of shape"):
        h += Histogram.of(np.ones((2, 1), np.uint8))
    np.testing.assert_array_equal(h.counts, before)
    for q in (np.nan, [50.0, np.nan]):
        with pytest.raises(ValueError, match=r"in \[0, 100\]"):
            h.percentile(q)


def test_big_endian_uint16_is_counted_as_its_values(rng):
    """A big-endian uint16 batch was refused by statistics that keep a 16-bit histogram
    ("takes uint16 numpy arrays only, got ndarray >u2"), and by Histogram.of ("got >u2"),
    where statistics without a histogram took it: now its values are counted."""
    x = rng.integers(0, 65536, (40, 3)).astype(np.uint16)
    be = x.astype(">u2")
    want = np.stack([np.bincount(x[:, c], minlength=65536) for c in range(3)])
    np.testing.assert_array_equal(Histogram.of(be).counts, want)
    np.testing.assert_array_equal(Histogram.of(be[::2]).counts, Histogram.of(x[::2]).counts)
    s = nbbn.RunningStats(-1)
    s.histogram = Histogram.empty(3, np.uint16)
    s.update(be[:25]).update(x[25:])
    np.testing.assert_array_equal(s.histogram.counts, want)
    np.testing.assert_array_equal(s.count, [40] * 3)
    with pytest.raises(ValueError, match="takes uint16 numpy arrays only"):
        s.update(x.astype(">u4"))


def test_cli_fit_histogram_without_output_prints_the_percentiles(rgb_folder, tmp_path,
                                                                 capsys):
    """``nbbn fit --histogram`` without -o counted the histogram and dropped it: neither
    the table nor the JSON showed a percentile. The table now ends with the percentile
    table of ``nbbn info``, the JSON has them under "percentiles"; a fit without a
    histogram prints what it printed."""
    from nbbn._histogram import PERCENTILES

    d, _ = rgb_folder
    want = fit(ImageSource(d, histogram=True)).histogram.percentile(PERCENTILES)
    assert main(["fit", str(d), "--histogram", "--no-progress", "-o",
                 str(tmp_path / "s.npz")]) == 0
    table = capsys.readouterr().out
    assert main(["info", str(tmp_path / "s.npz")]) == 0
    info = capsys.readouterr().out
    pct = info[info.index("\nexact percentiles"):].rstrip("\n")
    assert table.rstrip("\n").endswith(pct) and pct.count("\n") == 11
    assert main(["fit", str(d), "--histogram", "--no-progress", "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)["percentiles"]
    assert list(got) == [f"{q:g}" for q in PERCENTILES]
    np.testing.assert_array_equal([got[k] for k in got], want)
    assert main(["fit", str(d), "--no-progress"]) == 0
    assert "percentiles" not in capsys.readouterr().out
    assert main(["fit", str(d), "--no-progress", "--format", "json"]) == 0
    assert "percentiles" not in json.loads(capsys.readouterr().out)


def test_a_resume_with_other_image_settings_says_a_setting_changed(rgb_folder, tmp_path,
                                                                    capsys):
    """A resume with another --histogram (or --mode) said "now has histogram False, but
    the checkpoint recorded True; the data changed (or this is another source)": a
    setting changed, not the data, and the CLI names its options."""
    d, _ = rgb_folder
    ck = str(tmp_path / "fit.ckpt")
    assert main(["fit", str(d), "--histogram", "--checkpoint", ck, "--no-progress"]) == 0
    capsys.readouterr()
    for args, saved, given in (([], "--histogram", "no --histogram"),
                               (["--histogram", "--mode", "L"], "no --mode", "--mode L"),
                               (["--histogram", "--size", "4"], "no --size", "--size 4")):
        assert main(["fit", str(d), *args, "--checkpoint", ck, "--resume",
                     "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"written with {saved}, but this fit has {given}: a setting changed, not " \
               "the data; use the same settings to resume" in err, err
    with pytest.raises(nbbn.CheckpointError, match="written with histogram=True, but this "
                                                   "fit has histogram=False: a setting"):
        fit(ImageSource(d), checkpoint=ck, resume=True)


def test_info_gives_the_skip_reasons_in_the_commands_options(tmp_path, capsys):
    """``nbbn info`` listed a skipped file's reason as stored, in Python's spelling
    ("pass mode='RGB'"), where ``nbbn fit`` had printed "--mode RGB"."""
    d = tmp_path / "imgs"
    d.mkdir()
    PIL_Image.fromarray(np.zeros((4, 4), np.uint8)).save(d / "a.png")
    PIL_Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "b.png")
    out = tmp_path / "s.npz"
    assert main(["fit", str(d), "--on-error", "skip", "--no-progress", "-o", str(out)]) == 0
    capsys.readouterr()
    assert "mode='RGB'" in nbbn.RunningStats.load(out).skipped[0]
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 file was skipped" in text and "b.png: the image has 3 channels" in text
    assert "pass --mode RGB (colour) or --mode L (grayscale)" in text and "mode='" not in text


def test_a_folder_named_another_way_resumes(rgb_folder, tmp_path, monkeypatch, capsys):
    """The list's name holds the folder as typed: ``nbbn fit imgs`` stopped by a bad
    file, then ``nbbn fit imgs/ --resume --on-error skip`` (a shell's completion adds the
    /) was refused ("now has name '... of imgs/ (7 images)', but the checkpoint recorded
    '... of imgs (7 images)'"), though the digest of the absolute paths was the same."""
    d, files = rgb_folder
    (d / "b" / "zz.png").write_text("junk")
    monkeypatch.chdir(tmp_path)
    ck = tmp_path / "k.ckpt"
    assert main(["fit", "imgs", "--checkpoint", str(ck), "--no-progress"]) == 2
    capsys.readouterr()
    assert main(["fit", "imgs/", "--checkpoint", str(ck), "--no-progress", "--resume",
                 "--on-error", "skip"]) == 0
    assert "skipped 1 file" in capsys.readouterr().err
    want = nbbn.fit(ImageSource(d, on_error="skip"), progress=False)
    for spelled in ("./imgs", str(d), "imgs/**/*.*"):
        got = nbbn.fit(ImageSource(spelled, on_error="skip"), checkpoint=ck, resume=True,
                       progress=False)
        np.testing.assert_array_equal(got.mean, want.mean)
    with pytest.raises(nbbn.CheckpointError, match="digest"):  # (another list still is not)
        nbbn.fit(ImageSource("imgs/*.*", on_error="skip"), checkpoint=ck, resume=True,
                 progress=False)


def test_cmyk_and_rgba_files_are_not_counted_together(tmp_path, rng, capsys):
    """A CMYK JPEG and a palette PNG with transparency (RGBA) are both 4 channels: the
    fit averaged C with R, K with alpha (num_channels 4, nothing skipped)."""
    cmyk = rng.integers(0, 256, (8, 8, 4)).astype(np.uint8)
    PIL_Image.frombytes("CMYK", (8, 8), cmyk.tobytes()).save(tmp_path / "a.jpg")
    pal = PIL_Image.fromarray(rng.integers(0, 256, (8, 8)).astype(np.uint8), "P")
    pal.save(tmp_path / "b.png", transparency=0)
    with pytest.raises(ImageError, match=r"b\.png: the image is RGBA, but the images "
                                         r"counted before it are CMYK.*mode='RGBA' or "
                                         r"mode='RGB'"):
        fit(ImageSource(tmp_path))
    rs = fit(ImageSource(tmp_path, on_error="skip"))
    check_exact(rs, [pillow_pixels(tmp_path / "a.jpg")])
    assert len(rs.skipped) == 1 and rs.skipped[0].startswith(f"{tmp_path / 'b.png'}: ")
    rs = fit(ImageSource(tmp_path, mode="RGBA"))  # converted: one mode
    check_exact(rs, [pillow_pixels(tmp_path / n, "RGBA") for n in ("a.jpg", "b.png")])
    assert main(["fit", str(tmp_path), "--no-progress"]) == 2
    assert "pass --mode RGBA or --mode RGB" in capsys.readouterr().err


def test_a_resume_checks_the_next_image_against_the_pixels_counted(tmp_path, rng,
                                                                    monkeypatch):
    """A checkpoint did not record the depth and colour mode of the images it counted:
    the first image read after a resume was counted whatever its mode or depth (RGBA
    averaged with CMYK, 16-bit with 8-bit), where an uninterrupted fit refuses it."""
    account = _images.ImageBatch.account

    def ctrl_c_at_image_1(self, stats):
        if self.shard == 1:
            os.kill(os.getpid(), signal.SIGINT)
        account(self, stats)

    def interrupted_then_resumed(folder, **kw):
        ck = tmp_path / f"{folder.name}{len(kw)}.ckpt"
        with monkeypatch.context() as m:
            m.setattr(_images.ImageBatch, "account", ctrl_c_at_image_1)
            with pytest.raises(nbbn.FitInterrupted):
                fit(ImageSource(folder, **kw), checkpoint=ck, checkpoint_interval=0)
        return fit(ImageSource(folder, **kw), checkpoint=ck, resume=True)

    colour, gray = tmp_path / "colour", tmp_path / "gray"
    colour.mkdir(), gray.mkdir()
    for name in ("a.jpg", "b.jpg"):
        cmyk = rng.integers(0, 256, (8, 8, 4)).astype(np.uint8)
        PIL_Image.frombytes("CMYK", (8, 8), cmyk.tobytes()).save(colour / name)
        PIL_Image.fromarray(cmyk[..., 0]).save(gray / name.replace(".jpg", ".png"))
    pal = PIL_Image.fromarray(rng.integers(0, 256, (8, 8)).astype(np.uint8), "P")
    pal.save(colour / "c.png", transparency=0)
    PIL_Image.fromarray(rng.integers(0, 65536, (8, 8)).astype(np.uint16)).save(gray / "c.png")
    with pytest.raises(ImageError, match=r"c\.png: the image is RGBA, but the images "
                                         r"counted before it are CMYK"):
        interrupted_then_resumed(colour)
    with pytest.raises(ImageError, match=r"c\.png: the image is 16-bit, but the images "
                                         r"counted before it are 8-bit"):
        interrupted_then_resumed(gray)
    rs = interrupted_then_resumed(gray, on_error="skip")
    assert rs.count.tolist() == [128] and len(rs.skipped) == 1


def test_the_bar_and_the_resume_count_images(rgb_folder, tmp_path, capsys):
    """The progress bar and the resume line said "rows" of image files ("1 rows",
    "resuming ... after 6 rows"), where an interrupted fit says images."""
    d, files = rgb_folder
    ck = tmp_path / "fit.ckpt"
    nbbn.fit(ImageSource(d), checkpoint=ck)
    assert f"{len(files)} images" in capsys.readouterr().err
    nbbn.fit(ImageSource(d), checkpoint=ck, resume=True)
    assert f"after {len(files)} images (complete" in capsys.readouterr().err
    one, ck1 = ImageSource(files[0]), tmp_path / "one.ckpt"
    nbbn.fit(one, checkpoint=ck1)
    err = capsys.readouterr().err
    assert "1 image" in err and "rows" not in err and "1 images" not in err, err
    nbbn.fit(one, checkpoint=ck1, resume=True)
    assert "after 1 image (complete" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", np.ones((1, 3)))  # (arrays count rows, one a row)
    nbbn.fit(tmp_path / "x.npy")
    err = capsys.readouterr().err
    assert "1 row" in err and "1 rows" not in err, err
