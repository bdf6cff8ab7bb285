"""Tables as sources: Parquet, CSV, DataFrames, Arrow tables and xarray Datasets.

Every result is compared with the float64 reference of ``reference.py`` computed from
the numpy columns the test generated (missing values as NaN), never with numbers
written here.
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest
from reference import ref_stats_rows

import nbbn
from nbbn import MissingExtraError
from nbbn.checkpoint import load_checkpoint

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pacsv = pytest.importorskip("pyarrow.csv")

NUMERIC = ("f32", "f64", "i64")
N = 230


def fit(src, *args, **kw):
    kw.setdefault("progress", False)
    return nbbn.fit(src, *args, **kw)


def same_bits(a, b) -> bool:
    da, db = a.to_dict(), b.to_dict()
    return da.keys() == db.keys() and all(
        np.asarray(da[k]).tobytes() == np.asarray(db[k]).tobytes() for k in da)


def columns(rng, n: int = N) -> dict:
    """Three numeric columns (float64 and int64 with missing values), two others."""
    f32 = (rng.standard_normal(n) * 3 + 100).astype(np.float32)
    f64 = rng.standard_normal(n) * 1e3 - 5
    i64 = rng.integers(-50, 10_000, n)
    return {"f32": f32, "f64": f64, "i64": i64,
            "f64_missing": rng.random(n) < 0.1, "i64_missing": rng.random(n) < 0.1,
            "name": np.array([f"row{i}" for i in range(n)]), "flag": rng.random(n) < 0.5}


def arrow_table(c: dict):
    return pa.table({
        "f32": pa.array(c["f32"]),
        "name": pa.array(c["name"]),
        "f64": pa.array(c["f64"], mask=c["f64_missing"]),
        "i64": pa.array(c["i64"], mask=c["i64_missing"]),
        "flag": pa.array(c["flag"]),
    })


def reference(c: dict, names=NUMERIC, nan_policy="propagate"):
    """float64 rows, one per channel, missing values as NaN."""
    rows = []
    for name in names:
        v = np.asarray(c[name], dtype=np.float64).copy()
        if f"{name}_missing" in c:
            v[c[f"{name}_missing"]] = np.nan
        rows.append(v)
    return ref_stats_rows(np.stack(rows), nan_policy)


def assert_matches(stats, ref, names=NUMERIC, rtol=1e-12):
    assert stats.channel_names == tuple(names)
    np.testing.assert_array_equal(stats.count, ref.count)
    for field in ("mean", "var", "min", "max"):
        np.testing.assert_allclose(getattr(stats, field), getattr(ref, field), rtol=rtol,
                                   equal_nan=True, err_msg=field)


# -------------------------------------------------------------------------- Parquet
@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_parquet_with_nulls_matches_reference(tmp_path, rng, nan_policy):
    c = columns(rng)
    pq.write_table(arrow_table(c), tmp_path / "t.parquet", row_group_size=50)
    stats = fit(tmp_path / "t.parquet", columns=list(NUMERIC), nan_policy=nan_policy,
                batch_size=37)
    assert_matches(stats, reference(c, nan_policy=nan_policy))
    missing = [0, c["f64_missing"].sum(), c["i64_missing"].sum()]
    np.testing.assert_array_equal(stats.nan_count, missing)
    with pytest.raises(ValueError, match=r"t\.parquet row group 0, rows 0-37: nan_policy='raise'"):
        fit(tmp_path / "t.parquet", columns=list(NUMERIC), nan_policy="raise", batch_size=37)


def test_parquet_folder_and_glob_of_files_in_order(tmp_path, rng):
    a, b = columns(rng, 120), columns(rng, 90)
    d = tmp_path / "parts"
    d.mkdir()
    pq.write_table(arrow_table(a), d / "part-0.parquet", row_group_size=40)
    pq.write_table(arrow_table(b), d / "part-1.parquet", row_group_size=64)
    both = {k: np.concatenate([a[k], b[k]]) for k in a}
    ref = reference(both, ("i64", "f32"), "omit")
    for src in (d, str(d / "*.parquet"), [d / "part-0.parquet", d / "part-1.parquet"]):
        stats = fit(src, columns=["i64", "f32"], nan_policy="omit")
        assert_matches(stats, ref, ("i64", "f32"))
    # the second file lacks a column the first one has
    pq.write_table(arrow_table(b).drop(["f32"]), d / "part-1.parquet")
    with pytest.raises(ValueError, match=r"part-1\.parquet has no column \['f32'\]"):
        fit(d, columns=["i64", "f32"])


def test_parquet_resume_after_an_error_records_the_row_group(tmp_path, rng, monkeypatch):
    """A failed row-group read keeps the rows before it; the checkpoint names the row
    group; the resumed fit equals an uninterrupted one bit for bit."""
    from nbbn import _tabular

    c = columns(rng)
    path = tmp_path / "t.parquet"
    pq.write_table(arrow_table(c), path, row_group_size=50)
    kw = {"columns": ["f32", "f64"], "batch_size": 30, "nan_policy": "omit"}
    whole = fit(path, **kw)
    ck = tmp_path / "fit.ckpt"
    orig = _tabular._RowGroupReader._read

    def failing(self, index):
        if index == 3:
            raise OSError("disk gone")
        return orig(self, index)

    monkeypatch.setattr(_tabular._RowGroupReader, "_read", failing)
    with pytest.raises(ValueError, match="row group 3: cannot read it"):
        fit(path, checkpoint=ck, **kw)
    saved = load_checkpoint(ck)
    assert saved.rows_done == 150 and not saved.complete
    assert saved.position["shard"] == 2 and saved.position["row"] == 50
    assert saved.position["name"].endswith("row group 2")
    assert saved.stats.channel_names == ("f32", "f64")
    monkeypatch.undo()
    kw.pop("batch_size")  # a resumed fit takes the checkpoint's
    with pytest.raises(nbbn.CheckpointError, match=r"written with columns=\[.f32., .f64.\], "
                       r"but this fit has columns=\[.f64., .f32.\]: a setting changed"):
        fit(path, checkpoint=ck, resume=True, **{**kw, "columns": ["f64", "f32"]})
    assert same_bits(fit(path, checkpoint=ck, resume=True, **kw), whole)
    assert load_checkpoint(ck).complete


def test_parquet_resume_inside_a_row_group_and_changed_file_refused(tmp_path, rng, monkeypatch):
    from nbbn import FitInterrupted, _tabular

    c = columns(rng)
    path = tmp_path / "t.parquet"
    pq.write_table(arrow_table(c), path, row_group_size=100)
    kw = {"columns": list(NUMERIC), "batch_size": 30}
    whole = fit(path, **kw)
    ck = tmp_path / "fit.ckpt"
    calls = {"n": 0}
    orig = _tabular.TableSource._batch

    def batch(self, *args):  # Ctrl-C before the 4th batch (rows 90-100 of row group 0)
        calls["n"] += 1
        if calls["n"] == 4:
            import signal

            os.kill(os.getpid(), signal.SIGINT)
        return orig(self, *args)

    monkeypatch.setattr(_tabular.TableSource, "_batch", batch)
    with pytest.raises(FitInterrupted):
        fit(path, checkpoint=ck, **kw)
    pos = load_checkpoint(ck).position  # batches 1-3 (or 4) of row group 0 were counted
    assert pos["shard"] == 0 and pos["row"] in (30, 60, 90, 100)
    monkeypatch.undo()
    assert same_bits(fit(path, checkpoint=ck, resume=True, columns=list(NUMERIC)), whole)
    pq.write_table(arrow_table(columns(rng)), path, row_group_size=100)
    with pytest.raises(nbbn.CheckpointError, match="does not match the source"):
        fit(path, checkpoint=ck, resume=True, columns=list(NUMERIC))


# ------------------------------------------------------------------------------ CSV
@pytest.mark.parametrize("nan_policy", ["propagate", "omit"])
def test_csv_with_nulls_matches_reference(tmp_path, rng, nan_policy):
    """Empty fields are missing values; an integer column with them is read as float64."""
    c = columns(rng)
    table = arrow_table(c)
    pacsv.write_csv(table, tmp_path / "t.csv")  # shortest round-trip decimals
    names = ("f64", "i64")
    stats = fit(tmp_path / "t.csv", columns=list(names), nan_policy=nan_policy, batch_size=64)
    assert_matches(stats, reference(c, names, nan_policy), names)
    # a TSV, and the default: every numeric column, but there are two others
    pacsv.write_csv(table.select(["f64", "i64"]), tmp_path / "t.tsv",
                    pacsv.WriteOptions(delimiter="\t"))
    assert_matches(fit(tmp_path / "t.tsv", nan_policy=nan_policy),
                   reference(c, names, nan_policy), names)
    with pytest.raises(ValueError, match=r"non-numeric columns 'name' \(string\), 'flag' "
                                         r"\(bool\).*pass columns=\['f32', 'f64', 'i64'\] to "
                                         "read the numeric ones"):
        fit(tmp_path / "t.csv")


@pytest.mark.parametrize("blank_lines", [False, True])
def test_csv_resume_skips_the_counted_rows(tmp_path, rng, monkeypatch, blank_lines):
    """With empty lines between the rows (and blocks of 512 bytes, so that the rows to
    skip span several), pyarrow's ``skip_rows_after_names`` counted the empty lines as
    rows: the resumed fit counted rows twice."""
    from nbbn import FitInterrupted, _tabular

    c = columns(rng)
    path = tmp_path / "t.csv"
    pacsv.write_csv(arrow_table(c).select(["f64", "i64"]), path)
    if blank_lines:
        monkeypatch.setattr(_tabular, "CSV_BLOCK_BYTES", 512)
        head, *rows = path.read_text().splitlines()
        path.write_text(head + "\n" + "".join(f"{r}\n\n" for r in rows))
    whole = fit(path, batch_size=40, nan_policy="omit")
    ck = tmp_path / "fit.ckpt"
    calls = {"n": 0}
    orig = _tabular.TableSource._batch

    def batch(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:
            import signal

            os.kill(os.getpid(), signal.SIGINT)
        return orig(self, *args)

    monkeypatch.setattr(_tabular.TableSource, "_batch", batch)
    with pytest.raises(FitInterrupted):
        fit(path, batch_size=40, nan_policy="omit", checkpoint=ck)
    assert load_checkpoint(ck).position["row"] % 40 == 0 < load_checkpoint(ck).rows_done
    monkeypatch.setattr(_tabular.TableSource, "_batch", orig)
    assert same_bits(fit(path, checkpoint=ck, resume=True, nan_policy="omit"), whole)


def test_csv_bad_value_later_names_the_file(tmp_path, monkeypatch):
    from nbbn import _tabular

    monkeypatch.setattr(_tabular, "CSV_BLOCK_BYTES", 256)  # types come from the 1st block
    lines = ["a,b"] + [f"{i},{i * 0.5}" for i in range(50)] + ["7,oops"]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"t\.csv, after data row [1-9]\d*: .*oops"):
        fit(tmp_path / "t.csv")


def test_column_names_with_commas_and_blanks(tmp_path):
    """A str of columns is split at commas as a CSV row: a quoted name keeps its comma;
    a whole str that names a column is that column; blanks are stripped unless a column
    has them."""
    table = pa.table({"c,d": [1.0, 2.0, 4.0], " e": [3.0, 5.0, 6.0], "f": [0.0, 1.0, 1.0]})
    pq.write_table(table, tmp_path / "t.parquet")
    p = tmp_path / "t.parquet"
    assert fit(p, columns="c,d").channel_names == ("c,d",)
    st = fit(p, columns='"c,d", f, e')
    assert st.channel_names == ("c,d", "f", " e")
    assert fit(p, columns='f, "c,d"').channel_names == ("f", "c,d")
    np.testing.assert_allclose(st.mean, [7 / 3, 2 / 3, 14 / 3])
    with pytest.raises(ValueError, match=r"has no column \['c'"):
        fit(p, columns="c,d,f")
    from nbbn.cli import main

    assert main(["fit", str(p), "--columns", '"c,d",f', "-o", str(tmp_path / "s.npz"),
                 "--no-progress"]) == 0
    assert nbbn.RunningStats.load(tmp_path / "s.npz").channel_names == ("c,d", "f")


# ------------------------------------------------------------------ errors, options
def test_column_errors_name_the_columns(tmp_path, rng):
    c = columns(rng)
    pq.write_table(arrow_table(c), tmp_path / "t.parquet")
    p = tmp_path / "t.parquet"
    with pytest.raises(ValueError, match=r"non-numeric columns 'name' \(string\), 'flag'"):
        fit(p)
    with pytest.raises(ValueError, match=r"column \['name'\] is not numeric \(string\)"):
        fit(p, columns=["f32", "name"])
    with pytest.raises(ValueError, match=r"has no column \['nope'\] \(its columns: \['f32'"):
        fit(p, columns=["nope"])
    with pytest.raises(ValueError, match="names a column twice"):
        fit(p, columns="f32,f32")
    with pytest.raises(ValueError, match=r"key='x' was given, but .* is a table"):
        fit(p, columns=["f32"], key="x")
    with pytest.raises(ValueError, match="columns=.* but the source is not a table"):
        fit(np.zeros((4, 2)), columns=["a"])
    # a table's channels are its columns: any axis but the last is refused
    with pytest.raises(ValueError, match="out of range"):
        fit(p, 2, columns=["f32"])
    stats = fit(p, -1, columns=["f64", "f32"])
    assert stats.channel_names == ("f64", "f32") and stats.channel_axis == -1


def test_columns_must_be_a_sequence_of_names(tmp_path):
    """A set was read in its iteration order, which changes with PYTHONHASHSEED (the
    channels' order then changed from run to run; pandas refuses a set as an indexer),
    and columns=0 raised Python's bare "'int' object is not iterable"."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({c: [1.0, 2.0] for c in "abcdefgh"})
    for cols in (set("ab"), frozenset("ab")):
        with pytest.raises(TypeError, match=r"columns takes the column names in the order "
                           r".* got a (set|frozenset), whose order changes .* pass a list"):
            fit(df, columns=cols)
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1.0]}), p)
    with pytest.raises(TypeError, match=r"columns takes a list of column names \(or a str "
                       r"of comma-separated names\), but got 0 \(int\)"):
        fit(p, columns=0)
    assert fit(df, columns={"b": 0, "a": 1}).channel_names == ("b", "a")  # (ordered)


