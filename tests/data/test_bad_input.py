"""A newcomer's own files, one defect each, through the real ingest, clean and labels stages.

Each case ends one of two ways: an `IngestError` whose message names the file and the fix, or a
row account in which the planted bad rows sit in quarantine with their reasons and
rows in = kept + awaiting + quarantined. The files are reviews (`item_id,text,label`) as people
export them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tasks.clean import CleanConfig, CleanResult, MissingPolicy, clean_frame
from tasks.columns import ITEM_ID, LABEL, SOURCE_FILE, SOURCE_ROW
from tasks.ingest import IngestError, Snapshot, SourceConfig, check_columns, ingest_files, resolve_sources
from tasks.labels import LabelOutcome, LabelsConfig, labels_from_column
from tasks.quarantine import concat_quarantine

CLASSES = ["fresh", "rotten"]
REVIEWS = [
    ("r1", "A gorgeous, moving film.", "fresh"),
    ("r2", "Dull and lifeless.", "rotten"),
    ("r3", "The best thing this year.", "fresh"),
    ("r4", "Two hours I will not get back.", "rotten"),
]
Content = str | bytes | pd.DataFrame | Callable[[Path], None]


def _csv(rows: list[tuple[str, ...]], header: str = "item_id,text,label", newline: str = "\n") -> str:
    def cell(value: str) -> str:
        return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\r\n') else value

    return newline.join([header, *(",".join(cell(v) for v in row) for row in rows)]) + newline


def _jsonl(records: list[dict[str, object]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _write(folder: Path, files: dict[str, Content]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8", newline="")
        elif isinstance(content, pd.DataFrame):
            content.to_parquet(path, index=False)
        else:
            content(path)


@dataclass
class Run:
    snapshot: Snapshot
    cleaned: CleanResult
    labelled: LabelOutcome
    quarantine: pd.DataFrame
    rows_in: int

    def reasons(self) -> list[str]:
        return self.quarantine["reason"].tolist()


def _run_stages(tmp_path: Path, files: dict[str, Content], *, block_bytes: int | None = None, **source: object) -> Run:
    """Ingest, clean and labels as the pipeline runs them, checking the run's row account."""
    _write(tmp_path / "raw", files)
    config = SourceConfig(path="raw", **source)
    paths = resolve_sources(config.path, base_dir=tmp_path)
    options = {"block_bytes": block_bytes} if block_bytes else {}
    snapshot = ingest_files(paths, snapshot_root=tmp_path / "snapshots", config=config, **options)
    data = snapshot.load()
    check_columns(
        data, {"text": "text", "label": "label"}, where=f"snapshot {snapshot.snapshot_id} ({snapshot.source_names()})"
    )
    cleaned = clean_frame(
        data, CleanConfig(normalize_text=["text"], missing={"text": MissingPolicy(action="drop")}, dedupe_on=["text"])
    )
    labelled = labels_from_column(cleaned.data, LabelsConfig(source="column", column="label", classes=CLASSES))
    quarantine = concat_quarantine(
        [snapshot.load_quarantine(), cleaned.quarantine, labelled.quarantine]  # the pipeline's quarantine file
    )
    rows_in = snapshot.rows + snapshot.quarantined
    assert rows_in == len(labelled.data) + len(labelled.awaiting) + len(quarantine), "the stages lost rows"
    return Run(snapshot, cleaned, labelled, quarantine, rows_in)


# --- messages: the run stops, naming the file and the fix --------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"
MESSAGES: dict[str, tuple[dict[str, Content], dict[str, object], list[str]]] = {
    "empty file": ({"reviews.csv": b""}, {}, ["reviews.csv is empty (0 bytes)", "remove it from source.path"]),
    "header only": (
        {"reviews.csv": "item_id,text,label\n"},
        {},
        ["reviews.csv has no data rows", "fill it or remove it from source.path"],
    ),
    "missing column": (
        {"reviews.csv": _csv(REVIEWS, header="item_id,review,label")},
        {},
        ['column "text" (columns.text) is missing from snapshot', "(reviews.csv)", "Fix columns.text"],
    ),
    "latin-1 file read as utf-8": (
        {"reviews.csv": _csv([("r1", "Un café délicieux", "fresh")]).encode("latin-1")},
        {},
        ["reviews.csv is not valid utf-8: byte 0xe9", "iconv -f latin1 -t utf-8", "set source.encoding"],
    ),
    "binary file named .csv": (
        {"reviews.csv": PNG},
        {},
        ["reviews.csv is a binary file, not text (a NUL byte at offset 8)", "point source.path at CSV"],
    ),
    "binary file named .parquet": (
        {"reviews.parquet": b"PAR1 this is no parquet"},
        {},
        ["reviews.parquet is not a readable Parquet file", "check the file or source.format"],
    ),
    "column with the reserved prefix": (
        {"reviews.csv": _csv([("r1", "Fine.", "fresh", "0.9")], header="item_id,text,label,sluice_score")},
        {},
        ['reviews.csv has column "sluice_score"', "reserved for the columns sluice adds", "rename it in the file"],
    ),
    "item_id beside another id_column": (
        {"reviews.csv": _csv([("r1", "7", "Fine.", "fresh")], header="item_id,review_id,text,label")},
        {"id_column": "review_id"},
        [
            'reviews.csv has a column "item_id", which is sluice\'s id column, but source.id_column is "review_id"',
            "remove source.id_column (or set it to item_id)",
            "rename the item_id column in the file",
        ],
    ),
    "id_column missing from one file": (
        {"a.csv": _csv(REVIEWS[:2], header="review_id,text,label"), "b.csv": _csv(REVIEWS[2:], header="id,text,label")},
        {"id_column": "review_id"},
        ['column "review_id" (source.id_column) is missing from', "b.csv", "remove source.id_column"],
    ),
}


