"""Streaming ingest: batch-by-batch reading gives exactly the snapshot a whole-file read gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tasks.columns import ITEM_ID, SOURCE_FILE, SOURCE_ROW
from tasks.ingest import (
    OccurrenceCounter,
    SourceConfig,
    derive_item_ids,
    describe_source,
    ingest_files,
    read_source,
    scan_source,
    write_snapshot,
)

TINY_BLOCK = 512  # bytes per CSV batch: every case below spans many batches


def _whole_file_snapshot(paths: list[Path], config: SourceConfig, tmp_path: Path) -> pd.DataFrame:
    """Every file in one DataFrame, ids derived over all of it, written and read back as Parquet."""
    frames = []
    for path in paths:
        fmt = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}[path.suffix]
        frame, _ = read_source(path, fmt, config)
        frame.insert(len(frame.columns), SOURCE_FILE, path.name)
        frame.insert(len(frame.columns), SOURCE_ROW, range(len(frame)))
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    data.insert(0, ITEM_ID, derive_item_ids(data, id_column=config.id_column, where="reference"))
    if not config.id_column:  # a content id depends on the row's values alone, not on the column order
        reordered = data[list(data.columns[::-1])]
        assert data[ITEM_ID].tolist() == derive_item_ids(reordered, id_column=None, where="reference").tolist()
    target = tmp_path / "reference.parquet"
    data.to_parquet(target, index=False)
    return pd.read_parquet(target)


def _rows(n: int, line: str) -> str:
    return "".join(line.format(i=i) for i in range(n))


CSV_CASES = {
    # a column that looks like integers for many blocks, then holds a float
    "int widens to float late": "text,n\n" + _rows(300, "row {i},{i}\n") + "last,1.5\n",
    # past 2**53 the float a widened int becomes is another number, and so is its content id
    "large ints widen to float late": "text,n\n" + _rows(300, "row {i},900719925474099{i}\n") + "last,1.5\n",
    # an int column whose only missing value comes late: pandas makes the whole column float64
    "int with a late null": "text,n\n" + _rows(300, "row {i},{i}\n") + "last,\n",
    # the first block sees only empty values
    "null column fills in late": "text,extra\n" + _rows(300, "row {i},\n") + "last,7\n",
    "numbers then text": "text,code\n" + _rows(300, "row {i},{i}\n") + "last,A-17\n",
    "bools with a late null": "text,flag\n" + _rows(300, "row {i},true\n") + "last,\n",
    # pandas formats a datetime column at its finest precision: a late fraction changes every row's text
    "timestamps gain fractions": "text,at\n"
    + _rows(300, "row {i},2024-01-01 10:00:00\n")
    + "x,2024-01-01 10:00:00.5\n",
    "midnights then a time of day": "text,at\n"
    + _rows(300, "row {i},2024-01-01 00:00:00\n")
    + "x,2024-01-02 10:30:00\n",
    "dates then a timestamp": "text,at\n" + _rows(300, "row {i},2024-01-01\n") + "x,2024-01-02 10:30:00\n",
    "zoned timestamps gain nanoseconds": "text,at\n"
    + _rows(300, "row {i},2024-01-01T10:00:00Z\n")
    + "x,2024-01-01T10:00:00.000000001Z\n",
    # repeated rows far apart (different batches) get -1, -2 suffixes in file order
    "repeats across batches": "text,label\n" + _rows(200, "dup,pos\nrow {i},neg\n"),
    "malformed lines in late blocks": "text,label\n"
    + _rows(200, "row {i},pos\n")
    + "broken\n"
    + "a,b,c\n"
    + "ok,neg\n",
}


@pytest.mark.parametrize("content", CSV_CASES.values(), ids=CSV_CASES.keys())
def test_streamed_csv_equals_whole_file_read(tmp_path: Path, content: str) -> None:
    path = tmp_path / "data.csv"
    path.write_text(content)
    config = SourceConfig(path=str(path))
    snapshot = ingest_files([path], snapshot_root=tmp_path / "snap", config=config, block_bytes=TINY_BLOCK)
    streamed = snapshot.load()
    assert pq.ParquetFile(snapshot.data_path).num_row_groups > 1, "the file was not written batch by batch"
    pd.testing.assert_frame_equal(streamed, _whole_file_snapshot([path], config, tmp_path))
    whole, _ = read_source(path, "csv", config)
    assert snapshot.manifest["files"][0]["schema"] == {c: str(t) for c, t in whole.dtypes.items()}  # type: ignore[index]


def test_repeated_rows_in_different_batches_keep_their_suffixes(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text(CSV_CASES["repeats across batches"])
    data = ingest_files(
        [path], snapshot_root=tmp_path / "snap", config=SourceConfig(path=str(path)), block_bytes=TINY_BLOCK
    ).load()
    dups = data.loc[data["text"] == "dup", "item_id"]
    base = dups.iloc[0]
    assert dups.tolist() == [base] + [f"{base}-{k}" for k in range(1, 200)]
    assert data["item_id"].is_unique


def test_files_with_different_columns_and_formats_match_one_concatenated_read(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("text,n\n" + _rows(150, "a {i},{i}\n") + "shared,1\n")
    (tmp_path / "b.csv").write_text("text,n,extra\n" + _rows(150, "b {i},{i}.5,e{i}\n") + "shared,1,\n")
    (tmp_path / "c.jsonl").write_text(_rows(20, '{{"text": "c {i}", "n": {i}}}\n') + "not json\n")
    pd.DataFrame({"text": [f"d {i}" for i in range(30)] + ["shared"], "n": list(range(30)) + [1]}).to_parquet(
        tmp_path / "d.parquet"
    )
    paths = [tmp_path / name for name in ("a.csv", "b.csv", "c.jsonl", "d.parquet")]
    config = SourceConfig(path=str(tmp_path))
    snapshot = ingest_files(paths, snapshot_root=tmp_path / "snap", config=config, block_bytes=TINY_BLOCK)
    pd.testing.assert_frame_equal(snapshot.load(), _whole_file_snapshot(paths, config, tmp_path))
    assert snapshot.rows == 151 + 151 + 20 + 31 and snapshot.quarantined == 1


def test_repeated_ids_across_batches_are_quarantined_naming_the_first(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("id,text\n" + _rows(300, "{i},row {i}\n") + "5,again\n299,again\n")
    config = SourceConfig(path=str(path), id_column="id")
    snapshot = ingest_files([path], snapshot_root=tmp_path / "snap", config=config, block_bytes=TINY_BLOCK)
    assert snapshot.load()[ITEM_ID].tolist() == [str(i) for i in range(300)]
    quarantine = snapshot.load_quarantine()
    assert quarantine[ITEM_ID].tolist() == ["5", "299"]
    first = r"first seen in data\.csv data row (?:6|300) \(sluice_source_row (?:5|299)\), which is kept"
    assert quarantine["reason"].str.contains(first).all()
    assert snapshot.manifest["files"][0]["quarantined"] == 2  # type: ignore[index]
    assert not list((tmp_path / "snap").glob(".*tmp*")), "ingest left its staging folder behind"


def test_a_changed_reader_option_is_a_different_snapshot_but_block_size_is_not(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text(CSV_CASES["int widens to float late"])
    config = SourceConfig(path=str(path))
    small = ingest_files([path], snapshot_root=tmp_path / "s1", config=config, block_bytes=TINY_BLOCK)
    large = ingest_files([path], snapshot_root=tmp_path / "s2", config=config)
    assert small.snapshot_id == large.snapshot_id
    pd.testing.assert_frame_equal(small.load(), large.load())


@pytest.mark.parametrize("id_column", ["id", None], ids=["id column", "content ids"])
def test_one_read_and_two_reads_write_the_same_snapshot(tmp_path: Path, id_column: str | None) -> None:
    """`ingest_files` parses CSV once; the flow's per-file tasks scan, then write: both give one snapshot."""
    (tmp_path / "a.csv").write_text("id,text,n\n" + _rows(300, "{i},a {i},{i}\n") + "5,again,1\n,no id,2.5\nbad\n")
    (tmp_path / "b.csv").write_text("id,text,n,extra\n" + _rows(300, "{i}00,b {i},,e{i}\n") + "7,again,3,x\n")
    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    config = SourceConfig(path=str(tmp_path), id_column=id_column)
    one = ingest_files(paths, snapshot_root=tmp_path / "one", config=config, block_bytes=TINY_BLOCK)
    scans = [scan_source(describe_source(p, config), config, block_bytes=TINY_BLOCK) for p in paths]
    two = write_snapshot(scans, snapshot_root=tmp_path / "two", config=config, block_bytes=TINY_BLOCK)
    assert one.snapshot_id == two.snapshot_id
    pd.testing.assert_frame_equal(one.load(), two.load())
    pd.testing.assert_frame_equal(one.load_quarantine(), two.load_quarantine())  # the rows' JSON too
    assert {k: v for k, v in one.manifest.items() if k != "created_at"} == {
        k: v for k, v in two.manifest.items() if k != "created_at"
    }


@pytest.mark.parametrize("run_cap", [4, 64, 1 << 22])
def test_occurrence_counter_matches_a_full_groupby(run_cap: int) -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 500, size=5_000).astype(np.uint64)  # many repeats
    expected = pd.Series(hashes).groupby(hashes).cumcount().to_numpy()
    counter = OccurrenceCounter(run_cap=run_cap)
    got = np.concatenate([counter.occurrences(chunk) for chunk in np.array_split(hashes, 37)])
    np.testing.assert_array_equal(got, expected)
    assert counter.distinct == len(np.unique(hashes))


def test_occurrence_counter_keeps_runs_few_and_bounded() -> None:
    counter = OccurrenceCounter(run_cap=1 << 12)
    for start in range(0, 100_000, 1_000):
        counter.occurrences(np.arange(start, start + 1_000, dtype=np.uint64))
    runs = counter._runs
    assert counter.distinct == 100_000
    assert max(r.size for r in runs) <= 1 << 12  # a merge never exceeds the cap
    assert len(runs) <= 100_000 // (1 << 11) + 12  # capped runs plus a logarithmic tail
    assert all(np.all(np.diff(r.astype(np.int64)) > 0) for r in runs)