def test_an_empty_columns_is_refused_as_such(tmp_path):
    """columns=[], "" or "," said the table "has no numeric column to read", though it
    had."""
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1.0]}), p)
    for cols in ([], "", ",", " , "):
        with pytest.raises(ValueError, match=r"columns is empty: name at least one column "
                           r"\(.*t\.parquet's numeric columns: \['a'\]\)"):
            fit(p, columns=cols)


def test_a_table_without_numeric_columns_says_so(tmp_path):
    """A table whose columns are all non-numeric said "pass columns to choose among the
    numeric ones []"; a CSV file separated by ';' or tabs (read as one string column)
    had no word of the separator."""
    (tmp_path / "semi.csv").write_text("a;b\n1;2\n")
    with pytest.raises(ValueError, match=r"semi\.csv has no numeric column \(its columns: "
                       r"'a;b' \(string\)\): .* holds ';': nbbn reads a \.csv file as "
                       r"comma-separated .* pandas\.read_csv\(path, sep=';'\)"):
        fit(tmp_path / "semi.csv")
    (tmp_path / "tabs.csv").write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match=r"holds a tab: .* rename it \.tsv$"):
        fit(tmp_path / "tabs.csv")
    table = pa.table({"d": pa.array([1.0, 2.0]).dictionary_encode()})
    with pytest.raises(ValueError, match=r"a pyarrow Table has no numeric column \(its "
                       r"columns: 'd' \(dictionary<values=double.*\)\): only integer and "
                       r"floating columns can be channels$"):
        fit(table)


