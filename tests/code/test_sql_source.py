"""Database tables as sources, on SQLite (no server): the snapshot chain, quarantine, ids, URLs and errors."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from tasks.db_urls import UrlError, check_no_password, expand_url, redact_url
from tasks.ingest import Snapshot, SourceConfig
from tasks.sql_source import SqlSourceConfig, SqlSourceError, SqlSourceUnreachableError, connection_url, ingest_sql

Rows = list[tuple[Any, ...]]


@pytest.fixture
def database(tmp_path: Path) -> Callable[[Rows], Path]:
    """A SQLite file with a `reviews` table; each call appends rows (id, text, label, stars, seen_at)."""
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE reviews (id INTEGER PRIMARY KEY, text TEXT, label TEXT, stars INTEGER, seen_at TIMESTAMP)"
        )

    def _append(rows: Rows) -> Path:
        with sqlite3.connect(path) as connection:
            connection.executemany("INSERT INTO reviews VALUES (?, ?, ?, ?, ?)", rows)
        return path

    return _append


def _rows(start: int, count: int) -> Rows:
    return [
        (i, f"review number {i}", "fresh" if i % 2 else "rotten", i % 5, f"2026-01-{1 + i % 28:02d} 10:00:00")
        for i in range(start, start + count)
    ]


def _config(path: Path, **fields: Any) -> SqlSourceConfig:
    return SqlSourceConfig(url=f"sqlite:///{path}", **({"table": "reviews", "watermark": "id"} | fields))


def _ingest(path: Path, root: Path, **fields: Any) -> Snapshot:
    id_column = fields.pop("id_column", None)
    return ingest_sql(_config(path, **fields), snapshot_root=root, id_column=id_column)


def test_each_run_ingests_only_new_rows_and_the_chain_holds_them_all(
    database: Callable[[Rows], Path], tmp_path: Path
) -> None:
    root = tmp_path / "snapshots"
    path = database(_rows(1, 30))
    first = _ingest(path, root)
    assert (first.rows, first.quarantined) == (30, 0)

    database(_rows(31, 12))
    second = _ingest(path, root)
    manifest = json.loads((second.directory / "manifest.json").read_text())
    assert manifest["previous"] == first.snapshot_id
    assert manifest["parts"] == [first.snapshot_id, second.snapshot_id]
    assert manifest["increment"] == {"rows": 12, "quarantined": 0, "superseded": 0}
    assert manifest["watermark"]["low"] == {"type": "int", "value": 30}
    assert manifest["watermark"]["high"] == {"type": "int", "value": 42}
    assert manifest["query"] == "SELECT * FROM reviews WHERE id <= :high AND id > :low ORDER BY id"
    # the new snapshot's own file holds only the new rows; loading it gives the whole chain
    assert len(pd.read_parquet(second.data_path)) == 12
    data = second.load()
    assert second.rows == len(data) == 42
    assert sorted(data["id"]) == list(range(1, 43)) and data["item_id"].is_unique
    assert second.load_item_ids().tolist() == data["item_id"].tolist()
    assert str(data["seen_at"].dtype).startswith("datetime64")
    assert "rows kept: **42**" in second.summary_markdown()  # the ingest task's artifact

    again = _ingest(path, root)  # nothing new: the chain's head, untouched
    assert again.reused and again.snapshot_id == second.snapshot_id


def test_a_value_that_does_not_fit_its_column_quarantines_its_row(
    database: Callable[[Rows], Path], tmp_path: Path
) -> None:
    rows = _rows(1, 5)
    rows[2] = (3, "three stars, written out", "fresh", "three", "2026-01-03 10:00:00")  # SQLite stores the text
    rows[4] = (5, "a date nobody can read", "rotten", 4, "last tuesday")
    snapshot = _ingest(database(rows), tmp_path / "snapshots")
    assert (snapshot.rows, snapshot.quarantined) == (3, 2)
    quarantine = snapshot.load_quarantine().sort_values("reason").reset_index(drop=True)
    assert list(quarantine["step"]) == ["ingest", "ingest"]
    assert 'column "seen_at" (TIMESTAMP)' in quarantine["reason"][0] and "'last tuesday'" in quarantine["reason"][0]
    assert 'column "stars" (INTEGER)' in quarantine["reason"][1] and "'three'" in quarantine["reason"][1]
    assert json.loads(quarantine["row"][1])["text"] == "three stars, written out"


def test_rows_and_ids_do_not_depend_on_the_batch_size(database: Callable[[Rows], Path], tmp_path: Path) -> None:
    rows = _rows(1, 9) + [(10, "review number 1", "rotten", 1, "2026-01-02 10:00:00")]
    rows[3] = (4, None, None, None, None)
    path = database(rows)
    small = _ingest(path, tmp_path / "small", batch_rows=2)
    large = _ingest(path, tmp_path / "large", batch_rows=1000)
    assert small.snapshot_id == large.snapshot_id
    assert small.load()["item_id"].tolist() == large.load()["item_id"].tolist()


def test_a_repeated_row_in_a_later_increment_keeps_its_own_content_id(
    database: Callable[[Rows], Path], tmp_path: Path
) -> None:
    copy = ("the same words", "fresh", 1, "2026-01-01 10:00:00")
    root = tmp_path / "snapshots"
    path = database([(1, *copy)])
    config = _config(path, table=None, query="SELECT text, label, stars, seen_at, id FROM reviews")
    ingest_sql(config, snapshot_root=root)
    database([(2, *copy)])
    second = ingest_sql(config, snapshot_root=root)
    data = second.load()
    assert len(data) == 2 and data["item_id"].is_unique


def test_with_an_id_column_a_changed_row_replaces_its_older_version(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (note_id TEXT, body TEXT, updated_at TIMESTAMP)")
        connection.executemany(
            "INSERT INTO notes VALUES (?, ?, ?)",
            [("a", "first draft", "2026-01-01 09:00:00"), ("b", "kept as is", "2026-01-01 09:30:00")],
        )
    config = SqlSourceConfig(url=f"sqlite:///{path}", table="notes", watermark="updated_at")
    root = tmp_path / "snapshots"
    first = ingest_sql(config, snapshot_root=root, id_column="note_id")
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE notes SET body = 'final text', updated_at = '2026-01-02 08:00:00' WHERE note_id='a'")
    second = ingest_sql(config, snapshot_root=root, id_column="note_id")

    data = second.load().set_index("item_id")
    assert second.rows == len(data) == 2 and data.loc["a", "body"] == "final text"
    assert second.load_item_ids().tolist() == data.index.tolist()  # what the run's row account counts
    quarantine = second.load_quarantine()
    assert len(quarantine) == second.quarantined == 1
    assert (
        quarantine["reason"][0] == f"superseded: a newer version of this row arrived in snapshot {second.snapshot_id}"
    )
    assert json.loads(quarantine["row"][0])["body"] == "first draft"
    assert first.rows == 2  # the first snapshot is immutable


def test_without_a_watermark_every_run_reads_the_whole_table(database: Callable[[Rows], Path], tmp_path: Path) -> None:
    path = database(_rows(1, 4))
    root = tmp_path / "snapshots"
    first = _ingest(path, root, watermark=None)
    assert _ingest(path, root, watermark=None).snapshot_id == first.snapshot_id
    database(_rows(5, 2))
    grown = _ingest(path, root, watermark=None)
    assert grown.snapshot_id != first.snapshot_id and grown.rows == 6


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"table": "review"}, "source.sql.table 'review' does not exist at sqlite:///"),
        ({"watermark": "updated"}, r'column "updated" \(source.sql.watermark\) is missing from table reviews'),
        ({"table": None, "query": "SELEC 1"}, "cannot read source.sql.query at sqlite:///.*: syntax error. Check"),
    ],
)
def test_bad_source_settings_name_the_field(
    database: Callable[[Rows], Path], tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    path = database(_rows(1, 2))
    with pytest.raises(SqlSourceError, match=message):
        _ingest(path, tmp_path / "snapshots", **fields)


def test_an_empty_table_and_a_missing_id_column_are_clear_errors(
    database: Callable[[Rows], Path], tmp_path: Path
) -> None:
    path = database([])
    with pytest.raises(SqlSourceError, match="table reviews at sqlite:///.* returned no rows; nothing to ingest"):
        _ingest(path, tmp_path / "snapshots")
    database(_rows(1, 2))
    with pytest.raises(SqlSourceError, match='column "review_id" .source.id_column. is missing from table reviews'):
        _ingest(path, tmp_path / "snapshots", id_column="review_id")


# --- URLs and credentials -----------------------------------------------------------------------------------


def test_the_url_names_its_password_and_sluice_fills_it_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAREHOUSE_PASSWORD", "p@ss/word")
    config = SqlSourceConfig(url="postgresql://reader:${WAREHOUSE_PASSWORD}@db:5432/shop", table="t")
    assert connection_url(config) == "postgresql+psycopg://reader:p%40ss%2Fword@db:5432/shop"

    via_env = SqlSourceConfig(url="postgresql://reader@db/shop", table="t", password_env="WAREHOUSE_PASSWORD")
    assert connection_url(via_env) == "postgresql+psycopg://reader:p%40ss%2Fword@db/shop"
    via_block = SqlSourceConfig(url="postgresql://reader@db/shop", table="t", password_secret="warehouse")
    assert connection_url(via_block, {"warehouse": "from-the-block"}.get) == (
        "postgresql+psycopg://reader:from-the-block@db/shop"
    )
    with pytest.raises(SqlSourceError, match="Prefect Secret block 'missing'.*sluice secret set missing"):
        connection_url(via_block.model_copy(update={"password_secret": "missing"}), {}.get)


def test_a_literal_password_or_an_unset_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match=r"source.sql.url holds a password.*\$\{DB_PASSWORD\}"):
        SqlSourceConfig(url="postgresql://reader:hunter2@db/shop", table="t")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(UrlError, match=r"refers to \$\{NOT_SET_ANYWHERE\}, which is not set; export NOT_SET_ANYWHERE"):
        expand_url("postgresql://u:${NOT_SET_ANYWHERE}@db/x", where="source.sql.url")
    check_no_password("postgresql://u:${SET_LATER}@db/x", where="x")  # a named password is fine
    assert redact_url("postgresql://u:hunter2@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert redact_url("sqlite:///a/b.db") == "sqlite:///a/b.db"


def test_a_source_is_files_or_a_database_not_both() -> None:
    sql = {"url": "sqlite:///x.db", "table": "t"}
    assert SourceConfig(sql=sql).sql is not None  # type: ignore[arg-type]
    for fields in ({}, {"path": "a.csv", "sql": sql}):
        with pytest.raises(ValidationError, match="exactly one of source.path .files. and source.sql"):
            SourceConfig(**fields)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="exactly one of source.sql.table and source.sql.query"):
        SqlSourceConfig(url="sqlite:///x.db", table="t", query="SELECT 1")


def test_a_database_that_does_not_answer_is_a_service_failure_worth_a_retry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sluice.errors import Kind, classify, is_retryable
    from sluice.services import free_port

    monkeypatch.setenv("WAREHOUSE_PASSWORD", "never-shown")
    url = f"postgresql://reader:${{WAREHOUSE_PASSWORD}}@127.0.0.1:{free_port()}/shop"  # nothing listens there
    with pytest.raises(SqlSourceUnreachableError, match=r"did not answer: .*Check that the database is running") as e:
        ingest_sql(SqlSourceConfig(url=url, table="reviews"), snapshot_root=tmp_path / "snapshots")
    assert "never-shown" not in str(e.value)
    assert classify(e.value) is Kind.SERVICE and is_retryable(e.value)
