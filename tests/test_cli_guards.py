"""Guards of ``nbbn fit``/``transform``: outputs that would overwrite inputs, tables'
column names and index, image depth and options, empty tables, option names in errors,
infinities in JSON."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import nbbn
from nbbn.cli import main


def user_error(argv, capsys, *match):
    """``main(argv)`` exits with 2 and prints one ``nbbn CMD: error:`` line with ``match``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    # (a cold numba cache adds the notices of the kernels compiled on the way)
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("nbbn: compiling ")]
    assert len(lines) == 1 and lines[0].startswith(f"nbbn {argv[0]}: error: "), err
    for m in match:
        assert m in lines[0], err
    return lines[0]


# ------------------------------------------------------------ 1. -o is the input
def test_fit_output_is_its_own_input(tmp_path, capsys):
    x = np.arange(24, dtype=np.uint8).reshape(4, 6)
    np.save(tmp_path / "x.npy", x)
    user_error(["fit", str(tmp_path / "x.npy"), "-o", str(tmp_path / "x.npy"),
                "--no-progress"], capsys, f"-o {tmp_path / 'x.npy'} is the input",
               "fit does not overwrite its own input")
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), x)  # untouched
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(2):
        np.save(shards / f"s{i}.npy", x)
    user_error(["fit", str(shards), "-o", str(shards / "s0.npy"), "--no-progress"], capsys,
               "is the input")
    np.testing.assert_array_equal(np.load(shards / "s0.npy"), x)
    # a new file in the fitted folder would be read as a shard by the next fit
    user_error(["fit", str(shards), "-o", str(shards / "stats.npz"), "--no-progress"], capsys,
               "would be read as data of")
    assert not (shards / "stats.npz").exists()


def test_fit_checkpoint_inside_the_zarr_store_is_refused(tmp_path, capsys):
    """``--checkpoint X.zarr/c.ckpt`` was accepted, then ``--resume`` always exited 2 (the
    store's fingerprint counts every file in it); ``-o`` there with a checkpoint too."""
    zarr = pytest.importorskip("zarr")
    store = tmp_path / "X.zarr"
    z = zarr.open_array(str(store), mode="w", shape=(8, 3), chunks=(4, 3), dtype="f8")
    z[:] = np.arange(24.0).reshape(8, 3)
    ck = store / "c.ckpt"
    for extra in ([], ["-o", str(tmp_path / "st.npz")]):
        user_error(["fit", str(store), "--checkpoint", str(ck), *extra, "--no-progress"],
                   capsys, f"--checkpoint {ck} is inside {store}, the zarr store fitted",
                   "write it outside the store")
        assert not ck.exists() and not (tmp_path / "st.npz").exists()
    user_error(["fit", str(store), "--checkpoint", str(tmp_path / "c.ckpt"), "-o",
                str(store / "st.npz"), "--no-progress"], capsys,
               f"-o {store / 'st.npz'} is inside {store}")
    assert not (tmp_path / "c.ckpt").exists()
    assert main(["fit", str(store), "--checkpoint", str(tmp_path / "c.ckpt"),
                 "--no-progress"]) == 0
    assert main(["fit", str(store), "--checkpoint", str(tmp_path / "c.ckpt"), "--resume",
                 "--no-progress"]) == 0