def test_a_polars_series_or_arrow_array_is_refused_as_1d():
    """A polars Series failed inside numpy ("Cannot interpret 'Float64' as a data
    type") and a pyarrow (Chunked)Array was read as an iterable of items of dtype
    object; a pandas Series is refused as 1-d, with the way to pass it."""
    sources = [pa.chunked_array([[1.0, 2.0]]), pa.array([1.0, 2.0])]
    try:
        import polars as pl
    except ImportError:
        pass
    else:
        sources.append(pl.Series("a", [1.0, 2.0]))
    for src in sources:
        with pytest.raises(TypeError, match=r"^a (pyarrow|polars) \w+ is 1-d: .* pass "
                           r"(series\.to_frame\(\)|pyarrow\.table).* \(N, 1\)"):
            fit(src)
    # (a pandas Series' refusal named no table to pass, where sources.md says it does)
    with pytest.raises(ValueError, match=r"a Series is 1-d: .* pass series\.to_frame\(\)"):
        fit(pytest.importorskip("pandas").Series([1.0, 2.0], name="a"))


@pytest.mark.parametrize("name", ["t.csv.bz2", "t.tsv.xz", "t.csv.zst", "t.csv.zip",
                                  "t.parquet.gz"])
def test_a_compressed_table_nbbn_does_not_read_says_so(tmp_path, name):
    """A .csv.bz2 (.xz, .zst) was refused as "not a .npy, .npz or HDF5 file", and a
    .csv.zip was read as an .npz archive of no arrays."""
    import zipfile

    path = tmp_path / name
    if name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("t.csv", "a\n1\n")
    else:
        path.write_bytes(b"\x00 compressed bytes")
    csv = ".parquet" not in name
    with pytest.raises(ValueError, match=(
            r"compressed (CSV|TSV) file, which nbbn does not read: it reads \.csv and "
            r"\.csv\.gz \(\.tsv and \.tsv\.gz\) files; decompress it first" if csv else
            r"a \.gz-compressed Parquet file, which nbbn does not read: decompress")):
        fit(path)