@pytest.mark.parametrize(("files", "source", "expected"), MESSAGES.values(), ids=MESSAGES.keys())
def test_bad_input_stops_with_a_message_naming_the_file_and_the_fix(
    tmp_path: Path, files: dict[str, Content], source: dict[str, object], expected: list[str]
) -> None:
    with pytest.raises(IngestError) as raised:
        _run_stages(tmp_path, files, **source)
    message = str(raised.value)
    for part in expected:
        assert part in message, f"{part!r} not in: {message}"
    assert not list((tmp_path / "snapshots").glob(".*tmp*")), "a failed ingest left its staging folder behind"


# --- row accounts: the run goes on, every planted bad row is in quarantine with its reason ------------------


def _reviews_with_defects(fmt: str) -> Callable[[Path], None]:
    """Reviews whose ids repeat (a re-exported row, an id reused for other text) or are empty."""
    rows = [
        {"review_id": "r1", "text": "A gorgeous, moving film.", "label": "fresh"},
        {"review_id": "r2", "text": "Dull and lifeless.", "label": "rotten"},
        {"review_id": "r1", "text": "A gorgeous, moving film.", "label": "fresh"},
        {"review_id": "r2", "text": "Another review under a reused id.", "label": "fresh"},
        {"review_id": None, "text": "No id at all.", "label": "rotten"},
        {"review_id": "r3", "text": "The best thing this year.", "label": "fresh"},
    ]

    def write(path: Path) -> None:
        frame = pd.DataFrame(rows)
        if fmt == "csv":
            frame.to_csv(path.with_suffix(".csv"), index=False)
        elif fmt == "jsonl":
            path.with_suffix(".jsonl").write_text(_jsonl(rows))
        else:
            frame.to_parquet(path.with_suffix(".parquet"), index=False)

    return write


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_repeated_and_empty_ids_are_quarantined_naming_the_first_row(tmp_path: Path, fmt: str) -> None:
    run = _run_stages(tmp_path, {"reviews": _reviews_with_defects(fmt)}, id_column="review_id")
    name = f"reviews.{fmt}"
    assert run.snapshot.load()[ITEM_ID].tolist() == ["r1", "r2", "r3"]
    assert run.rows_in == 6 and run.snapshot.quarantined == 3
    assert sorted(run.reasons()) == sorted(
        [
            f'repeated id "r1" in column "review_id" (source.id_column): first seen in {name} data row 1 '
            "(sluice_source_row 0), which is kept; give each row its own id, or remove source.id_column to derive "
            "ids from content",
            f'repeated id "r2" in column "review_id" (source.id_column): first seen in {name} data row 2 '
            "(sluice_source_row 1), which is kept; give each row its own id, or remove source.id_column to derive "
            "ids from content",
            'no id: column "review_id" (source.id_column) is empty in this row; give every row an id, or remove '
            "source.id_column to derive ids from content",
        ]
    )
    reused = json.loads(run.quarantine.loc[run.quarantine[ITEM_ID].eq("r2"), "row"].iloc[0])
    assert reused["text"] == "Another review under a reused id." and reused[SOURCE_ROW] == 3


def test_an_id_repeated_in_a_later_file_names_the_first_file(tmp_path: Path) -> None:
    files: dict[str, Content] = {"a.csv": _csv(REVIEWS[:2]), "b.jsonl": _jsonl([{"item_id": "r2", "text": "x"}])}
    run = _run_stages(tmp_path, files)
    (reason,) = run.reasons()
    assert reason.startswith(
        'repeated id "r2" in column "item_id" (sluice\'s id column): first seen in a.csv data row 2'
    )
    assert reason.endswith("or rename the item_id column to derive ids from content")