def test_fit_output_or_checkpoint_in_a_subfolder_of_the_folder_is_refused(tmp_path, capsys):
    """``nbbn fit d6 --checkpoint d6/sub/fit.npz -o d6/sub/stats.npz`` was accepted, and
    the next fit of d6 (its --resume) refused the folder for holding shards in a
    subfolder: the up-front check looked at the folder's top level only. It now refuses
    what the next fit would (shards below a folder of shards, tables below a folder of
    tables, an image anywhere in a folder of tables), and allows the rest."""
    d6 = tmp_path / "d6"
    (d6 / "sub").mkdir(parents=True)
    (d6 / ".hidden").mkdir()
    for i in range(2):
        np.save(d6 / f"s{i}.npy", np.ones((4, 3)))
    for flag, name in (("--checkpoint", "fit.npz"), ("-o", "stats.npz"),
                       ("--checkpoint", "fit.NPY")):
        user_error(["fit", str(d6), flag, str(d6 / "sub" / name), "--no-progress"], capsys,
                   f"{flag} {d6 / 'sub' / name} is in the subfolder sub of {d6}, whose top "
                   "level holds .npy/.npz shards: the next fit of",
                   "write it outside the folder")
    assert sorted(p.name for p in (d6 / "sub").iterdir()) == []
    # not refused by the next fit: another kind's name, a hidden subfolder
    for args in (["--checkpoint", str(d6 / "sub" / "fit.ckpt"), "-o",
                  str(d6 / "sub" / "st.stats")],
                 ["--checkpoint", str(d6 / ".hidden" / "fit.npz"), "-o",
                  str(d6 / ".hidden" / "st.npz")]):
        for resume in ([], ["--resume"]):
            assert main(["fit", str(d6), *args, *resume, "--no-progress"]) == 0, \
                capsys.readouterr().err
    capsys.readouterr()
    t = tmp_path / "t"
    (t / "sub").mkdir(parents=True)
    (t / "a.csv").write_text("x,y\n1,2\n")
    user_error(["fit", str(t), "--checkpoint", str(t / "sub" / "fit.parquet"),
                "--no-progress"], capsys, f"is in the subfolder sub of {t}, whose top "
                "level holds Parquet/CSV tables")
    for where in (t, t / "sub"):
        user_error(["fit", str(t), "--checkpoint", str(where / "fit.png"), "--no-progress"],
                   capsys, f"is an image file in {t}, whose top level holds Parquet/CSV "
                   "tables")
    with pytest.raises(ValueError, match=f"checkpoint='{d6 / 'sub' / 'c.npz'}' is in the "
                                         "subfolder sub of"):
        nbbn.fit(str(d6), checkpoint=d6 / "sub" / "c.npz", progress=False)
    assert not (d6 / "sub" / "c.npz").exists() and not (t / "sub" / "fit.png").exists()


def test_fit_output_or_checkpoint_of_another_kind_matched_by_the_glob(tmp_path, capsys):
    """A checkpoint or -o named like an image (or a table) and matched by a glob of shards
    was written, and the next fit of the pattern refused the mix of kinds: every resume
    failed. Refused before the fit now; a name the pattern does not match is written."""
    d = tmp_path / "d"
    d.mkdir()
    for i in range(2):
        np.save(d / f"s{i}.npy", np.ones((4, 3)))
    pattern = str(d / "*")
    for flag, name in (("--checkpoint", "fit.png"), ("-o", "stats.jpg"),
                       ("--checkpoint", "fit.parquet")):
        user_error(["fit", pattern, flag, str(d / name), "--no-progress"], capsys,
                   f"{flag} {d / name} is matched by the pattern {pattern}",
                   "write it outside the pattern")
    assert sorted(p.name for p in d.iterdir()) == ["s0.npy", "s1.npy"]
    for resume in ([], ["--resume"]):
        assert main(["fit", str(d / "*.npy"), "--checkpoint", str(d / "fit.png"), *resume,
                     "--no-progress"]) == 0, capsys.readouterr().err
    assert main(["fit", pattern, "--no-progress"]) == 2  # (what was refused: the mix)
    assert "files of 2 kinds" in capsys.readouterr().err


def test_fit_output_is_an_input_image(tmp_path, capsys):
    pil = pytest.importorskip("PIL.Image")
    pil.fromarray(np.full((4, 5, 3), 7, np.uint8)).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    user_error(["fit", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.png"),
                "--no-progress"], capsys, "is the input")
    assert (tmp_path / "a.png").read_bytes() == before


def test_transform_output_the_next_fit_would_read_is_refused(tmp_path, capsys):
    """``nbbn transform sh --stats st.npz -o sh/y.npy`` was written into the folder, and
    the next ``nbbn fit sh`` counted it as a shard; refused now, as ``nbbn fit -o`` is,
    before the statistics are read (a missing --stats is not reached)."""
    sh = tmp_path / "sh"
    sh.mkdir()
    np.save(sh / "a.npy", np.arange(30.0).reshape(10, 3))
    for stats in (tmp_path / "st.npz", tmp_path / "missing.npz"):
        if stats.name == "st.npz":
            nbbn.fit(str(sh), progress=False).save(stats)
        user_error(["transform", str(sh), "--stats", str(stats), "-o", str(sh / "y.npy"),
                    "--no-progress"], capsys, f"-o {sh / 'y.npy'} would be read as data of",
                   "write it outside the folder")
    assert sorted(os.listdir(sh)) == ["a.npy"]