def test_a_folder_or_glob_of_compressed_tables_says_why_they_are_not_read(tmp_path):
    """A folder of only .csv.bz2 files (or a glob of them) was refused with the generic
    "no .npy or .npz files" message, which left the user guessing; the file's own
    refusal says why."""
    for name in ("a.csv.bz2", "b.csv.bz2"):
        (tmp_path / name).write_bytes(b"\x00 compressed bytes")
    why = (r"compressed tables, such as .*a\.csv\.bz2: a \.bz2-compressed CSV file, which "
           r"nbbn does not read: .* decompress it first")
    with pytest.raises(FileNotFoundError, match=r"the folder holds .*; it holds " + why):
        fit(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"the pattern matches .*; it matches " + why):
        fit(str(tmp_path / "*.csv.bz2"))


def test_folders_of_tables_in_a_list_or_a_glob_are_named(tmp_path):
    """Spark writes a "x.parquet" folder of part files: a list of such folders said
    "no such file", and a glob matching only them (or a glob of tables that matches
    nothing) said "the pattern matches no .npy or .npz file"."""
    for name, rows in (("a", [1.0, 2.0]), ("b", [3.0])):
        (tmp_path / f"{name}.parquet").mkdir()
        pq.write_table(pa.table({"x": rows}), tmp_path / f"{name}.parquet" / "part-0.parquet")
    both = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    files = os.path.join(str(tmp_path), "*.parquet", "*.parquet")
    with pytest.raises(IsADirectoryError, match=r"a\.parquet \(and 1 more\): a folder, in a "
                       r"list of files; pass a folder alone .* such as " + re.escape(files)):
        fit(both)
    with pytest.raises(FileNotFoundError, match=r"the pattern matches no Parquet file, only "
                       r"folders \(\[.*a\.parquet', .*b\.parquet'\]\), .* such as "
                       + re.escape(files)):
        fit(str(tmp_path / "*.parquet"))
    assert fit(files).count.tolist() == [3]  # (the glob suggested)
    for pattern, what in (("*.csv", "CSV"), ("*.tsv.gz", "TSV"), ("*.pq", "Parquet")):
        with pytest.raises(FileNotFoundError, match=rf"the pattern matches no {what} file$"):
            fit(str(tmp_path / "empty" / pattern))


def test_missing_pyarrow_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'nbbn\[tabular\]'"):
        fit(tmp_path / "t.parquet")


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_column_only_in_a_later_file_is_refused(tmp_path, rng, kind):
    """Without columns=, the files of a folder must hold the same columns: a column
    only in a later file was dropped silently (and refused in the other order)."""
    write = (lambda t, p: pq.write_table(t, p)) if kind == "parquet" else pacsv.write_csv
    x, y = rng.standard_normal(5), rng.standard_normal(5)
    write(pa.table({"x": x}), tmp_path / f"a.{kind}")
    write(pa.table({"y": y, "x": x}), tmp_path / f"b.{kind}")
    with pytest.raises(ValueError, match=r"b\.\w+ has columns \['y'\] that .*a\.\w+ has not"):
        fit(tmp_path)
    both = fit(tmp_path, columns=["x"])  # chosen: the others are left out on purpose
    assert both.channel_names == ("x",) and both.count.tolist() == [10]
    os.rename(tmp_path / f"a.{kind}", tmp_path / f"c.{kind}")  # the other order
    with pytest.raises(ValueError, match=r"c\.\w+ has no column \['y'\]"):
        fit(tmp_path)


def test_a_dotted_column_beside_a_struct_field(tmp_path):
    """A column named "a.b" next to a struct a with a field b: pyarrow's read of the
    column "a.b" returns the struct too, which reached the kernels."""
    t = pa.table({"a.b": [10.0, 20.0], "a": pa.array([{"b": 1}, {"b": 2}])})
    pq.write_table(t, tmp_path / "t.parquet")
    stats = fit(tmp_path / "t.parquet", columns=["a.b"])
    assert stats.channel_names == ("a.b",) and stats.mean.tolist() == [15.0]


def test_transform_output_dtype_holds_every_file(tmp_path):
    """An int64 file before a float64 one: the default output is float64 (it was the
    first file's, float32, which rounded the float64 rows)."""
    tables = tmp_path / "tables"  # (y.npy beside the tables: refused, the next fit of the
    tables.mkdir()  # folder would refuse it for holding .npy shards and tables)
    pq.write_table(pa.table({"x": np.arange(4, dtype=np.int64)}), tables / "p1.parquet")
    v = np.array([0.1, 1 / 3, 1e-9 + 2.0])
    pq.write_table(pa.table({"x": v}), tables / "p2.parquet")
    stats = fit(tables)
    out = np.load(nbbn.transform(tables, stats, tmp_path / "y.npy", progress=False))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out[4:, 0], stats.to_normalizer()(v[:, None])[:, 0])


