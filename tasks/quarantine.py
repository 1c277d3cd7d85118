"""Quarantine: where removed rows go, with the step that removed them and why.

A bad row is never dropped silently. Every stage that removes rows hands them to
`quarantine_rows`, and checks `check_conservation` before it returns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

QUARANTINE_COLUMNS = ["item_id", "step", "reason", "row"]


class RowsLostError(RuntimeError):
    """Rows in != rows kept + rows quarantined: a bug, never bad input."""


def _row_json(row: pd.Series) -> str:
    payload = {str(k): (None if _is_missing(v) else _plain(v)) for k, v in row.items()}
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, default=str)


def _is_missing(value: object) -> bool:
    try:
        return bool(pd.isna(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):  # lists and arrays are never "missing"
        return False


def _plain(value: object) -> object:
    item = getattr(value, "item", None)  # numpy scalars -> Python scalars
    return item() if callable(item) else value


def quarantine_rows(rows: pd.DataFrame, *, step: str, reason: str | Sequence[str] | pd.Series) -> pd.DataFrame:
    """Quarantine records for `rows`: item id, step, reason, and the whole row as JSON."""
    if rows.empty:
        return empty_quarantine()
    reasons = [reason] * len(rows) if isinstance(reason, str) else list(reason)
    if len(reasons) != len(rows):
        raise ValueError(f"{len(reasons)} reasons for {len(rows)} quarantined rows in step {step!r}")
    ids = rows["item_id"].astype(str).tolist() if "item_id" in rows.columns else [""] * len(rows)
    return pd.DataFrame(
        {
            "item_id": ids,
            "step": [step] * len(rows),
            "reason": [str(r) for r in reasons],
            "row": [_row_json(row) for _, row in rows.iterrows()],
        }
    )


def empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="str") for c in QUARANTINE_COLUMNS})


def concat_quarantine(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if not p.empty]
    if not parts:
        return empty_quarantine()
    return pd.concat(parts, ignore_index=True)[QUARANTINE_COLUMNS]


def check_conservation(rows_in: int, kept: int, quarantined: int, *, stage: str) -> None:
    """Raise when a stage lost or invented rows.

    Raises:
        RowsLostError: rows_in != kept + quarantined.
    """
    if rows_in != kept + quarantined:
        raise RowsLostError(
            f"stage {stage!r} lost rows: {rows_in} in, {kept} kept + {quarantined} quarantined "
            f"= {kept + quarantined}. This is a bug in sluice; please report it with the config used."
        )


def write_quarantine(quarantine: pd.DataFrame, path: Path) -> Path:
    """Write a quarantine table as Parquet (an empty table is written too, so its absence means 'not run')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    quarantine.to_parquet(path, index=False)
    return path


def summarise_quarantine(quarantine: pd.DataFrame) -> pd.DataFrame:
    """Counts per step and reason, largest first."""
    if quarantine.empty:
        return pd.DataFrame({"step": [], "reason": [], "rows": []})
    counts = quarantine.groupby(["step", "reason"], sort=False).size().rename("rows").reset_index()
    return counts.sort_values("rows", ascending=False, kind="stable").reset_index(drop=True)