def test_transform_output_that_is_a_fitted_file_is_refused(tmp_path, capsys):
    """``nbbn transform x --stats st.npy -o st.npy`` replaced the statistics it read with
    the normalized data (a statistics file may be named .npy), and ``-o ck.npy`` a
    checkpoint; both are refused now, naming what the file is, and stay as they were."""
    x = np.arange(30.0).reshape(10, 3)
    np.save(tmp_path / "x.npy", x)
    stats = tmp_path / "st.npy"
    nbbn.fit(x, progress=False).save(stats)
    ck = tmp_path / "ck.npy"
    nbbn.fit(x, checkpoint=str(ck), checkpoint_interval=0, progress=False)
    saved = {p: p.read_bytes() for p in (stats, ck)}
    for out, kind in ((stats, "an nbbn statistics file"), (ck, "an nbbn checkpoint")):
        user_error(["transform", str(tmp_path / "x.npy"), "--stats", str(stats), "-o",
                    str(out), "--no-progress"], capsys, f"-o {out} is {kind}",
                   "write them to another path")
        with pytest.raises(ValueError, match=f"out='{out}' is {kind}"):
            nbbn.transform(x, nbbn.RunningStats.load(stats), str(out), progress=False)
    assert {p: p.read_bytes() for p in saved} == saved
    np.save(tmp_path / "y.npy", x)  # (any other file is replaced, as np.save does)
    assert main(["transform", str(tmp_path / "x.npy"), "--stats", str(stats), "-o",
                 str(tmp_path / "y.npy"), "--no-progress"]) == 0


def test_transform_names_the_statistics_axis_it_was_not_given(tmp_path, capsys):
    """Statistics fitted with channel_axis=0 (RunningStats takes it) on data read in
    batches along axis 0: the error blamed a ``--channel-axis 0`` never passed."""
    np.save(tmp_path / "x.npy", np.zeros((100, 3)))
    stats = tmp_path / "st.npz"
    nbbn.RunningStats(channel_axis=0).update(np.ones((3, 10))).save(stats)
    line = user_error(["transform", str(tmp_path / "x.npy"), "--stats", str(stats), "-o",
                       str(tmp_path / "y.npy"), "--no-progress"], capsys,
                      "the statistics' channel axis 0 is axis 0 of the 2-d data",
                      "pass --channel-axis")
    assert "--channel-axis 0" not in line
    nbbn.RunningStats(channel_axis=-1).update(np.ones((3, 4))).save(stats)
    user_error(["transform", str(tmp_path / "x.npy"), "--stats", str(stats), "-o",
                str(tmp_path / "y.npy"), "--no-progress"], capsys,
               "has 3 channels along the statistics' channel axis -1", "statistics have 4")


# ----------------------------------------------- 2. transform by the saved column names
def test_transform_table_uses_the_saved_column_names(tmp_path, capsys, rng):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    df = pd.DataFrame({"a": rng.standard_normal(50), "b": rng.standard_normal(50) * 10 + 3,
                       "c": rng.standard_normal(50) * 100 - 40, "s": ["x"] * 50})
    df.to_parquet(tmp_path / "t.parquet")
    stats = tmp_path / "cab.npz"
    assert main(["fit", str(tmp_path / "t.parquet"), "--columns", "c,a,b", "-o", str(stats),
                 "--no-progress"]) == 0
    out = tmp_path / "y.npy"
    assert main(["transform", str(tmp_path / "t.parquet"), "--stats", str(stats), "-o",
                 str(out), "--dtype", "float64", "--no-progress"]) == 0
    x = df[["c", "a", "b"]].to_numpy()
    want = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    np.testing.assert_allclose(np.load(out), want, rtol=1e-12, atol=1e-12)
    # a subset of the columns
    assert main(["fit", str(tmp_path / "t.parquet"), "--columns", "c,a", "-o",
                 str(tmp_path / "ca.npz"), "--no-progress"]) == 0
    assert main(["transform", str(tmp_path / "t.parquet"), "--stats", str(tmp_path / "ca.npz"),
                 "-o", str(out), "--no-progress"]) == 0
    assert np.load(out).shape == (50, 2)
    capsys.readouterr()
    # a column the statistics name and the table lacks
    df.drop(columns=["a"]).to_parquet(tmp_path / "no_a.parquet")
    line = user_error(["transform", str(tmp_path / "no_a.parquet"), "--stats", str(stats),
                       "-o", str(out), "--no-progress"], capsys,
                       "fitted on the columns ['c', 'a', 'b']", "has no column ['a']")
    assert "columns=" not in line