def test_partitioned_folder_is_named_in_the_error(tmp_path):
    for year in (2020, 2021):
        (tmp_path / f"year={year}").mkdir()
        pq.write_table(pa.table({"x": [1.0]}), tmp_path / f"year={year}" / "part.parquet")
    with pytest.raises(FileNotFoundError, match=r"subfolders hold Parquet or CSV files "
                       r"\(year=2020\).*top level only: pass a glob such as .*/\*/\*\.parquet"):
        fit(tmp_path)
    assert fit(str(tmp_path / "*" / "*.parquet")).count.tolist() == [2]


# --------------------------------------------------------------- in-memory tables
def test_pandas_dataframe_with_names_and_missing_values(rng):
    pd = pytest.importorskip("pandas")
    c = columns(rng)
    i64 = pd.array(c["i64"], dtype="Int64")
    i64[c["i64_missing"]] = pd.NA
    f64 = np.where(c["f64_missing"], np.nan, c["f64"])
    df = pd.DataFrame({"f32": c["f32"], "name": c["name"], "f64": f64, "i64": i64})
    with pytest.raises(ValueError, match=r"non-numeric columns 'name'"):
        fit(df)
    stats = fit(df, columns=list(NUMERIC), nan_policy="omit", batch_size=50)
    assert_matches(stats, reference(c, nan_policy="omit"))
    # the default channel_axis=1 is the column axis of a table
    stats = fit(df.drop(columns="name"), nan_policy="omit")
    assert_matches(stats, reference(c, nan_policy="omit"))


def test_pandas_categorical_of_numbers_is_read_as_its_values(tmp_path, rng):
    """A categorical column of numbers was refused ("dtype category") where a Parquet
    file of the same frame (and RunningStats.update of it) read its values: now read as
    its values, a missing one NaN; categories of anything else stay refused, named."""
    pd = pytest.importorskip("pandas")
    ints = rng.integers(0, 5, N)
    miss = rng.random(N) < 0.1
    df = pd.DataFrame({
        "i": pd.Categorical.from_codes(np.where(miss, -1, ints), np.arange(5) * 10),
        "u8": pd.Categorical(ints.astype(np.uint8)),
        "f": pd.Categorical(ints * 0.5), "x": ints * 2.0})
    want = np.stack([np.where(miss, np.nan, ints * 10), ints, ints * 0.5, ints * 2.0])
    assert df["i"].cat.categories.dtype == np.int64 and df["i"].isna().sum() == miss.sum()
    stats = fit(df, nan_policy="omit", batch_size=50)
    assert stats.channel_names == ("i", "u8", "f", "x")
    assert_matches(stats, ref_stats_rows(want, "omit"), ("i", "u8", "f", "x"))
    df.to_parquet(tmp_path / "c.parquet")
    for other in (fit(tmp_path / "c.parquet", nan_policy="omit"),
                  nbbn.channel_stats(df, -1, nan_policy="omit")):
        np.testing.assert_array_equal(other.count, stats.count)
        np.testing.assert_allclose(other.mean, stats.mean, rtol=1e-15)
    for cats, kind in ((["a", "b"], "str"), ([True, False], "bool")):
        with pytest.raises(ValueError, match=rf"non-numeric columns 's' \(dtype category of "
                                             rf"{kind}\)"):
            fit(pd.DataFrame({"s": pd.Categorical(cats), "x": [1.0, 2.0]}))


def test_polars_and_arrow_tables_with_names(rng):
    pl = pytest.importorskip("polars")
    c = columns(rng)
    table = arrow_table(c)
    ref = reference(c, ("i64", "f64"), "omit")
    stats = fit(table, columns=["i64", "f64"], nan_policy="omit")
    assert_matches(stats, ref, ("i64", "f64"))
    batch = table.select(["i64", "f64"]).to_batches()[0]
    assert_matches(fit(batch, nan_policy="omit"), ref, ("i64", "f64"))
    df = pl.from_arrow(table)
    with pytest.raises(ValueError, match=r"non-numeric columns 'name' \(dtype String\)"):
        fit(df)
    with pytest.raises(ValueError, match=r"no numeric column \(its columns: 'w' "
                                         r"\(dtype Int128\)"):
        fit(pl.DataFrame({"w": pl.Series([1, 2], dtype=pl.Int128)}))  # no numpy dtype
    assert_matches(fit(df, columns=["i64", "f64"], nan_policy="omit", batch_size=64), ref,
                   ("i64", "f64"))


def test_xarray_dataset_variables_are_channels(rng):
    xr = pytest.importorskip("xarray")
    u = (rng.standard_normal((40, 3)) * 2 + 7).astype(np.float32)
    v = rng.standard_normal((40, 3)) - 3
    ds = xr.Dataset({"u": (("time", "x"), u), "v": (("time", "x"), v),
                     "label": (("time",), np.array(["a"] * 40))})
    stats = fit(ds, -1, columns=["v", "u"], batch_size=16)
    ref = ref_stats_rows(np.stack([v.ravel(), u.astype(np.float64).ravel()]))
    assert_matches(stats, ref, ("v", "u"))
    with pytest.raises(ValueError, match=r"channels of an xarray.Dataset are its columns "
                                         r"\['v', 'u'\], on the last axis"):
        fit(ds, columns=["v", "u"])  # the default channel_axis=1 is not the last axis here
    with pytest.raises(ValueError, match="must have the same dimensions"):
        fit(ds.assign(w=(("x",), np.zeros(3))), -1, columns=["u", "w"])


