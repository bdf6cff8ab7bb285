"""zarr and HDF5 shards: stores, files and groups opened as :class:`~nbbn._shards.ArrayShard`.

Batches are read by slicing the zarr array or h5py dataset. A zarr store's fingerprint
covers every file under it (count, total size, newest modification time), linked
folders followed; an HDF5 dataset's covers its file, the dataset's name and the files
its data lives in when they are others (an external link's target, a virtual dataset's
sources, external raw storage). zarr and h5py are optional extras
(``pip install 'nbbn[zarr]'``, ``'nbbn[hdf5]'``), imported only here, on first use,
through :func:`import_extra`, whose error names the extra to install.
"""

from __future__ import annotations

import importlib
import os

from ._shards import ArrayShard, Shard, file_fingerprint
from ._wording import Param, worded
from .errors import MissingExtraError

__all__ = ["container_shard", "describe_container", "hdf5_shard", "import_extra",
           "is_zarr_zip", "zarr_shard", "zarr_zip_shard"]


def import_extra(module: str, extra: str, what: str):
    """Import an optional dependency, or say which extra installs it.

    Parameters
    ----------
    module : str
        The module to import (``"zarr"``, ``"h5py"``).
    extra : str
        The nbbn extra that installs it (``"zarr"``, ``"hdf5"``).
    what : str
        What needs it, for the message (``"reading zarr stores"``).

    Returns
    -------
    module
        The imported module.

    Raises
    ------
    MissingExtraError
        The module is not installed; the message names ``pip install 'nbbn[extra]'``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{what} needs the {module} package, which is not installed: "
            f"pip install 'nbbn[{extra}]'"
        ) from exc


def zarr_shard(path: str, key) -> Shard:
    """The zarr array at ``path`` as a shard.

    Parameters
    ----------
    path : str
        A zarr store (a folder).
    key : str or None
        The array in a group (None: the store is an array).

    Returns
    -------
    Shard
        An ``ArrayShard`` whose fingerprint covers every file of the store.

    Raises
    ------
    MissingExtraError
        zarr is not installed.
    ValueError
        The store is a group and ``key`` names no array of it.
    """
    zarr = import_extra("zarr", "zarr", "reading zarr stores")
    try:
        node = zarr.open(path, mode="r")
    except Exception as exc:
        if any(os.path.exists(os.path.join(path, m)) for m in _ZARR_METADATA):
            raise
        raise ValueError(_not_a_store(path)) from exc
    name = path
    if not hasattr(node, "shape"):  # (an array's name stays its path: a key names nothing)
        node = _group_member(node, key, path)
        name = f"{path}/{key}"
    files = _tree_fingerprint(path)
    return ArrayShard(node, name, files)


_ZARR_METADATA = ("zarr.json", ".zarray", ".zgroup")


def _not_a_store(path: str) -> str:
    """The error of a folder named ``*.zarr`` that zarr does not open as a store (zarr's
    own, ``GroupNotFoundError``, named no cause)."""
    with os.scandir(path) as it:
        shards = sorted(e.name for e in it if e.is_file()
                        and e.name.lower().endswith((".npy", ".npz")))
    hint = (f"; it holds .npy/.npz files, such as {shards[0]}: pass a glob, "
            f"{os.path.join(path, '*' + os.path.splitext(shards[0])[1])}, to read them"
            if shards else "")
    return (f"{path}: not a zarr store (no {', '.join(_ZARR_METADATA)} at its top level), "
            f"though its name ends in .zarr, which nbbn reads as a zarr store{hint}")


def is_zarr_zip(path: str) -> bool:
    """Whether the zip file ``path`` is a zarr store (``zarr.storage.ZipStore``): zarr's
    metadata at its top. Such a file was read as an .npz archive ("holds 0 arrays")."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n in _ZARR_METADATA for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def zarr_zip_shard(path: str, key) -> Shard:
    """The zarr array in the zip file ``path`` (a ``ZipStore``), as a shard that keeps the
    zip open until it is closed; fingerprinted as a file.

    Raises
    ------
    ValueError
        The store is a group and ``key`` names no array of it, or it is an array and a
        ``key`` was given.
    """
    zarr = import_extra("zarr", "zarr", "reading zarr stores")
    store = zarr.storage.ZipStore(path, mode="r")
    try:
        node = zarr.open(store, mode="r")
        name = path
        if not hasattr(node, "shape"):
            node = _group_member(node, key, path)
            name = f"{path}/{key}"
        elif key is not None:
            raise worded(ValueError, "{key} was given, but the source is the zarr array "
                         "{path}: a key names an array in an .npz or HDF5 file or a zarr "
                         "group, or an element of an iterable's items", key=Param("key", key),
                         path=path)
        files = {**file_fingerprint(path), "array": str(getattr(node, "path", ""))}
        return ArrayShard(node, name, files, owner=store)
    except BaseException:
        store.close()
        raise