def test_transform_table_error_names_the_option(tmp_path, capsys, rng):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    pd.DataFrame({"a": [1.0, 2.0], "s": ["x", "y"]}).to_parquet(tmp_path / "t.parquet")
    nbbn.fit(np.ones((3, 1)), progress=False).save(tmp_path / "s.npz")  # no names
    line = user_error(["transform", str(tmp_path / "t.parquet"), "--stats",
                       str(tmp_path / "s.npz"), "-o", str(tmp_path / "y.npy"),
                       "--no-progress"], capsys, "non-numeric", "--columns")
    assert "columns=" not in line


def test_columns_errors_show_the_names_not_the_metavar(tmp_path, capsys, rng):
    """Errors about --columns name the columns asked for and the numeric ones to pass
    (a list that reads back, a name with a comma quoted), not the metavar A,B,..."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = str(tmp_path / "t.parquet")
    pd.DataFrame({"a,b": rng.standard_normal(5), "c": rng.standard_normal(5),
                  "s": ["x"] * 5}).to_parquet(path)
    lines = [user_error(["fit", path, "--no-progress"], capsys, "non-numeric columns 's'",
                        """pass --columns '"a,b",c' to read the numeric ones""")]
    assert main(["fit", path, "--columns", '"a,b",c', "-o", str(tmp_path / "s.npz"),
                 "--no-progress"]) == 0
    capsys.readouterr()
    lines += [
        user_error(["transform", path, "--stats", str(tmp_path / "s.npz"), "--columns",
                    'c,"a,b"', "-o", str(tmp_path / "y.npy"), "--no-progress"], capsys,
                   "fitted on the columns ['a,b', 'c'], but --columns names ['c', 'a,b']",
                   "leave --columns out"),
        user_error(["fit", path, "--key", "k", "--columns", "c", "--no-progress"], capsys,
                   "choose its columns with --columns"),
    ]
    for line in lines:
        assert "A,B" not in line and "[...]" not in line and "columns=" not in line


def test_the_columns_suggestion_can_be_pasted_back(tmp_path, capsys):
    """The suggested --columns must read back: 'pass --columns -x,-y' was refused by
    argparse ("expected one argument"), and a blank column name (a pandas CSV index)
    was written as an empty entry, which --columns drops, so the list pasted back read
    fewer columns than it said."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = str(tmp_path / "t.parquet")
    pd.DataFrame({"-x": [1.0, 2.0], "-y": [3.0, 4.0], "s": ["a", "b"]}).to_parquet(path)
    user_error(["fit", path, "--no-progress"], capsys, "pass --columns=-x,-y to read")
    out = str(tmp_path / "s.npz")
    assert main(["fit", path, "--columns=-x,-y", "-o", out, "--no-progress"]) == 0
    assert nbbn.RunningStats.load(out).channel_names == ("-x", "-y")
    capsys.readouterr()
    csv = str(tmp_path / "t.csv")
    pd.DataFrame({"a": [1.0, 2.0], "s": ["u", "v"]}).to_csv(csv)  # (its index: named "")
    user_error(["fit", csv, "--no-progress"], capsys,
               "pass --columns a (which leaves out the column '': a blank name can be given "
               "to --columns only alone; nbbn.fit(path, columns=['', 'a']) reads them all)")
    pd.DataFrame({"s": ["u", "v"]}).to_csv(csv)
    user_error(["fit", csv, "--no-progress"], capsys, "pass --columns '' to read")
    assert main(["fit", csv, "--columns", "", "-o", out, "--no-progress"]) == 0
    assert nbbn.RunningStats.load(out).channel_names == ("",)


