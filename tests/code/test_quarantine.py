from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.quarantine import RowsLostError, check_conservation, quarantine_rows, summarise_quarantine


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