def test_fortran_ordered_table_read_as_columns(rng):
    """A (rows, C) array whose columns lie one after the other (pandas' to_numpy())
    gives the statistics of its columns."""
    x = np.asfortranarray(rng.standard_normal((300, 4)) * [1, 10, 100, 1000])
    for dt in (np.float64, np.float32):
        a = np.asfortranarray(x.astype(dt))
        ref = ref_stats_rows(a.T.astype(np.float64))
        s = nbbn.channel_stats(a, -1)
        np.testing.assert_allclose(s.mean, ref.mean, rtol=1e-6)
        np.testing.assert_allclose(s.var, ref.var, rtol=1e-6)


def test_transform_of_a_parquet_file_and_csv_refused(tmp_path, rng):
    c = columns(rng)
    table = arrow_table(c).select(["f64", "f32"])
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=64)
    stats = fit(tmp_path / "t.parquet", nan_policy="omit")
    out = nbbn.transform(tmp_path / "t.parquet", stats, tmp_path / "y.npy", progress=False)
    x = np.stack([table.column(i).to_numpy() for i in range(2)], axis=1)
    np.testing.assert_array_equal(np.load(out), stats.to_normalizer()(x))
    pacsv.write_csv(table, tmp_path / "t.csv")
    # (the refusal said the rows were "not known up front", without the way out)
    with pytest.raises(TypeError, match=r"number of rows is not known up front .*; convert "
                       r"it to Parquet first \(pandas\.read_csv\(path\)\.to_parquet"):
        nbbn.transform(tmp_path / "t.csv", stats, tmp_path / "z.npy", progress=False)
    assert not (tmp_path / "z.npy").exists()
    # a TSV file needs sep='\t' (the advice read it as comma-separated)
    pacsv.write_csv(table, tmp_path / "t.tsv", pacsv.WriteOptions(delimiter="\t"))
    with pytest.raises(TypeError, match=r"\(a TSV file is read as a stream\); convert it to "
                       r"Parquet first \(pandas\.read_csv\(path, sep='\\t'\)\.to_parquet"):
        nbbn.transform(tmp_path / "t.tsv", stats, tmp_path / "z.npy", progress=False)


