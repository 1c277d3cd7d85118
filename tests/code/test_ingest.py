from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.columns import ITEM_ID
from tasks.ingest import IngestError, SourceConfig, check_columns, ingest_files, resolve_sources


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _ingest(tmp_path: Path, pattern: str, **options: object):
    config = SourceConfig(path=pattern, **options)  # type: ignore[arg-type]
    return ingest_files(resolve_sources(pattern, base_dir=tmp_path), snapshot_root=tmp_path / "snap", config=config)


def test_csv_snapshot_has_manifest_and_ids(tmp_path: Path) -> None:
    _write(tmp_path / "raw" / "a.csv", "text,label\nhello,pos\nbye,neg\nhello,pos\n")
    snapshot = _ingest(tmp_path, "raw/*.csv")
    data = snapshot.load()
    assert len(data) == 3 and snapshot.quarantined == 0
    assert data["item_id"].is_unique
    # the repeated row gets a suffixed id, so both copies survive ingest (dedupe quarantines later)
    assert data["item_id"].iloc[2] == data["item_id"].iloc[0] + "-1"
    manifest = json.loads((snapshot.directory / "manifest.json").read_text())
    (entry,) = manifest["files"]
    assert entry["rows"] == 3 and len(entry["sha256"]) == 64 and entry["schema"]["text"]
    assert "created_at" in manifest


def test_unchanged_files_reuse_the_snapshot_and_write_nothing(tmp_path: Path) -> None:
    _write(tmp_path / "raw" / "a.csv", "text,label\nx,1\n")
    first = _ingest(tmp_path, "raw/a.csv")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "snap").rglob("*")}
    second = _ingest(tmp_path, "raw/a.csv")
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "snap").rglob("*")}
    assert second.snapshot_id == first.snapshot_id and second.reused
    assert before == after


def test_changed_file_gives_a_new_snapshot(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.csv", "text,label\nx,1\n")
    first = _ingest(tmp_path, "a.csv")
    path.write_text("text,label\nx,1\ny,2\n")
    assert _ingest(tmp_path, "a.csv").snapshot_id != first.snapshot_id


def test_content_ids_survive_reordering(tmp_path: Path) -> None:
    _write(tmp_path / "a.csv", "text,label\nx,1\ny,2\n")
    _write(tmp_path / "b.csv", "text,label\ny,2\nx,1\n")
    a = _ingest(tmp_path, "a.csv").load().set_index("text")["item_id"]
    b = _ingest(tmp_path, "b.csv").load().set_index("text")["item_id"]
    assert a.sort_index().tolist() == b.sort_index().tolist()


def test_malformed_csv_lines_are_quarantined_not_fatal(tmp_path: Path) -> None:
    _write(tmp_path / "a.csv", 'text,label\n"ok",1\nbroken\n"fine","2"\na,b,c,d\n')
    snapshot = _ingest(tmp_path, "a.csv")
    quarantine = snapshot.load_quarantine()
    assert snapshot.rows == 2 and snapshot.quarantined == 2
    assert set(quarantine["step"]) == {"ingest"}
    assert quarantine["reason"].str.contains("malformed line").all()
    assert any("broken" in r for r in quarantine["reason"])


def test_jsonl_and_parquet_sources(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "a.jsonl", '{"text": "a", "label": "x"}\nnot json\n[1, 2]\n{"text": "b", "label": "y"}\n')
    pd.DataFrame({"text": ["c"], "label": ["z"]}).to_parquet(tmp_path / "d" / "b.parquet")
    snapshot = _ingest(tmp_path, "d")
    assert sorted(snapshot.load()["text"]) == ["a", "b", "c"]
    assert snapshot.quarantined == 2  # "not json" and the JSON array


def test_id_column_is_used_and_repeated_ids_are_quarantined(tmp_path: Path) -> None:
    _write(tmp_path / "a.csv", "id,text\n7,a\n8,b\n")
    assert _ingest(tmp_path, "a.csv", id_column="id").load()[ITEM_ID].tolist() == ["7", "8"]
    _write(tmp_path / "b.csv", "id,text\n7,a\n7,b\n,c\n")
    snapshot = _ingest(tmp_path, "b.csv", id_column="id")
    assert snapshot.load()["text"].tolist() == ["a"]
    quarantine = snapshot.load_quarantine().set_index("reason")
    assert snapshot.rows + snapshot.quarantined == 3
    assert [r for r in quarantine.index if "repeated" in r] == [
        'repeated id "7" in column "id" (source.id_column): first seen in b.csv data row 1 '
        "(sluice_source_row 0), which is kept; give each row its own id, or remove source.id_column to derive "
        "ids from content"
    ]
    assert any(r.startswith('no id: column "id" (source.id_column) is empty') for r in quarantine.index)


@pytest.mark.parametrize(
    ("content", "pattern", "message"),
    [
        (None, "missing.csv", r"no input file matches 'missing.csv'.*source.path"),
        (b"", "a.csv", r"a.csv is empty.*remove it from source.path"),
        ("text,label\n", "a.csv", r"has no data rows"),
        ("text\ncaf\xe9\n".encode("latin-1"), "a.csv", r"not valid utf-8.*byte 0xe9.*source.encoding"),
    ],
    ids=["missing path", "empty file", "header only", "wrong encoding"],
)
def test_bad_input_names_the_file_and_the_fix(
    tmp_path: Path, content: bytes | str | None, pattern: str, message: str
) -> None:
    if content is not None:
        _write(tmp_path / pattern, content)
    with pytest.raises(IngestError, match=message):
        _ingest(tmp_path, pattern)


def test_declared_encoding_reads_latin1(tmp_path: Path) -> None:
    _write(tmp_path / "a.csv", "text\ncaf\xe9\n".encode("latin-1"))
    assert _ingest(tmp_path, "a.csv", encoding="latin-1").load()["text"].tolist() == ["café"]


def test_missing_configured_column_is_named(tmp_path: Path) -> None:
    df = pd.DataFrame({"item_id": ["1"], "body": ["x"]})
    with pytest.raises(
        IngestError, match=r'column "text" \(columns.text\) is missing from snap.*available columns: body'
    ):
        check_columns(df, {"text": "text", "group": None}, where="snap")