HTML = [
    '<script>alert("owned")</script>',
    "<b>Bold</b> &amp; <i>brave</i> &lt;3",
    "<a href=\"javascript:alert('x')\">click</a>",
    '=HYPERLINK("http://example.invalid","x")',
]
BIG_CELL = ('He said "wow", then, quietly, "again". ' * 131_580)[:5_000_000]


def _big_cell(path: Path) -> None:
    path.write_text(_csv([("r1", "short", "fresh"), ("r2", BIG_CELL, "rotten"), ("r3", "after", "fresh")]))


ACCOUNTS: dict[str, tuple[dict[str, Content], dict[str, object], int, list[str]]] = {
    # name: (files, ingest options, rows kept for training, reasons expected in quarantine)
    "malformed lines": (
        {"reviews.csv": _csv(REVIEWS) + "a line with no commas\nr9,too,many,fields,here\n"},
        {},
        4,
        ["malformed line: expected 3 fields, found 1: a line with no commas", "found 5: r9,too,many,fields,here"],
    ),
    "latin-1 declared": (
        {"reviews.csv": _csv([*REVIEWS, ("r5", "Un café délicieux", "fresh")]).encode("latin-1")},
        {"encoding": "latin-1"},
        5,
        [],
    ),
    "unknown and empty labels": (
        {"reviews.csv": _csv([*REVIEWS, ("r5", "Meh.", "meh"), ("r6", "Loud.", "FRESH"), ("r7", "Unlabelled.", "")])},
        {},
        4,
        [
            'label "meh" (column label) is not one of the classes fresh, rotten; fix the row, or add the class',
            'label "FRESH" (column label) is not one of the classes',
        ],
    ),
    "mixed-type JSONL": (
        {
            "reviews.jsonl": _jsonl(
                [
                    {"item_id": 1, "text": "A gorgeous, moving film.", "label": "fresh", "stars": 5},
                    {"item_id": "r2", "text": "Dull and lifeless.", "label": 0, "stars": "one"},
                    {"item_id": 3, "text": "The best thing this year.", "label": "fresh", "stars": {"of": 5}},
                    {"item_id": 4, "text": "Two hours I will not get back.", "label": "rotten", "stars": None},
                ]
            )
        },
        {},
        3,
        ['label "0" (column label) is not one of the classes'],
    ),
    "CSV files that disagree on a column's type": (
        {
            "a.csv": _csv([(*r, str(n)) for n, r in enumerate(REVIEWS[:2])], header="item_id,text,label,stars"),
            "b.csv": _csv([(*r, "two") for r in REVIEWS[2:]], header="item_id,text,label,stars"),
        },
        {},
        4,
        [],
    ),
}


@pytest.mark.parametrize(("files", "source", "trainable", "reasons"), ACCOUNTS.values(), ids=ACCOUNTS.keys())
def test_bad_rows_land_in_quarantine_with_their_reasons(
    tmp_path: Path, files: dict[str, Content], source: dict[str, object], trainable: int, reasons: list[str]
) -> None:
    run = _run_stages(tmp_path, files, **source)
    assert len(run.labelled.data) == trainable
    assert len(run.quarantine) == len(reasons), run.reasons()
    for expected in reasons:
        assert any(expected in reason for reason in run.reasons()), f"{expected!r} not in {run.reasons()}"


def test_bom_and_crlf_leave_no_trace_in_names_or_values(tmp_path: Path) -> None:
    run = _run_stages(
        tmp_path, {"reviews.csv": "\ufeff" + _csv([*REVIEWS, ("r5", "two\r\nlines", "fresh")], newline="\r\n")}
    )
    data = run.snapshot.load()
    assert list(data.columns[:3]) == [ITEM_ID, "text", "label"]
    assert data[ITEM_ID].tolist() == ["r1", "r2", "r3", "r4", "r5"]
    assert not data["text"].str.contains("\r\n$|^\ufeff").any()
    assert run.cleaned.data["text"].iloc[-1] == "two lines"  # normalize_text folds the line break in the value


def test_html_and_script_text_is_kept_verbatim(tmp_path: Path) -> None:
    rows = [(f"h{i}", text, "fresh" if i % 2 else "rotten") for i, text in enumerate(HTML)]
    run = _run_stages(tmp_path, {"reviews.csv": _csv([*rows, ("h9", HTML[0] + " again", "unknown")])})
    assert run.labelled.data["text"].tolist() == HTML
    (row,) = run.quarantine["row"]
    assert json.loads(row)["text"] == HTML[0] + " again"