# ------------------------------------------------------------------------------- CLI
def test_cli_fit_parquet_columns_and_info_shows_names(tmp_path, rng, capsys):
    from nbbn.cli import main

    c = columns(rng)
    pq.write_table(arrow_table(c), tmp_path / "t.parquet", row_group_size=64)
    out = tmp_path / "s.npz"
    assert main(["fit", str(tmp_path / "t.parquet"), "--columns", "f32,i64",
                 "--nan-policy", "omit", "--no-progress", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "name" in text.splitlines()[0] and " f32 " in text and " i64 " in text
    assert nbbn.RunningStats.load(out).channel_names == ("f32", "i64")
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert [ln.split()[1] for ln in info.splitlines()[3:5]] == ["f32", "i64"]
    pacsv.write_csv(arrow_table(c), tmp_path / "t.csv")
    assert main(["fit", str(tmp_path / "t.csv"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "non-numeric columns 'name'" in err
    assert "pass --columns f32,f64,i64 to read the numeric ones" in err  # (not A,B,...)
    assert len(err.strip().splitlines()) == 1
    assert main(["fit", str(tmp_path / "t.csv"), "--columns", "f32,f32", "--no-progress"]) == 2
    assert "--columns names a column twice" in capsys.readouterr().err
    # a cluster fit of a table is refused before a local cluster is started
    assert main(["fit", str(tmp_path / "t.csv"), "--workers", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "a fit on a cluster (--workers) does not read tables yet" in err, err



def test_tabular_benchmark_smoke(tmp_path):
    import statistics
    from io import StringIO

    from nbbn.tools.bench_tabular import run_tabular_bench

    out = StringIO()
    result = run_tabular_bench(out, repeats=1, size_gb=0.002, workdir=str(tmp_path))
    assert result["check_rel_error"] < 1e-9 and result["ratio_fit_to_read_table"] > 0
    # fit throughput over pyarrow's: pyarrow's time over the fit's, pair by pair
    t = result["times_s"]
    assert result["ratio_fit_to_read_table"] == pytest.approx(statistics.median(
        r / f for r, f in zip(t["pyarrow read_table"], t["nbbn.fit"], strict=True)))
    assert "the faster of the two" in out.getvalue()


def test_pandas_sparse_columns_are_read_dense():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"s": pd.arrays.SparseArray([0.0, 1.0, 0.0, np.nan]),
                       "i": pd.arrays.SparseArray([1, 0, 0, 2]), "f": [1.0, 2.0, 3.0, 4.0]})
    rs = nbbn.fit(df, nan_policy="omit", progress=False)
    assert rs.count.tolist() == [3, 4, 4]
    np.testing.assert_allclose(rs.mean, [1 / 3, 0.75, 2.5], rtol=1e-15)


@pytest.mark.parametrize("text", ["a,b", "a,b\n", '"x, y",b', "\ufeffa,b"])
def test_a_csv_of_its_header_alone_gives_empty_statistics(tmp_path, text):
    """Without a line end pyarrow reads ``a,b`` as an empty file (no columns): it was
    refused where ``a,b\\n`` gave empty statistics with the names, as documented."""
    path = tmp_path / "h.csv"
    path.write_text(text, encoding="utf-8")
    rs = nbbn.fit(path, progress=False)
    assert rs.channel_names == (("x, y", "b") if "x" in text else ("a", "b"))
    assert rs.num_channels in (None, 0, 2) and rs.count.sum() == 0
    bad = tmp_path / "bad.csv"  # (a file pyarrow refuses that is not a header alone)
    bad.write_text("a,b\n1,2,3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a readable CSV file"):
        nbbn.fit(bad, progress=False)


@pytest.mark.parametrize("name", ["h.csv.gz", "h.tsv.gz"])
def test_a_compressed_csv_of_its_header_alone_gives_empty_statistics(tmp_path, name):
    """A .csv.gz (.tsv.gz) of its header alone without a line end was refused ("Empty
    CSV file") where the same .csv gave empty statistics with the names."""
    import gzip

    sep = "\t" if "tsv" in name else ","
    path = tmp_path / name
    path.write_bytes(gzip.compress(f"a{sep}b".encode()))
    rs = nbbn.fit(path, progress=False)
    assert rs.channel_names == ("a", "b") and rs.count.sum() == 0
    (tmp_path / "bad.csv.gz").write_bytes(b"a,b")  # (not gzip: pyarrow's error)
    with pytest.raises(ValueError, match="not a readable CSV file"):
        nbbn.fit(tmp_path / "bad.csv.gz", progress=False)


def test_a_recursive_glob_of_tables_reads_every_level(tmp_path):
    """``**`` matched one level only (glob without recursive=True), silently."""
    for i, sub in enumerate(["", "y=1", "y=1/z"]):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
        (tmp_path / sub / f"t{i}.csv").write_text(f"a\n{i}\n", encoding="utf-8")
    rs = nbbn.fit(str(tmp_path / "**" / "*.csv"), progress=False)
    assert rs.count.tolist() == [3] and rs.mean.tolist() == [1.0]


def test_an_empty_file_does_not_widen_the_dtype(tmp_path):
    """A file of no rows leaves the files' common dtype to those with rows."""
    from nbbn._tabular import open_table_path

    pq.write_table(pa.table({"x": pa.array([], pa.float64())}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"x": np.arange(3, dtype=np.float32)}), tmp_path / "b.parquet")
    assert open_table_path(str(tmp_path)).dtype == np.float32


def test_a_parquet_file_without_row_groups_yields_nothing(tmp_path):
    from nbbn._shards import Slot
    from nbbn._tabular import open_table_path
    from nbbn.sources import Position

    p = tmp_path / "z.parquet"
    with pq.ParquetWriter(p, pa.schema([("x", pa.float64())])):
        pass
    assert list(open_table_path(str(p)).batches(None, Position(), Slot)) == []


def test_table_batches_add_up_to_the_tables_bytes():
    from nbbn._shards import Slot
    from nbbn._tabular import open_table
    from nbbn.sources import Position

    src = open_table(pa.table({"a": np.arange(10.0), "b": np.arange(10.0)}))
    batches = list(src.batches(4, Position(), Slot))
    assert [b.rows for b in batches] == [4, 4, 2]
    assert sum(b.nbytes for b in batches) == src.nbytes == 10 * 2 * 8


def test_skipped_rows_span_pieces():
    """A resume's rows to skip run past the first piece into the next."""
    from nbbn._tabular import _skip_rows

    a = np.arange(6.0)
    out = list(_skip_rows(iter([(3, [a[:3]]), (3, [a[3:]])]), 4))
    assert len(out) == 1 and out[0][0] == 2
    np.testing.assert_array_equal(out[0][1][0], [4.0, 5.0])


def test_xarray_datasets_of_scalars_are_refused():
    xr = pytest.importorskip("xarray")
    with pytest.raises(ValueError, match="at least one"):
        fit(xr.Dataset({"a": 1.0, "b": 2.0}))


def test_a_folder_with_npy_files_is_not_a_table(tmp_path):
    from nbbn._tabular import looks_like_table

    np.save(tmp_path / "a.npy", np.ones((3, 2)))
    pq.write_table(pa.table({"x": [1.0]}), tmp_path / "t.parquet")
    assert not looks_like_table(tmp_path)


def test_a_folder_skips_hidden_and_underscored_tables(tmp_path):
    """A folder of tables skips names that start with '.' or '_' (macOS's ._x AppleDouble
    files, _SUCCESS, _metadata, a writer's _tmp file), as pyarrow's dataset discovery
    and pd.read_parquet(folder) do; a folder of shards skips hidden ones, as a glob. They
    were read (5 rows instead of 2), and an AppleDouble file stopped the fit as "not a
    readable Parquet file"."""
    from nbbn.pipeline import written_into_input

    d = tmp_path / "hid"
    d.mkdir()
    pq.write_table(pa.table({"a": [1.0, 2.0]}), d / "part-0.parquet")
    pq.write_table(pa.table({"a": [3.0, 4.0]}), d / ".part-1.parquet")
    pq.write_table(pa.table({"a": [5.0]}), d / "_tmp.parquet")
    (d / "._part-0.parquet").write_bytes(b"\x00\x05\x16\x07 not parquet")
    (d / "_SUCCESS").write_bytes(b"")
    (d / "._x.npy").write_bytes(b"\x00\x05\x16\x07 not npy")  # (no mix of kinds)
    (d / "sub").mkdir()
    (d / "sub" / "._y.parquet").write_bytes(b"not parquet")  # (no nested table)
    stats = fit(d)
    assert stats.count.tolist() == [2] and stats.mean.tolist() == [1.5]
    assert written_into_input(str(d), str(d / ".fit.npz")) is None
    assert written_into_input(str(d), str(d / "fit.npz")) is not None
    s = tmp_path / "shards"
    s.mkdir()
    np.save(s / "a.npy", np.ones((2, 1)))
    np.save(s / "_b.npy", np.zeros((1, 1)))  # (a glob of *.npy matches it: read)
    (s / "._a.npy").write_bytes(b"\x00\x05\x16\x07 not npy")
    assert fit(s).count.tolist() == [3]


def test_parquet_and_csv_in_one_folder_are_refused(tmp_path):
    pq.write_table(pa.table({"x": [1.0]}), tmp_path / "a.parquet")
    (tmp_path / "b.csv").write_text("x\n2.0\n")
    with pytest.raises(ValueError, match="mixes Parquet and CSV"):
        fit(tmp_path)


def test_an_integer_csv_column_with_a_later_decimal(tmp_path, monkeypatch):
    """Columns are read as float64 whatever the first block's values look like."""
    from nbbn import _tabular

    monkeypatch.setattr(_tabular, "CSV_BLOCK_BYTES", 256)  # types come from the 1st block
    vals = [float(i) for i in range(100)] + [2.5]
    (tmp_path / "t.csv").write_text("a\n" + "\n".join(
        [str(i) for i in range(100)] + ["2.5"]) + "\n")
    np.testing.assert_allclose(fit(tmp_path / "t.csv").mean, [np.mean(vals)], rtol=1e-14)


def test_a_list_with_a_missing_file_is_refused(tmp_path):
    pq.write_table(pa.table({"x": [1.0]}), tmp_path / "a.parquet")
    with pytest.raises(FileNotFoundError, match="b.parquet: no such file"):
        fit([tmp_path / "a.parquet", tmp_path / "b.parquet"])


def test_parquet_duplicate_column_names_are_refused(tmp_path):
    t = pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], names=["a", "a"])
    pq.write_table(t, tmp_path / "d.parquet")
    with pytest.raises(ValueError, match=r"several columns named \['a'\]"):
        fit(tmp_path / "d.parquet")


def test_a_table_with_another_channel_axis_is_refused_in_memory():
    """RunningStats.update, channel_stats and Normalizer read a DataFrame given
    channel_axis=0 with its rows as the channels, without names, where nbbn.fit refuses
    it as the docs say (a table's channels are its columns)."""
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0]})
    rs = nbbn.RunningStats(channel_axis=0)
    for table in (df, pa.table(df)):
        with pytest.raises(ValueError, match="channels are its columns: channel_axis must "
                                             "be 1 .* got 0"):
            rs.update(table)
        with pytest.raises(ValueError, match="got 0"):
            nbbn.channel_stats(table, 0)
        with pytest.raises(ValueError, match="got 0"):
            nbbn.Normalizer([1.0, 2.0, 3.0], [1.0] * 3, channel_axis=0)(table)
    assert rs.num_channels is None
    assert nbbn.channel_stats(df, -1).mean.tolist() == [2.0, 20.0]


