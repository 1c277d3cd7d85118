from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.clean import CleanConfig, MissingPolicy, clean_frame
from tasks.labels import LabelOutcome, LabelsConfig, labels_from_column
from tasks.quarantine import (
    RowsLostError,
    check_conservation,
    check_ids_conserved,
    concat_quarantine,
    merge_quarantine,
    quarantine_rows,
    summarise_quarantine,
    update_quarantine,
)
from tasks.report import account_rows


def test_quarantine_keeps_the_whole_row_as_json() -> None:
    rows = pd.DataFrame({"item_id": ["x"], "n": [np.int64(3)], "t": [None]})
    q = quarantine_rows(rows, step="clean", reason="why")
    assert q.loc[0, "reason"] == "why" and q.loc[0, "step"] == "clean"
    assert json.loads(q.loc[0, "row"]) == {"item_id": "x", "n": 3, "t": None}
    assert summarise_quarantine(q)["rows"].tolist() == [1]


def test_conservation_check_raises_when_rows_vanish() -> None:
    check_conservation(10, 7, 3, stage="s")
    with pytest.raises(RowsLostError, match="stage 's' lost rows: 10 in, 7 kept"):
        check_conservation(10, 7, 2, stage="s")


def test_id_check_catches_a_lost_row_that_equal_counts_would_hide() -> None:
    ids = pd.Series(["a", "b", "c", "d"])
    check_ids_conserved(ids, stage="s", kept=ids[:3], quarantined=ids[3:])
    # "d" lost and "a" doubled: 4 in, 4 out, yet wrong.
    with pytest.raises(RowsLostError) as err:
        check_ids_conserved(ids, stage="s", kept=pd.Series(["a", "b", "c"]), quarantined=pd.Series(["a"]))
    message = str(err.value)
    assert "stage 's' does not account for its rows: 4 in, kept 3, quarantined 1" in message
    assert "1 item ids entered and never left (e.g. ['d'])" in message
    assert "'a' in ['kept', 'quarantined']" in message


def _run_through_stages() -> tuple[pd.DataFrame, LabelOutcome, pd.DataFrame]:
    """Ten rows through clean and labels: what the pipeline's row account reads."""
    raw = pd.DataFrame(
        {
            "item_id": [f"i{n}" for n in range(10)],
            "text": ["good", "good", None, "bad", "fine", "meh", "ok", "great", "awful", "nice"],
            "y": ["pos", "pos", "pos", "neg", "pos", "maybe", None, "pos", "neg", "pos"],
        }
    )
    cleaned = clean_frame(raw, CleanConfig(missing={"text": MissingPolicy(action="drop")}, dedupe_on=["text"]))
    labelled = labels_from_column(cleaned.data, LabelsConfig(column="y", classes=["pos", "neg"]))
    return raw, labelled, concat_quarantine([cleaned.quarantine, labelled.quarantine])


def test_run_account_names_a_row_a_stage_dropped_on_purpose() -> None:
    raw, outcome, quarantine = _run_through_stages()
    labelled, awaiting = outcome.data, outcome.awaiting
    malformed = quarantine_rows(pd.DataFrame({"line": ["x,,"]}), step="ingest", reason="malformed line")
    quarantine = concat_quarantine([malformed, quarantine])
    train, test = labelled.iloc[:4], labelled.iloc[4:]
    account = account_rows(
        raw["item_id"],
        quarantine=quarantine,
        awaiting=awaiting["item_id"],
        trainable={"train": train["item_id"], "test": test["item_id"]},
    )
    assert account.rows_in == 11  # ten rows in the snapshot, one malformed line before it
    assert account.to_dict() | {"quarantined": {}} == {
        "rows_in": 11,
        "trainable": 6,
        "awaiting": 1,
        "quarantined": {},
        "quarantined_total": 4,
        "gap": 0,
        "holdout": 0,
        "splits": {"train": 4, "test": 2},
    }
    assert account.quarantined == {"ingest": 1, "missing": 1, "dedupe": 1, "labels": 1}
    # A row silently dropped between the split and training is caught and named.
    dropped = train["item_id"].iloc[2]
    with pytest.raises(RowsLostError, match=rf"the run' does not account .*\['{dropped}'\]"):
        account_rows(
            raw["item_id"],
            quarantine=quarantine,
            awaiting=awaiting["item_id"],
            trainable={"train": train["item_id"].drop(train.index[2]), "test": test["item_id"]},
        )


def test_a_first_stages_flow_keeps_what_later_stages_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "q.parquet"
    pipeline_run = concat_quarantine(
        [
            quarantine_rows(pd.DataFrame({"item_id": ["a", "b"]}), step="dedupe", reason="old rule"),
            quarantine_rows(pd.DataFrame({"item_id": ["c"]}), step="labels", reason="unknown label"),
            quarantine_rows(pd.DataFrame({"item_id": ["d"]}), step="split", reason="copy of x"),
        ]
    )
    update_quarantine(pipeline_run, path, steps={"dedupe", "labels", "split"})
    fresh = quarantine_rows(pd.DataFrame({"item_id": ["a", "d"]}), step="dedupe", reason="new rule")
    update_quarantine(fresh, path, steps={"ingest", "missing", "dedupe", "outliers"})
    merged = pd.read_parquet(path).set_index("item_id")
    # dedupe is redone (b is no longer removed), labels kept, d is quarantined once, by its first stage
    assert merged["step"].to_dict() == {"a": "dedupe", "d": "dedupe", "c": "labels"}
    assert merge_quarantine(merged.reset_index(), fresh, steps=set()).shape[0] == 3