def hdf5_shard(path: str, dataset) -> Shard:
    """The dataset ``dataset`` of the HDF5 file ``path`` as a shard.

    Parameters
    ----------
    path : str
        The HDF5 file.
    dataset : str or None
        The dataset's name (None: the file's only dataset).

    Returns
    -------
    Shard
        An ``ArrayShard`` that keeps the file open until it is closed.

    Raises
    ------
    MissingExtraError
        h5py is not installed.
    ValueError
        ``dataset`` names no dataset, or None was given for a file of several.
    """
    h5py = import_extra("h5py", "hdf5", "reading HDF5 files")
    f = h5py.File(path, "r")
    try:
        node = _group_member(f, dataset, path) if dataset is not None else _only_dataset(f, path)
        _refuse_null(node, f"{path}:{node.name}")
        return ArrayShard(node, f"{path}:{node.name}",
                          {**file_fingerprint(path), "dataset": node.name,
                           **_hdf5_data_files(node, path)}, owner=f)
    except BaseException:
        f.close()
        raise


def container_shard(obj, key) -> Shard:
    """A zarr or h5py object given directly, as a shard.

    Parameters
    ----------
    obj : zarr or h5py array or group
        The data, or a group holding it.
    key : str or None
        The array in a group.

    Returns
    -------
    Shard
        An ``ArrayShard``, fingerprinted by its file (h5py) or local store (zarr).
    """
    node = obj if hasattr(obj, "shape") else _group_member(obj, key, describe_container(obj))
    files = None
    module = type(obj).__module__
    if module.startswith("h5py"):
        _refuse_null(node, describe_container(node))
        files = {**file_fingerprint(node.file.filename), "dataset": node.name,
                 **_hdf5_data_files(node, node.file.filename)}
    elif module.startswith("zarr"):
        root = _zarr_local_root(node)
        if root is not None:
            files = _tree_fingerprint(root)
            files["array"] = str(getattr(node, "path", ""))
    return ArrayShard(node, describe_container(node), files)


def describe_container(obj) -> str:
    """What a container object is, for messages.

    Parameters
    ----------
    obj : object
        A zarr or h5py object.

    Returns
    -------
    str
        ``"zarr Array /name"``, ``"h5py Dataset /name"``.
    """
    name = getattr(obj, "name", None) or getattr(obj, "path", None) or ""
    return f"{type(obj).__module__.split('.')[0]} {type(obj).__name__} {name}".strip()


def _refuse_null(node, name: str) -> None:
    """ValueError for an HDF5 dataset of a null dataspace (``h5py.Empty``): it holds no
    array, not even one of no rows (its shape is None, a TypeError inside ArrayShard)."""
    if node.shape is None:
        raise ValueError(f"{name}: an HDF5 dataset with a null dataspace (h5py.Empty, dtype "
                         f"{node.dtype}), which holds no array: expected an array with at "
                         "least 1 dimension (rows along axis 0)")


def _only_dataset(f, path: str):
    names: list[str] = []
    f.visititems(lambda n, obj: names.append(n) if hasattr(obj, "shape") else None)
    if len(names) != 1:
        raise worded(ValueError, "{path} holds {n} datasets {names}; name one as {path}:NAME "
                     "or with {key}", path=path, n=len(names), names=names[:20],
                     key=Param("key", placeholder="..."))
    return f[names[0]]