def test_a_gzip_csv_named_in_capitals_is_decompressed(tmp_path):
    """pyarrow tells a gzip file by a lower-case ``.gz``: ``DATA.CSV.GZ`` was parsed as
    text (its compressed bytes), which nbbn reported as "not a readable CSV file"."""
    import gzip

    rows = np.random.default_rng(0).normal(size=(50, 2))
    text = "a,b\n" + "".join(f"{a:.17g},{b:.17g}\n" for a, b in rows)
    for name in ("DATA.CSV.GZ", "data.csv.Gz"):
        path = tmp_path / name
        path.write_bytes(gzip.compress(text.encode()))
        stats = nbbn.fit(str(path), progress=False)
        assert stats.channel_names == ("a", "b")
        np.testing.assert_allclose(stats.mean, rows.mean(0), rtol=1e-13)


def test_iterables_of_tables_are_read_as_update_reads_them():
    """An iterable's items went through np.asarray alone: a polars or pyarrow batch's
    bools and dates were counted as numbers (update refuses them by name), and a pandas
    chunk with a nullable column (read_csv's numpy_nullable backend) was refused as
    dtype object (update reads pd.NA as NaN)."""
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    frames = [pl.DataFrame({"flag": [True, False, True], "x": [1.0, 2.0, 3.0]}),
              pa.table({"flag": [True, False, True], "x": [1.0, 2.0, 3.0]})]
    for frame in frames:
        with pytest.raises(TypeError, match=r"item 0 must hold numbers, but the \w+ has the "
                                            r"column 'flag'"):
            nbbn.fit(iter([frame]), progress=False)
    chunk = pd.DataFrame({"a": pd.array([1, None, 3], dtype="Int64"), "b": [1.0, 2.0, 4.0]})
    stats = nbbn.fit(iter([chunk, chunk]), nan_policy="omit", progress=False)
    assert stats.count.tolist() == [4, 6] and stats.mean.tolist() == [2.0, 7 / 3]


def test_transform_of_integer_columns_of_mixed_dtypes_gives_float32(tmp_path, rng):
    # (int64 and uint64 columns: their row dtype float64 was the output's, where the
    # same values in .npy shards gave float32, the documented default)
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    df = pd.DataFrame({"a": rng.integers(-50, 50, 40), "b": rng.integers(0, 100, 40,
                                                                           dtype=np.uint64)})
    stats = nbbn.fit(df, progress=False)
    df.to_parquet(tmp_path / "t.parquet")
    want = stats.to_normalizer()(df.to_numpy(np.float64)).astype(np.float32)
    for src in (df, tmp_path / "t.parquet"):
        out = tmp_path / "y.npy"
        nbbn.transform(src, stats, out, progress=False)
        y = np.load(out)
        assert y.dtype == np.float32
        np.testing.assert_array_equal(y, want)
        out.unlink()
    floats = df.astype({"a": np.float64})  # (a float column: its dtype, as before)
    nbbn.transform(floats, stats, tmp_path / "f.npy", progress=False)
    assert np.load(tmp_path / "f.npy").dtype == np.float64
