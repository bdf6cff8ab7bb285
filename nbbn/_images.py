"""Image files as a source of :func:`nbbn.fit`: a folder, a glob or a list of images.

:class:`ImageSource` lists the image files (JPEG, PNG, WebP, TIFF, BMP; a folder is
searched recursively; names sorted), decodes them with a pool of worker threads and
hands each decoded image to the fit as one batch of shape ``(1, H, W, C)`` (so images of
different sizes need no resizing; the channels are the last axis). The fit counts the
pixels with nbbn's exact integer kernels (uint8 or uint16 values), and, with
``histogram=True``, the exact count of every level per channel (:mod:`nbbn._histogram`),
computed in the worker that decoded the image.

Decoders: JPEG files go to simplejpeg (libjpeg-turbo) when it is installed, every other
file (and JPEG without simplejpeg, or CMYK JPEG) to Pillow; both release the GIL while
decoding, so the workers are threads (``docs/benchmarks.md`` has the measurement).
Pillow decodes JPEG with the same libjpeg-turbo settings (islow DCT, fancy upsampling),
so both give the same pixels on this project's machines; they may differ by one level
elsewhere.

Order and resume: images are counted one by one in the order of the sorted list, so
a fit's position is an index into it. The source's fingerprint is a digest of the list
(absolute paths, sizes, modification times) and of the settings that change the pixels
(``mode``, ``size``, ``histogram``): a checkpoint resumes only on the same list.

Optional libraries (Pillow, simplejpeg) are imported on first use; a missing Pillow
raises :class:`~nbbn.MissingExtraError` naming the ``images`` extra.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections import deque
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._histogram import Histogram
from ._progress import say
from .errors import ImageError
from .sources import Acquire, Batch, Position, Source, folder_file_kind

__all__ = ["IMAGE_SUFFIXES", "MODES", "ImageSource", "decode_image", "looks_like_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".ppm",
                  ".pgm")
"""File name endings (any case) taken as images in folders and globs."""

MODES = ("RGB", "RGBA", "L", "LA")
"""The modes ``mode=`` may name (Pillow's names: L is one gray channel)."""

_SHARD_SUFFIXES = (".npy", ".npz", ".parquet", ".pq", ".csv", ".tsv", ".csv.gz", ".tsv.gz")
"""Files that make a folder or glob another kind of source (shards, tables)."""
_GLOB_CHARS = "*?["
_JPEG_MAGIC = b"\xff\xd8\xff"
_KEEP = {"L": "L", "LA": "LA", "RGB": "RGB", "RGBA": "RGBA", "CMYK": "CMYK", "1": "L",
         "PA": "RGBA"}


# ----------------------------------------------------------------------- what is an image
def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def looks_like_images(source) -> bool:
    """Whether :func:`~nbbn.sources.open_source` reads ``source`` as images.

    True for an :class:`ImageSource`; a path to an image file; a folder that is not a
    zarr store and holds no ``.npy``/``.npz``/Parquet/CSV file at its top level; a glob
    that matches images and none of those; a list of image paths.

    Parameters
    ----------
    source : object
        What was passed to ``fit``.

    Returns
    -------
    bool
    """
    if isinstance(source, ImageSource):
        return True
    if isinstance(source, (list, tuple)):
        given = [os.fspath(p) if isinstance(p, (str, os.PathLike)) else None for p in source]
        images = [n is not None and _is_image_name(n) for n in given]
        if any(images) and not all(images):  # (the shard reader blamed the first image)
            i = images.index(False)
            odd = repr(given[i]) if given[i] is not None else f"a {type(source[i]).__name__}"
            raise ValueError(f"{odd}: not an image file ({', '.join(IMAGE_SUFFIXES)}), in "
                             f"a list that holds image files (such as "
                             f"{given[images.index(True)]!r}): a list is read as images or "
                             "as arrays, not both")
        return bool(source) and all(images)
    if not isinstance(source, (str, os.PathLike)):
        return False
    path = os.fspath(source)
    if os.path.isdir(path):
        if path.rstrip("/").endswith(".zarr"):
            return False
        with os.scandir(path) as it:
            names = [e.name for e in it]
        return not any(folder_file_kind(n)  # (hidden and _-prefixed tables aside)
                       or n in (".zarray", "zarr.json", ".zgroup") for n in names)
    if os.path.exists(path):
        return _is_image_name(path)
    if any(ch in path for ch in _GLOB_CHARS):
        if _is_image_name(path):  # "*.png": images, whatever it matches (or not)
            return True
        found = glob.glob(path, recursive=True)
        return any(_is_image_name(p) for p in found) and not any(
            p.lower().endswith(_SHARD_SUFFIXES) for p in found)
    return False


def _list_images(source) -> tuple[list[str], str]:
    """The sorted image paths of a folder (recursive), glob, list or single file."""
    if isinstance(source, (list, tuple)):
        paths = [os.fspath(p) for p in source]
        for p in paths:  # (a broken link is listed: its decoding fails, as in a folder)
            if not os.path.lexists(p) or os.path.isdir(p):
                raise FileNotFoundError(f"{p}: no such file")
        # sorted as a folder's or a glob's: the order decides the rounding, the image
        # that sets the channels and depth, and a checkpoint's position
        return sorted(paths), f"{len(paths)} image file{'s' * (len(paths) != 1)}"
    path = os.fspath(source)
    if os.path.isdir(path):
        found: list[str] = []
        seen = {os.path.realpath(path)}
        # linked folders are followed (as torchvision's ImageFolder and a ** glob do),
        # each real folder once: a link to a folder above would loop
        for root, dirs, files in os.walk(path, followlinks=True):
            kept = []
            for d in sorted(dirs):
                real = os.path.realpath(os.path.join(root, d))
                if real not in seen:
                    seen.add(real)
                    kept.append(d)
            dirs[:] = kept
            found.extend(os.path.join(root, f) for f in files if _is_image_name(f))
        if not found:
            from ._tabular import nested_tables_note
            from .sources import compressed_tables_note

            with os.scandir(path) as it:
                shards = sorted(e.name for e in it if folder_file_kind(e.name))
            if shards:  # (ImageSource of a folder of arrays: fit(folder) reads those)
                raise FileNotFoundError(
                    f"{path}: the folder holds no image files (searched recursively for "
                    f"{', '.join(IMAGE_SUFFIXES)}); it holds array or table files such as "
                    f"{shards[0]}, which nbbn.fit({path!r}) reads")
            raise FileNotFoundError(f"{path}: the folder holds no .npy or .npz files, no "
                                    "Parquet or CSV files, and no image files (searched "
                                    f"recursively for {', '.join(IMAGE_SUFFIXES)})"
                                    + (_hdf5_files_note(path) or compressed_tables_note(
                                        os.path.join(path, f) for f in os.listdir(path))
                                       or nested_tables_note(path)))
        return sorted(found), f"{path} ({len(found)} image{'s' * (len(found) != 1)})"
    if os.path.isfile(path):
        return [path], path
    if any(ch in path for ch in _GLOB_CHARS):
        found = sorted(p for p in glob.glob(path, recursive=True)  # broken links too
                       if not os.path.isdir(p) and _is_image_name(p))
        if not found:
            raise FileNotFoundError(f"{path}: the pattern matches no image file "
                                    f"({', '.join(IMAGE_SUFFIXES)})")
        return found, f"{path} ({len(found)} image{'s' * (len(found) != 1)})"
    raise FileNotFoundError(f"{path}: no such file or folder")


def _hdf5_files_note(path: str) -> str:
    """For the error of a folder that holds nothing nbbn reads from a folder: the HDF5
    files at its top level, which a glob or a list reads ("" when there are none)."""
    from .sources import HDF5_SUFFIXES

    with os.scandir(path) as it:
        found = sorted(e.name for e in it if e.is_file() and not e.name.startswith(".")
                       and e.name.lower().endswith(HDF5_SUFFIXES))
    if not found:
        return ""
    suffix = os.path.splitext(found[0])[1]
    return (f"; it holds HDF5 files, such as {found[0]}, which a folder is not read as: "
            f"pass a glob, {os.path.join(path, '*' + suffix)}, or a list of them (with "
            "key=NAME, --key NAME, for the dataset)")


# --------------------------------------------------------------------------- decoding
def _pillow():
    from ._shards_zarr_h5 import import_extra

    return import_extra("PIL.Image", "images", "reading image files")


def _simplejpeg():
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


def _jpeg_by_simplejpeg(jpeg_decoder: str, mode: str | None) -> bool:
    """Whether JPEG files go to simplejpeg (else Pillow): asked for or "auto", a mode it
    decodes to (RGB, gray, or the file's own), and installed."""
    return jpeg_decoder != "pillow" and mode in (None, "RGB", "L") and (
        _simplejpeg() is not None)


def decode_image(path: str, mode: str | None = None, size=None, *,
                 jpeg_decoder: str = "auto") -> np.ndarray:
    """The pixels of one image file as an ``(H, W, C)`` uint8 or uint16 array.

    Parameters
    ----------
    path : str
        The file.
    mode : {"RGB", "RGBA", "L", "LA"} or None
        Convert to this mode; None keeps the file's own channels (palette images become
        RGB or RGBA, 1-bit images L). 16-bit values converted to a mode are scaled to
        8 bits as ``round(v / 257)``.
    size : int or (int, int), optional
        Resize (Pillow, bilinear with antialiasing, as torchvision's ``Resize``): an int
        is the length of the shorter side, a pair is ``(height, width)``.
    jpeg_decoder : {"auto", "simplejpeg", "pillow"}
        "auto": simplejpeg for JPEG files when it is installed.

    Returns
    -------
    ndarray
        uint8 (8-bit files) or uint16 (16-bit grayscale PNG and TIFF) pixels.

    Raises
    ------
    ImageError
        The file cannot be decoded (truncated, not an image) or has a mode nbbn does
        not read (32-bit integer or float pixels).
    """
    return _decode(path, mode, size, jpeg_decoder)[0]


def _decode(path: str, mode: str | None, size, jpeg_decoder: str
            ) -> tuple[np.ndarray, str | None]:
    """:func:`decode_image`'s pixels, and the Pillow mode they are in ("CMYK" and
    "RGBA" are both 4 channels; None for 16-bit gray)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        arr, kept = None, None
        if data.startswith(_JPEG_MAGIC) and _jpeg_by_simplejpeg(jpeg_decoder, mode):
            arr = _decode_simplejpeg(_simplejpeg(), data, mode)
            if arr is not None:
                kept = "L" if arr.shape[-1] == 1 else "RGB"
        if arr is None:
            arr, kept = _decode_pillow(data, mode)
        if size is not None:
            arr = _resize(arr, size, cmyk=kept == "CMYK")
    except ImageError as exc:
        if str(exc).startswith(f"{path}: "):
            raise
        raise ImageError(f"{path}: {exc}") from exc  # the file is named in every message
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # what decoders raise
        if type(exc).__name__ == "UnidentifiedImageError":
            raise ImageError(f"{path}: not an image file (Pillow cannot identify its "
                             "format)") from exc
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise ImageError(f"{path}: cannot read the file ({exc.strerror})") from exc
        raise ImageError(f"{path}: cannot decode the image, truncated or corrupt "
                         f"({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow's DecompressionBombError is no OSError
        if type(exc).__name__ != "DecompressionBombError":
            raise
        raise ImageError(f"{path}: {exc} Pillow refuses images this large by default (a "
                         "guard against decompression bombs); to read it, raise "
                         "PIL.Image.MAX_IMAGE_PIXELS first") from exc
    return arr, kept


def _decompression_bomb_check(width: int, height: int) -> None:
    """Pillow's guard against decompression bombs for a file Pillow does not open
    (simplejpeg's JPEGs): more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels warns
    (``DecompressionBombWarning``), more than twice raises ``DecompressionBombError``,
    as ``Image.open`` does. simplejpeg checked nothing, so the guard that stopped a large
    PNG let a JPEG of any size through."""
    image_mod = _pillow()
    limit = image_mod.MAX_IMAGE_PIXELS
    pixels = width * height
    if limit is None or pixels <= limit:
        return
    if pixels > 2 * limit:
        raise image_mod.DecompressionBombError(
            f"Image size ({pixels} pixels) exceeds limit of {2 * limit} pixels, could be "
            "decompression bomb DOS attack.")
    import warnings

    warnings.warn(f"Image size ({pixels} pixels) exceeds limit of {limit} pixels, could be "
                  "decompression bomb DOS attack.", image_mod.DecompressionBombWarning,
                  stacklevel=2)


def _decode_simplejpeg(sj, data: bytes, mode: str | None) -> np.ndarray | None:
    height, width, colorspace = sj.decode_jpeg_header(data)[:3]
    if colorspace not in ("Gray", "YCbCr", "RGB"):
        return None  # CMYK/YCCK: Pillow
    _decompression_bomb_check(width, height)
    gray = mode == "L" or (mode is None and colorspace == "Gray")
    return sj.decode_jpeg(data, colorspace="GRAY" if gray else "RGB")


def _check_8bit_range(arr: np.ndarray, pil_mode: str, mode: str | None) -> None:
    """ImageError for 32-bit pixels (Pillow's modes I and F) that a conversion to 8 bits
    would change: Pillow clips them to 0-255 (and rounds floats) without a word, so
    ``mode="L"`` gave a mean of 255 for values up to 2**20. Values that are already
    whole numbers in 0-255 convert exactly and are read when a ``mode`` is given."""
    # (Pillow opens signed 16-bit TIFFs as mode I too)
    kind = "signed 16- or 32-bit integer" if pil_mode == "I" else "32-bit float"
    exact = arr.size == 0 or (np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 255
                              and (pil_mode == "I" or (arr == np.round(arr)).all()))
    if mode is not None and exact:
        return
    found = f"values from {arr.min():g} to {arr.max():g}" if arr.size else "no values"
    if exact:
        raise ImageError(f"pixels of mode {pil_mode} ({kind}s, {found}) are not read as "
                         "they are (8- and unsigned 16-bit images only); these are whole "
                         "numbers in 0-255, which a mode such as 'L' (--mode L) reads "
                         "exactly")
    raise ImageError(f"pixels of mode {pil_mode} ({kind}s, {found}) are not read: nbbn reads "
                     "8- and unsigned 16-bit images, and a conversion to 8 bits (a mode "
                     "such as 'L') would clip them to 0-255; read them as arrays "
                     "(numpy.asarray of the Pillow image, or tifffile) and fit those")


_MODE_OF = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
"""The 8-bit mode of an image of so many channels (what a depth mismatch suggests)."""


def _warn_truncated_loads() -> None:
    """A warning when ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is set (many training
    scripts set it): Pillow then fills the missing part of a truncated file with zeros
    and raises nothing, so nbbn counts those zeros (simplejpeg's JPEGs are still refused).
    The flag is global and the decoders run in threads, so nbbn cannot unset it."""
    import sys

    image_file = sys.modules.get("PIL.ImageFile")
    if image_file is not None and getattr(image_file, "LOAD_TRUNCATED_IMAGES", False):
        import warnings

        warnings.warn("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: Pillow fills the missing "
                      "part of a truncated image with zeros, and nbbn counts them (a truncated "
                      "file is no ImageError); set it to False to have truncated files "
                      "refused", UserWarning, stacklevel=3)


def _decode_pillow(data: bytes, mode: str | None) -> tuple[np.ndarray, str | None]:
    """The pixels, and the Pillow mode they are in (None for 16-bit values)."""
    import io

    image_mod = _pillow()
    im = image_mod.open(io.BytesIO(data))
    im.load()
    if im.mode == "I" and im.format == "PPM":  # a 16-bit PGM (maxval above 255): its
        # values as they are in a 32-bit mode, read as the 16-bit levels they are
        im = image_mod.fromarray(np.asarray(im).astype(np.uint16))
    if im.mode.startswith("I;16"):
        arr = np.asarray(im).astype(np.uint16)  # native byte order
        if mode is None:
            return arr[..., None], None
        eight = ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
        im = image_mod.fromarray(eight)
    if im.mode in ("I", "F"):  # 32-bit integers or floats: Pillow's conversions clip
        _check_8bit_range(np.asarray(im), im.mode, mode)
    if mode is None:
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in _KEEP:
            if _KEEP[im.mode] != im.mode:
                im = im.convert(_KEEP[im.mode])
        else:
            raise ImageError(f"pixels of mode {im.mode} are not read as they are (nbbn "
                             "reads the modes L, LA, RGB, RGBA, CMYK, 1, P and PA, and 16-bit "
                             "gray); pass a mode such as 'RGB' (--mode RGB) to convert them")
    elif im.mode != mode:
        im = im.convert(mode)
    arr = np.asarray(im)
    return (arr[..., None] if arr.ndim == 2 else arr), im.mode


def _stat(path: str) -> os.stat_result:
    """``os.stat``, or zeros for a file that cannot be read (a broken link, a file
    removed since it was listed): its decoding then raises an ImageError naming it, or
    skips it under ``on_error="skip"``, instead of the whole fit failing up front."""
    try:
        return os.stat(path)
    except OSError:
        return os.stat_result((0,) * 10)


def _resize(arr: np.ndarray, size, *, cmyk: bool = False) -> np.ndarray:
    """``arr`` resized as torchvision's ``Resize`` resizes the Pillow image: in the
    image's own mode (``cmyk``: four channels that are CMYK, not RGBA, whose fourth
    channel Pillow would take as an alpha to premultiply by)."""
    image_mod = _pillow()
    h, w = arr.shape[:2]
    if isinstance(size, int):
        short, long_ = (h, w) if h <= w else (w, h)
        other = int(size * long_ / short)
        th, tw = (size, other) if h <= w else (other, size)
    else:
        th, tw = size
    chans = arr.shape[2]
    if cmyk:
        im = image_mod.frombytes("CMYK", (w, h), np.ascontiguousarray(arr).tobytes())
    else:
        im = image_mod.fromarray(arr[..., 0] if chans == 1 else arr)
    out = np.asarray(im.resize((tw, th), image_mod.Resampling.BILINEAR))
    return out[..., None] if out.ndim == 2 else out


# ----------------------------------------------------------------------------- batches
@dataclass
class ImageBatch(Batch):
    """One image as a ``(1, H, W, C)`` batch, or a skipped file (``data`` None).

    Attributes
    ----------
    counts : ndarray or None
        The image's histogram counts (``histogram=True``), computed by the worker.
    skipped : str or None
        ``"path: reason"`` of a file skipped under ``on_error="skip"``.
    skip_mismatch : bool
        Skip (instead of raising) when the image's channels, colours or depth differ
        from the statistics'.
    depth : dict or None
        Shared by the batches of one pass: ``"dtype"``, the pixel dtype of the images
        counted so far (set by the first one counted), against which each image's depth
        is checked with or without a histogram, and ``"mode"``, their Pillow mode (CMYK
        and RGBA are both four channels, of other colours).
    pil_mode : str or None
        The Pillow mode of the pixels (None for 16-bit gray).
    progress : bool
        Print a line when the file is skipped (the source's ``progress``), when it is
        accounted for: in the order of the list, mismatches and undecodable files alike.
    """

    counts: np.ndarray | None = None
    skipped: str | None = None
    skip_mismatch: bool = False
    path: str = ""
    depth: dict | None = None
    pil_mode: str | None = None
    progress: bool = False

    def account(self, stats) -> None:
        """Count this image in ``stats`` (a RunningStats): pixels, histogram, or a skip.

        Nothing changes on an error: the checks come before the update.
        """
        if self.skipped is not None:  # (said here, in the order of the list, as below)
            say(self.progress, f"skipped {self.skipped}")
            stats.skipped.append(self.skipped)
            return
        problem = self._mismatch(stats)
        if problem is not None:
            if self.skip_mismatch:
                say(self.progress, f"skipped {self.path}: {problem}")
                stats.skipped.append(f"{self.path}: {problem}")
                return
            raise ImageError(f"{self.path}: {problem}")
        if self.counts is not None and stats.histogram is None:
            stats.histogram = Histogram(np.zeros_like(self.counts))
        try:
            stats._update(self.data, self.counts)
        except BaseException:
            if stats.num_channels is None:
                stats.histogram = None
            raise
        if self.depth is not None:
            self.depth.setdefault("dtype", self.data.dtype)
            self.depth.setdefault("mode", self.pil_mode)

    def _mismatch(self, stats) -> str | None:
        """Why the image cannot join ``stats`` (channels, depth, histogram), or None."""
        chans, dtype = self.data.shape[-1], self.data.dtype
        if stats.num_channels is not None and stats.num_channels != chans:
            return (f"the image has {chans} channel{'s' * (chans != 1)}, but the images "
                    f"counted before it have {stats.num_channels}; pass mode='RGB' (colour) "
                    "or mode='L' (grayscale) to convert every file to one mode")
        seen = None if self.depth is None or stats.num_channels is None else \
            self.depth.get("mode")
        if seen is not None and self.pil_mode is not None and seen != self.pil_mode:
            return (f"the image is {self.pil_mode}, but the images counted before it are "
                    f"{seen}: {chans} channels each, of other colours; pass mode='RGBA' "
                    "or mode='RGB' to convert every file to one mode")
        hist = stats.histogram
        if self.counts is not None and hist is None and stats.num_channels is not None:
            return ("the statistics so far have no histogram (the checkpoint was written "
                    "without histogram=True)")
        # the depth of the images counted before: the histogram's (also after a resume),
        # else the first image counted in this pass
        bits = hist.bits if hist is not None else None
        if bits is None and self.depth is not None and "dtype" in self.depth:
            bits = self.depth["dtype"].itemsize * 8
        if bits is not None and stats.num_channels is not None and dtype.itemsize * 8 != bits:
            return (f"the image is {dtype.itemsize * 8}-bit, but the images counted "
                    f"before it are {bits}-bit; pass mode={_MODE_OF.get(chans, 'RGB')!r} to "
                    "convert every file to 8 bits")  # (nbbn fit spells it --mode L)
        return None


class _ImageFile:
    """A shard of an :class:`ImageSource`: one file (only its name is needed)."""

    __slots__ = ("name",)
    rows = 1

    def __init__(self, name: str) -> None:
        self.name = name

    def close(self) -> None:
        """Nothing is held open."""


class ImageSource(Source):
    """Image files (a folder, searched recursively, a glob, or a list) as a fit source.

    Each image is one batch of shape ``(1, H, W, C)`` in the order of the sorted file
    names; fit it with ``channel_axis=-1`` (:func:`nbbn.fit`'s default for images).

    Parameters
    ----------
    source : path, glob or list of paths
        A folder (every ``.jpg``, ``.jpeg``, ``.png``, ``.webp``, ``.tif``, ``.tiff``,
        ``.bmp``, ``.gif``, ``.ppm``, ``.pgm`` file below it, any case), a glob pattern, a
        list of image files or one image file.
    mode : {"RGB", "RGBA", "L", "LA"}, optional
        Convert every image to this mode. Default: keep each file's channels; a file
        whose channel count differs from the others' (or a CMYK file among RGBA ones,
        or the other way round) is an error naming it.
    size : int or (int, int), optional
        Resize before counting (int: the shorter side; pair: height, width). The
        statistics are then those of the resized pixels, "as the model sees them": a
        different quantity from the dataset's statistics (resizing smooths, which lowers
        the standard deviation). Default: no resizing.
    workers : int, optional
        Decoding threads (default: the CPUs this process may use).
    histogram : bool, default False
        Also count every level per channel (``RunningStats.histogram``: 256 bins for
        8-bit images, 65,536 for 16-bit), which gives exact percentiles.
    on_error : {"raise", "skip"}, default "raise"
        A file that cannot be decoded (truncated, not an image) or does not match the
        others: "raise" stops with an :class:`~nbbn.ImageError` naming it; "skip"
        leaves it out, prints it, and lists it in ``RunningStats.skipped``.
    jpeg_decoder : {"auto", "simplejpeg", "pillow"}, default "auto"
        "auto": simplejpeg (libjpeg-turbo) for JPEG when installed, else Pillow.
    progress : bool, default True
        Print a line for each skipped file.

    Examples
    --------
    >>> import nbbn
    >>> src = nbbn.ImageSource("photos/", mode="RGB", histogram=True)  # doctest: +SKIP
    >>> stats = nbbn.fit(src)  # doctest: +SKIP
    >>> stats.histogram.percentile([1, 50, 99])  # exact, per channel  # doctest: +SKIP
    """

    def __init__(self, source, *, mode: str | None = None, size=None,
                 workers: int | None = None, histogram: bool = False,
                 on_error: str = "raise", jpeg_decoder: str = "auto",
                 progress: bool = True) -> None:
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)} or None (keep each "
                             f"file's channels), got {mode!r}")
        self.size = _check_size(size)
        if workers is not None and (isinstance(workers, bool) or not isinstance(
                workers, (int, np.integer)) or workers < 1):
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if jpeg_decoder not in ("auto", "simplejpeg", "pillow"):
            raise ValueError("jpeg_decoder must be 'auto', 'simplejpeg' or 'pillow', got "
                             f"{jpeg_decoder!r}")
        if jpeg_decoder == "simplejpeg" and _simplejpeg() is None:
            from .errors import MissingExtraError

            raise MissingExtraError("jpeg_decoder='simplejpeg' needs simplejpeg: "
                                    "pip install 'nbbn[images]'")
        self.mode, self.histogram, self.on_error = mode, bool(histogram), on_error
        self.jpeg_decoder, self.progress = jpeg_decoder, progress
        self.workers = int(workers) if workers is not None else _cpus()
        if not isinstance(source, (str, os.PathLike, list, tuple)):
            raise TypeError(f"source must be a folder, a glob, an image file's path or a "
                            f"list of them, got {type(source).__name__}")
        # the folder, glob or file listed (None for a list): where nbbn.fit refuses to
        # write a checkpoint, which the next listing of it would take for an image
        self.location = None if isinstance(source, (list, tuple)) else os.fspath(source)
        paths, self.description = _list_images(source)
        _pillow()  # a missing Pillow is reported now, not in the reader thread
        _warn_truncated_loads()
        self.paths = paths
        self.shards = [_ImageFile(p) for p in paths]  # type: ignore[misc]
        stats = [_stat(p) for p in paths]
        self.sizes = [s.st_size for s in stats]
        self._digest = hashlib.sha256(repr([
            (os.path.abspath(p), s.st_size, s.st_mtime_ns) for p, s in zip(paths, stats,
                                                                           strict=True)
        ]).encode()).hexdigest()
        self.row_shape, self.dtype = None, None
        self._pixels: dict = {}  # the pixels counted so far (a resume's, then this pass's)

    def __repr__(self) -> str:
        return (f"ImageSource({self.description}, mode={self.mode!r}, size={self.size!r}, "
                f"histogram={self.histogram}, on_error={self.on_error!r})")

    # ------------------------------------------------------------------ Source API
    @property
    def rows(self) -> int | None:
        """Number of images."""
        return len(self.paths)

    @property
    def nbytes(self) -> int | None:
        """Bytes of the files (the progress bar counts file bytes read)."""
        return sum(self.sizes)

    def default_batch_size(self) -> int | None:
        """1: each image is a batch."""
        return 1

    def close(self) -> None:
        """Nothing is held open between fits."""

    def check_channel_axis(self, channel_axis: int) -> None:
        """Images are ``(1, H, W, C)`` batches: the channel axis must be -1 (or 3)."""
        if channel_axis not in (-1, 3):
            from ._wording import Param, worded

            raise worded(ValueError, "{what}: images are read as (1, H, W, C) batches, so the "
                         "channel axis is -1 (the default for images); got {axis}",
                         what=self.description, axis=Param("channel_axis", channel_axis))

    def pixels_counted(self) -> dict:
        """The pixel dtype and Pillow mode of the images counted so far (JSON values, for
        a checkpoint's settings), ``{}`` before the first."""
        px = self._pixels
        return {} if "dtype" not in px else {"dtype": px["dtype"].str, "mode": px["mode"]}

    def resume_pixels(self, saved) -> None:
        """Check the next images against the pixels a checkpoint counted
        (:meth:`pixels_counted`): a file of another depth or mode right after a resume was
        read, and refused only from the first image counted after it."""
        self._pixels = {} if not isinstance(saved, dict) or "dtype" not in saved else {
            "dtype": np.dtype(saved["dtype"]), "mode": saved.get("mode")}

    def fingerprint(self) -> dict | None:
        """One entry: a digest of the sorted list (paths, sizes, mtimes) and the settings."""
        return {"kind": "ImageSource", "shards": [{
            "name": f"the sorted list of the {len(self.paths)} image files of "
                    f"{self.description}",
            "files": len(self.paths), "digest": self._digest, "mode": self.mode,
            "size": None if self.size is None else list(np.atleast_1d(self.size).tolist()),
            "histogram": self.histogram, "jpeg_decoder": self._jpeg_decoder_used}]}

    @property
    def _jpeg_decoder_used(self) -> str:
        """The decoder JPEG files get here ("simplejpeg" or "pillow"; "auto" resolved):
        part of the fingerprint, since the two may give other pixels (``mode="L"``)."""
        return "simplejpeg" if _jpeg_by_simplejpeg(self.jpeg_decoder, self.mode) else "pillow"

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, str | None]:
        """Decode image ``index`` (in a worker thread) and count its histogram; the
        Pillow mode of its pixels."""
        arr, kept = _decode(self.paths[index], self.mode, self.size, self.jpeg_decoder)
        counts = None
        if self.histogram:
            if arr.dtype not in (np.uint8, np.uint16):
                raise ImageError(f"{self.paths[index]}: a histogram needs 8- or 16-bit "
                                 f"pixels, the image has {arr.dtype}")
            counts = Histogram.of(arr).counts
        return arr, counts, kept

    def batches(self, batch_size: int | None, start: Position, acquire: Acquire
                ) -> Generator[Batch, None, None]:
        """Decoded images from ``start`` on, one per batch, in the order of the list.

        Up to ``2 * workers`` images are decoded ahead by the worker threads.
        """
        first = start.shard + (1 if start.row >= 1 else 0)
        skip = self.on_error == "skip"
        depth = self._pixels = dict(self._pixels) if start.shard or start.row else {}
        ex = ThreadPoolExecutor(self.workers, thread_name_prefix="nbbn-decode")
        pending: deque[tuple[int, Future]] = deque()
        nxt = first
        try:
            while True:
                while nxt < len(self.paths) and len(pending) < 2 * self.workers:
                    pending.append((nxt, ex.submit(self._load, nxt)))
                    nxt += 1
                if not pending:
                    return
                index, fut = pending.popleft()
                path = self.paths[index]
                try:
                    arr, counts, kept = fut.result()
                except ImageError as exc:
                    if not skip:
                        raise
                    reason = str(exc).removeprefix(f"{path}: ")
                    yield ImageBatch(None, index, 0, 1, self.sizes[index], slot=acquire(),
                                     skipped=f"{path}: {reason}", path=path,
                                     progress=self.progress)
                    continue
                slot = acquire()
                yield ImageBatch(arr[None], index, 0, 1, self.sizes[index], slot=slot,
                                 counts=counts, skip_mismatch=skip, path=path,
                                 depth=depth, pil_mode=kept, progress=self.progress)
                arr = counts = None
        finally:
            ex.shutdown(wait=True, cancel_futures=True)


def _check_size(size) -> Any:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0:
        return int(size)
    if isinstance(size, Sequence) and len(size) == 2 and all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0
            for s in size):
        return (int(size[0]), int(size[1]))
    raise ValueError(f"size must be a positive int (the shorter side) or a pair (height, "
                     f"width), got {size!r}")


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