# ----------------------------------------------------------- 3. image depth always
def test_images_mixing_8_and_16_bit_are_refused_or_skipped(tmp_path, capsys):
    pil = pytest.importorskip("PIL.Image")
    d = tmp_path / "mix"
    d.mkdir()
    pil.fromarray(np.full((4, 4), 6, np.uint8)).save(d / "a8.png")
    pil.fromarray(np.full((4, 4), 63874, np.uint16)).save(d / "b16.png")
    user_error(["fit", str(d), "--no-progress"], capsys, "b16.png", "16-bit", "8-bit",
               "--mode L")
    out = tmp_path / "s.npz"
    assert main(["fit", str(d), "--on-error", "skip", "--no-progress", "-o", str(out)]) == 0
    stats = nbbn.RunningStats.load(out)
    assert stats.count.tolist() == [16] and stats.max.tolist() == [6.0]
    assert len(stats.skipped) == 1 and "b16.png" in stats.skipped[0]


# ---------------------------------------------------------------- 4. empty tables
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_empty_table_writes_a_loadable_file(tmp_path, capsys, kind):
    if kind == "csv":
        path = tmp_path / "hdr.csv"
        path.write_text("a,b\n")
    else:
        pd = pytest.importorskip("pandas")
        pytest.importorskip("pyarrow")
        path = tmp_path / "e.parquet"
        pd.DataFrame({"a": np.zeros(0), "b": np.zeros(0)}).to_parquet(path)
    out, ck = tmp_path / "s.npz", tmp_path / "fit.ckpt"
    assert main(["fit", str(path), "-o", str(out), "--checkpoint", str(ck),
                 "--no-progress"]) == 0
    loaded = nbbn.RunningStats.load(out)  # its columns, counts 0 (None before 2026-12-07)
    assert loaded.num_channels == 2 and loaded.count.tolist() == [0, 0]
    assert main(["info", str(out)]) == 0
    # the same command resumes from the (complete) checkpoint
    assert main(["fit", str(path), "-o", str(out), "--checkpoint", str(ck), "--resume",
                 "--no-progress"]) == 0
    assert "no data" in capsys.readouterr().out