def _group_member(group, key, where: str):
    h5 = hasattr(group, "visititems")  # (an h5py group: its datasets listed by path)
    if key is None:
        # (the arrays at any depth, as key names them: a group of subgroups listed only
        # ['sub'], and --key sub was "a group, not an array")
        members = _datasets(group) if h5 else _zarr_arrays(group)
        raise worded(ValueError, "{where} is a group with the arrays {members}; name one "
                     "with {key}", where=where, members=members,
                     key=Param("key", placeholder="..."))
    try:
        node = group[str(key)]
    except KeyError:
        raise ValueError(f"{where} has no array {key!r}; it holds "
                         f"{_datasets(group) if h5 else _zarr_arrays(group)}") from None
    if not hasattr(node, "shape"):
        if h5:  # ("f.h5:grp" was "f.h5/grp", "f.h5:/" was "f.h5//")
            raise ValueError(f"{where}:{node.name} is a group, not an array; it holds the "
                             f"datasets {_datasets(node)}")
        raise ValueError(f"{where}/{key} is a group, not an array; it holds the arrays "
                         f"{[f'{key}/{n}' for n in _zarr_arrays(node)]}")
    return node


def _zarr_arrays(group) -> list[str]:
    """The paths of a zarr group's arrays at any depth (the first 20), as a key names
    them; its top-level members where the zarr version cannot list them deeper."""
    try:
        names = [n for n, node in group.members(max_depth=None) if hasattr(node, "shape")]
    except (AttributeError, TypeError):  # (zarr 2: no members(max_depth=))
        names = list(group.keys())
    return names[:20]


def _datasets(group) -> list[str]:
    """The paths of the datasets in an h5py group (at any depth; the first 20), for
    messages: its top-level names hid the datasets inside its groups."""
    names: list[str] = []
    group.visititems(lambda n, obj: names.append(n) if hasattr(obj, "shape") else None)
    return names[:20]


def _zarr_local_root(node) -> str | None:
    store = getattr(node, "store", None)
    for attr in ("root", "path", "dir_path"):
        root = getattr(store, attr, None)
        if root is not None and os.path.isdir(str(root)):
            return str(root)
    return None


def _hdf5_data_files(node, path: str) -> dict:
    """``{"linked": [file fingerprints]}`` for the files other than ``path`` that the data
    of the h5py dataset ``node`` lives in ({} when none): the file an external link leads
    to (``node.file``), a virtual dataset's source files, external raw storage. Only the
    file holding the link was fingerprinted, so a resume after the data was rewritten in
    the linked file was accepted, and mixed old and new rows."""
    here = os.path.abspath(path)
    real = os.path.abspath(node.file.filename)
    folder = os.path.dirname(real)
    names = [real]
    if getattr(node, "is_virtual", False):
        names += [os.path.abspath(real if m.file_name == "." else
                                  _next_to(m.file_name, folder))
                  for m in node.virtual_sources()]
    names += [_next_to(os.fsdecode(e[0]), folder) for e in (node.external or ())]
    linked = []
    for name in sorted(set(names) - {here}):
        linked.append(file_fingerprint(name) if os.path.exists(name) else
                      {"path": name, "missing": True})
    return {"linked": linked} if linked else {}


def _next_to(name: str, folder: str) -> str:
    """The file ``name`` of an HDF5 virtual source or external storage: as it is when
    absolute, else beside the file that names it (as HDF5 looks for it), or from the
    working directory."""
    if os.path.isabs(name):
        return name
    beside = os.path.join(folder, name)
    return os.path.abspath(beside if os.path.exists(beside) else name)


def _tree_fingerprint(root: str) -> dict:
    """Files, total size and latest mtime under a folder (a zarr store's chunks). Linked
    folders are followed, each real folder once (a store whose array folder is a link
    was fingerprinted without the chunks, and a resume after they changed accepted)."""
    count = size = newest = 0
    seen = {os.path.realpath(root)}
    for dirpath, dirs, names in os.walk(root, followlinks=True):
        keep = []
        for d in dirs:  # (a link to a folder above, or two links to one folder)
            real = os.path.realpath(os.path.join(dirpath, d))
            if real not in seen:
                seen.add(real)
                keep.append(d)
        dirs[:] = keep
        for n in names:
            st = os.stat(os.path.join(dirpath, n))
            count += 1
            size += st.st_size
            newest = max(newest, st.st_mtime_ns)
    return {"path": os.path.abspath(root), "files": count, "size": size, "mtime_ns": newest}