@pytest.mark.parametrize("block_bytes", [1 << 20, None], ids=["batches smaller than the cell", "default batches"])
def test_a_5_mb_cell_arrives_whole(tmp_path: Path, block_bytes: int | None) -> None:
    run = _run_stages(tmp_path, {"reviews.csv": _big_cell}, block_bytes=block_bytes)
    text = run.labelled.data.set_index(ITEM_ID)["text"]
    assert len(text["r2"]) == len(BIG_CELL.strip()) and text["r2"] == BIG_CELL.strip()
    assert text["r3"] == "after"


def test_mixed_json_values_are_stored_as_text(tmp_path: Path) -> None:
    files, _, _, _ = ACCOUNTS["mixed-type JSONL"]
    run = _run_stages(tmp_path, files)
    data = run.snapshot.load().set_index(ITEM_ID)
    assert data.index.tolist() == ["1", "r2", "3", "4"]
    assert data["label"].tolist() == ["fresh", "0", "fresh", "rotten"]
    assert data["stars"].tolist()[:3] == ["5", "one", '{"of": 5}'] and pd.isna(data["stars"].iloc[3])
    assert set(run.snapshot.manifest["text_columns"]) == {"item_id", "label", "stars"}  # type: ignore[arg-type]


def test_files_that_disagree_on_a_type_store_it_as_the_files_text(tmp_path: Path) -> None:
    counts = pd.DataFrame({"text": ["a", "b"], "label": ["fresh", "rotten"], "votes": [7, 12]})
    words = pd.DataFrame({"text": ["c", "d"], "label": ["fresh", "fresh"], "votes": ["many", None]})
    csv_counts = "text,label,votes\ne,fresh,007\nf,rotten,1.50\n"
    run = _run_stages(tmp_path, {"a.parquet": counts, "b.parquet": words, "c.csv": csv_counts})
    data = run.snapshot.load().set_index("text")
    assert data["votes"].tolist()[:3] == ["7", "12", "many"] and pd.isna(data.loc["d", "votes"])
    assert data.loc[["e", "f"], "votes"].tolist() == ["007", "1.50"]  # a CSV column stored as text is the file's text
    assert "number in a.parquet" in run.snapshot.manifest["text_columns"]["votes"]  # type: ignore[index]
    # still a content hash: the same files and options give the same id and the same rows
    config = SourceConfig(path="raw")
    again = ingest_files(resolve_sources("raw", base_dir=tmp_path), snapshot_root=tmp_path / "again", config=config)
    assert again.snapshot_id == run.snapshot.snapshot_id
    pd.testing.assert_frame_equal(again.load(), run.snapshot.load())


# --- names: a source column named like one of sluice's keeps its name and values ----------------------------

NAMED_LIKE_SLUICE = pd.DataFrame(
    {
        "item_id": [101, 102, 103, 104],
        "text": [r[1] for r in REVIEWS],
        "label": [r[2] for r in REVIEWS],
        "split": ["holdout", "train", "train", "holdout"],
        "fold": [3, 1, 2, 3],
        "source_file": ["export-a.csv", "export-a.csv", "export-b.csv", "export-b.csv"],
        "source_row": [9, 8, 7, 6],
    }
)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize("id_column", [None, "item_id"], ids=["no id_column", "id_column item_id"])
def test_a_source_item_id_is_the_id_and_other_sluice_names_keep_their_values(
    tmp_path: Path, fmt: str, id_column: str | None
) -> None:
    def write(path: Path) -> None:
        frame = NAMED_LIKE_SLUICE
        target = path.with_suffix(f".{fmt}")
        if fmt == "csv":
            frame.to_csv(target, index=False)
        elif fmt == "jsonl":
            target.write_text(_jsonl(frame.to_dict(orient="records")))
        else:
            frame.to_parquet(target, index=False)

    run = _run_stages(tmp_path, {"export": write}, id_column=id_column)
    snapshot = run.snapshot.load()
    assert list(snapshot.columns).count(ITEM_ID) == 1 and snapshot.columns[0] == ITEM_ID
    assert snapshot[ITEM_ID].tolist() == ["101", "102", "103", "104"]
    assert snapshot[SOURCE_FILE].eq(f"export.{fmt}").all() and snapshot[SOURCE_ROW].tolist() == [0, 1, 2, 3]
    for frame in (snapshot, run.cleaned.data, run.labelled.data):
        for column in ("split", "fold", "source_file", "source_row", "label"):
            assert frame[column].tolist() == NAMED_LIKE_SLUICE[column].tolist(), (column, frame[column].tolist())
    assert run.labelled.data[LABEL].tolist() == NAMED_LIKE_SLUICE["label"].tolist()  # `label` is the label column