def test_empty_table_has_its_columns_as_channels_in_json_and_info(tmp_path, capsys):
    """A Parquet file of 0 rows: fit's JSON and info give the same channel count, that
    of its numeric columns (info said 0 where the JSON said 2)."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path, out = tmp_path / "e.parquet", tmp_path / "s.npz"
    pd.DataFrame({"a": np.zeros(0), "b": np.zeros(0, np.int32), "s": np.array([], str)}
                 ).to_parquet(path)
    assert main(["fit", str(path), "--columns", "a,b", "--format", "json", "-o", str(out),
                 "--no-progress"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["num_channels"] == 2 and d["channel_names"] == ["a", "b"]
    assert main(["info", str(out)]) == 0
    head, *rest = capsys.readouterr().out.splitlines()
    assert ", 2 channels, " in head and rest[0].startswith("no data")
    nbbn.RunningStats().save(tmp_path / "none.npz")  # (no names: no channels)
    assert main(["info", str(tmp_path / "none.npz")]) == 0
    assert ", 0 channels, " in capsys.readouterr().out


# ------------------------------------------------------------ 5. pandas index
def test_parquet_pandas_index_is_not_a_channel(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    pd.DataFrame({"a": [1.0, 2.0, 3.0]}, index=[10, 20, 30]).to_parquet(tmp_path / "i.parquet")
    pd.DataFrame({"a": [1.0, 2.0]}, index=pd.Index(["x", "y"], name="id")).to_parquet(
        tmp_path / "s.parquet")
    for name, n in (("i.parquet", 3), ("s.parquet", 2)):
        assert main(["fit", str(tmp_path / name), "--format", "json", "--no-progress"]) == 0
        d = json.loads(capsys.readouterr().out)
        assert d["channel_names"] == ["a"] and d["count"] == [n]
    stats = nbbn.fit(tmp_path / "i.parquet", progress=False)
    assert stats.channel_names == ("a",)
    # named explicitly, the index column is read
    stats = nbbn.fit(tmp_path / "i.parquet", columns=["__index_level_0__"], progress=False)
    assert stats.mean.tolist() == [20.0]


# --------------------------------------------------- 6. image options on other sources
@pytest.mark.parametrize("option", [["--histogram"], ["--mode", "RGB"], ["--size", "8"],
                                    ["--on-error", "skip"]])
def test_image_options_refused_for_other_sources(tmp_path, capsys, option):
    np.save(tmp_path / "u8.npy", np.zeros((3, 2), np.uint8))
    user_error(["fit", str(tmp_path / "u8.npy"), *option, "--no-progress"], capsys,
               f"{option[0]} applies to image files only", "u8.npy")


# -------------------------------------------------------- 7. -o is the checkpoint
def test_output_equal_to_checkpoint_is_refused(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.ones((5, 2)))
    same = str(tmp_path / "same.npz")
    user_error(["fit", str(tmp_path / "x.npy"), "--checkpoint", same, "-o", same,
                "--no-progress"], capsys, "also the --checkpoint")
    assert not (tmp_path / "same.npz").exists()


def test_output_named_as_text_is_refused_before_the_fit(tmp_path, capsys, monkeypatch):
    """-o stats.json wrote a zip archive under a JSON name, after the whole fit."""
    import nbbn.pipeline

    np.save(tmp_path / "x.npy", np.ones((5, 2)))

    def no_fit(*args, **kwargs):
        raise AssertionError("the fit ran")

    monkeypatch.setattr(nbbn.pipeline, "fit", no_fit)
    for name in ("stats.json", "stats.CSV", "s.txt"):
        user_error(["fit", str(tmp_path / "x.npy"), "-o", str(tmp_path / name),
                    "--no-progress"], capsys, "written as an .npz archive", "name the file .npz")
        assert not (tmp_path / name).exists()


# --------------------------------------------------- 8. option names in error lines
def test_errors_name_options_not_parameters(tmp_path, capsys):
    x = np.ones((6, 2))
    x[2, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    line = user_error(["fit", str(tmp_path / "x.npy"), "--nan-policy", "raise",
                       "--no-progress"], capsys, "--nan-policy raise:")
    assert "nan_policy" not in line
    nbbn.fit(np.ones((3, 2)), progress=False).save(tmp_path / "s.npz")
    line = user_error(["transform", str(tmp_path / "x.npy"), "--stats", str(tmp_path / "s.npz"),
                       "-o", str(tmp_path / "y.npy"), "--eps", "-1"], capsys,
                      "--eps must be finite and >= 0")
    user_error(["fit", str(tmp_path), "-o", str(tmp_path), "--no-progress"], capsys,
               "is a folder")
    for bad in ("abc", "3x", "0", "2x0x3"):
        with pytest.raises(SystemExit) as e:
            main(["fit", str(tmp_path / "x.npy"), "--size", bad])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "argument --size: expected S or HxW" in err and "int()" not in err


def test_image_and_parquet_errors_name_the_file(tmp_path, capsys):
    pil = pytest.importorskip("PIL.Image")
    pytest.importorskip("pyarrow")
    pil.fromarray(np.ones((3, 3), np.float32)).save(tmp_path / "f.tif")
    user_error(["fit", str(tmp_path / "f.tif"), "--no-progress"], capsys,
               "f.tif: pixels of mode F", "--mode L")
    (tmp_path / "z.parquet").write_bytes(b"")
    user_error(["fit", str(tmp_path / "z.parquet"), "--no-progress"], capsys,
               "z.parquet: not a readable Parquet file")


def test_transform_of_a_named_channel_axis_names_the_option(tmp_path, capsys):
    """Statistics fitted on a DataArray keep a dimension name as their channel axis; a
    transform of a file (numpy rows) says to pass --channel-axis (it named the Python
    parameter only), and with it the file is transformed."""
    xr = pytest.importorskip("xarray")
    x = np.arange(12.0).reshape(4, 3)
    np.save(tmp_path / "x.npy", x)
    nbbn.channel_stats(xr.DataArray(x, dims=("row", "band")), "band").save(tmp_path / "s.npz")
    argv = ["transform", str(tmp_path / "x.npy"), "--stats", str(tmp_path / "s.npz"), "-o",
            str(tmp_path / "y.npy"), "--no-progress"]
    line = user_error(argv, capsys, "dimension name 'band'", "pass --channel-axis AXIS")
    assert "channel_axis" not in line and not (tmp_path / "y.npy").exists()
    assert main([*argv, "--channel-axis", "1"]) == 0
    assert np.load(tmp_path / "y.npy").shape == (4, 3)


# ------------------------------------------------------------------ 9. JSON infinities
def test_json_tells_infinity_from_nan(tmp_path, capsys):
    x = np.array([[1.0, 1.0, 1.0], [np.inf, -np.inf, np.nan], [2.0, 2.0, 2.0]])
    np.save(tmp_path / "x.npy", x)
    assert main(["fit", str(tmp_path / "x.npy"), "--format", "json", "--no-progress"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["max"] == ["Infinity", 2.0, None] and d["min"] == [1.0, "-Infinity", None]
    assert d["mean"] == ["Infinity", "-Infinity", None]
    assert float(d["max"][0]) == np.inf and float(d["min"][1]) == -np.inf


# ------------------------------------------------------------------------ LOW items
def test_plot_refuses_a_name_that_is_not_png(tmp_path, capsys):
    nbbn.fit(np.ones((3, 2)), progress=False).save(tmp_path / "s.npz")
    user_error(["plot", str(tmp_path / "s.npz"), "-o", str(tmp_path / "out.jpg")], capsys,
               "expected a path ending in .png")
    assert not (tmp_path / "out.jpg").exists()


@pytest.mark.parametrize("output", [None, "st.png"])
def test_plot_refuses_to_write_over_its_statistics_file(tmp_path, capsys, output):
    """A statistics file named ``st.png``: the default output (STATS with .png) or the
    same -o was the file itself, which the plot replaced with a PNG."""
    stats = tmp_path / "st.png"
    nbbn.fit(np.ones((3, 2)), progress=False).save(stats)
    before = stats.read_bytes()
    argv = ["plot", str(stats)] + ([] if output is None else ["-o", str(tmp_path / output)])
    user_error(argv, capsys, "is the statistics file STATS")
    assert stats.read_bytes() == before


def test_a_path_that_looks_like_an_option_is_not_respelled(tmp_path, capsys, monkeypatch):
    """Hive-style partition folders (``workers=2``, ``batch_size=5``) named in a message
    were rewritten as the options of the same names (``--workers 2``)."""
    monkeypatch.chdir(tmp_path)
    for name in ("workers=2", "batch_size=5"):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "a.npy", np.ones((4, 3)))
    user_error(["fit", "workers=2", "--channel-axis", "7"], capsys,
               "--channel-axis 7 is out of range", "data of workers=2 (1 file)")
    user_error(["fit", "batch_size=5/b.npy"], capsys, "batch_size=5/b.npy")


def test_one_skipped_file_and_one_row_are_singular(tmp_path):
    from nbbn._cli_errors import interrupted_message
    from nbbn.errors import FitInterrupted

    exc = FitInterrupted(nbbn.RunningStats(), None, 1)
    assert "after 1 row;" in interrupted_message(exc, "fit", ["fit", "x.npy"])


def test_unwritable_folders_refused_before_the_fit_and_table_before_the_save(
        tmp_path, capsys, monkeypatch):
    """-o and --checkpoint in a folder this process cannot write are refused before the
    fit (not after hours of it); and the table is printed before -o is written, so a
    save that fails still shows the statistics."""
    np.save(tmp_path / "x.npy", np.arange(12.0).reshape(4, 3))
    import nbbn.pipeline as pipeline

    ro = str(tmp_path / "ro")
    real_access = pipeline.os.access
    monkeypatch.setattr(pipeline.os, "access",
                        lambda p, mode: False if str(p) == ro else real_access(p, mode))
    (tmp_path / "ro").mkdir()
    for flag in ("-o", "--checkpoint"):
        user_error(["fit", str(tmp_path / "x.npy"), flag, f"{ro}/f.npz", "--no-progress"],
                   capsys, f"{flag} {ro}/f.npz: the folder {ro} is not writable")

    def failing_save(self, path):
        raise OSError(f"{path}: disk full")

    monkeypatch.setattr(nbbn.RunningStats, "save", failing_save)
    assert main(["fit", str(tmp_path / "x.npy"), "-o", str(tmp_path / "s.npz"),
                 "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "disk full" in captured.err and "4.5" in captured.out  # channel 0's mean


def test_corrupt_npz_and_empty_lists_are_one_line_errors(tmp_path, capsys, rng):
    """A .npz whose data fails its checksum (or does not inflate) is a one-line error,
    as a truncated one; so is `nbbn warmup --dtypes ""`."""
    np.savez_compressed(tmp_path / "b.npz", rng.standard_normal((20000, 3)))
    data = bytearray((tmp_path / "b.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "b.npz").write_bytes(bytes(data))
    user_error(["fit", str(tmp_path / "b.npz"), "--no-progress"], capsys,
               "the file is corrupt")
    user_error(["warmup", "--dtypes", ""], capsys, "--dtypes names nothing")


def test_read_only_outputs_refused_before_the_fit_naming_them(tmp_path, capsys, monkeypatch):
    """An existing read-only -o (or checkpoint) failed only after the fit, with an error
    naming the hidden temporary file (its mode, copied from the target, made it
    unwritable). Now the fit refuses it up front, and ``save`` names the file. (The
    process may run as root, for whom every file is writable: ``os.access`` is patched.)"""
    np.save(tmp_path / "x.npy", np.arange(12.0).reshape(4, 3))
    ro = tmp_path / "ro.npz"
    nbbn.fit(tmp_path / "x.npy", progress=False).save(ro)
    before = ro.read_bytes()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ro)
                        and mode & os.W_OK else real_access(p, mode))
    for flag in ("-o", "--checkpoint"):
        user_error(["fit", str(tmp_path / "x.npy"), flag, str(ro), "--no-progress"],
                   capsys, f"{flag} {ro}: the file is read-only")
    with pytest.raises(PermissionError, match=r"the file is read-only.*ro\.npz"):
        nbbn.RunningStats(1).save(ro)
    assert ro.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro.npz", "x.npy"]


def test_plot_passes_dpi_and_title_and_accepts_max_dpi(tmp_path, monkeypatch, capsys):
    from nbbn import plot

    got = []
    monkeypatch.setattr(plot, "plot_stats", lambda stats, out, **kw: got.append(kw))
    nbbn.channel_stats(np.ones((3, 2)), 1).save(tmp_path / "s.npz")
    assert main(["plot", str(tmp_path / "s.npz"), "--dpi", "1000", "--title", "T"]) == 0
    assert got == [{"title": "T", "dpi": 1000}]
    assert main(["plot", str(tmp_path / "s.npz"), "--dpi", "1001"]) == 2


def test_plot_refuses_to_write_its_histogram_over_the_statistics(tmp_path, capsys):
    """STATS named X.histogram.png with -o X.png: the histogram's file would be STATS."""
    stats = tmp_path / "st.histogram.png"
    nbbn.channel_stats(np.ones((3, 2)), 1).save(stats)
    before = stats.read_bytes()
    assert main(["plot", str(stats), "-o", str(tmp_path / "st.png")]) == 2
    assert "is the statistics file STATS" in capsys.readouterr().err
    assert stats.read_bytes() == before


def test_image_size_is_height_then_width():
    from nbbn.cli import _image_size

    assert _image_size("224x320") == (224, 320) and _image_size("256") == 256


def test_transform_passes_its_options(tmp_path, monkeypatch, capsys):
    """``--eps 0`` is allowed; ``--dtype``, ``--eps`` and ``--channel-axis`` reach
    ``pipeline.transform``."""
    from nbbn import pipeline

    got = []

    def fake(source, stats, out, **kw):
        got.append(kw)
        return np.zeros((2, 3), np.float16)

    monkeypatch.setattr(pipeline, "transform", fake)
    nbbn.channel_stats(np.ones((3, 3)), 1).save(tmp_path / "s.npz")
    argv = ["transform", "x.npy", "--stats", str(tmp_path / "s.npz"), "-o", "y.npy",
            "--eps", "0", "--dtype", "float16", "--channel-axis", "-1", "--no-progress"]
    assert main(argv) == 0
    kw, = got
    assert (kw["eps"], kw["dtype"], kw["channel_axis"]) == (0.0, "float16", -1)
    assert "shape (2, 3), dtype float16" in capsys.readouterr().out
    assert main([*argv[:6], "--eps", "-1", "--no-progress"]) == 2
