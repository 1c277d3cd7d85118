"""Quarantine: where removed rows go, with the step that removed them and why.

A bad row is never dropped silently. Every stage that removes rows hands them to
`quarantine_rows`, and before it returns checks with `check_ids_conserved` that the
item ids that entered it left it again, each exactly once, as kept or quarantined.
Ingest, where item ids are born, counts rows instead (`check_conservation`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import pandas as pd

from tasks.columns import ITEM_ID

QUARANTINE_COLUMNS = [ITEM_ID, "step", "reason", "row"]


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
    ids = rows[ITEM_ID].astype(str).tolist() if ITEM_ID in rows.columns else [""] * len(rows)
    return pd.DataFrame(
        {
            ITEM_ID: ids,
            "step": [step] * len(rows),
            "reason": [str(r) for r in reasons],
            "row": [_row_json(row) for _, row in rows.iterrows()],
        }
    )


def empty_quarantine() -> pd.DataFrame:
    """A quarantine table with no rows (and its columns)."""
    return pd.DataFrame({c: pd.Series(dtype="str") for c in QUARANTINE_COLUMNS})


def concat_quarantine(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One quarantine table from several (empty parts are skipped)."""
    parts = [p for p in parts if not p.empty]
    if not parts:
        return empty_quarantine()
    return pd.concat(parts, ignore_index=True)[QUARANTINE_COLUMNS]


def check_conservation(rows_in: int, kept: int, quarantined: int, *, stage: str) -> None:
    """Raise when a stage that has no item ids yet (ingest) lost or invented rows.

    Raises:
        RowsLostError: rows_in != kept + quarantined.
    """
    if rows_in != kept + quarantined:
        raise RowsLostError(
            f"stage {stage!r} lost rows: {rows_in} in, {kept} kept + {quarantined} quarantined "
            f"= {kept + quarantined}. This is a bug in sluice; please report it with the config used."
        )


def check_ids_conserved(ids_in: Iterable[object], *, stage: str, **outputs: Iterable[object]) -> None:
    """Raise unless every item id that entered a stage left it exactly once, through one of `outputs`.

    Ids are compared as strings (the quarantine stores them so) and as a multiset, so a row lost and
    another doubled do not cancel out the way equal counts would.

    Raises:
        RowsLostError: naming how many ids were lost, invented or doubled, with examples, per output.
    """
    entered = _id_counts(ids_in)
    parts = {name: _id_counts(ids) for name, ids in outputs.items()}
    left = pd.concat(list(parts.values())).groupby(level=0).sum() if parts else pd.Series(dtype="int64")
    diff = entered.sub(left, fill_value=0)
    lost = diff[diff > 0].index.tolist()
    extra = diff[diff < 0].index.tolist()
    if not lost and not extra:
        return
    problems = []
    if lost:
        problems.append(f"{len(lost)} item ids entered and never left (e.g. {sorted(lost)[:5]})")
    if extra:
        named = [f"{i!r} in {[n for n, c in parts.items() if i in c.index]}" for i in sorted(extra)[:5]]
        problems.append(f"{len(extra)} item ids left more often than they entered (e.g. {', '.join(named)})")
    counts = ", ".join(f"{name} {int(c.sum())}" for name, c in parts.items())
    raise RowsLostError(
        f"stage {stage!r} does not account for its rows: {int(entered.sum())} in, {counts}; "
        f"{'; '.join(problems)}. This is a bug in sluice; please report it with the config used."
    )


def _id_counts(ids: Iterable[object]) -> pd.Series:
    return pd.Series(list(ids), dtype=object).astype(str).value_counts()


def merge_quarantine(existing: pd.DataFrame, fresh: pd.DataFrame, *, steps: Collection[str]) -> pd.DataFrame:
    """A run's quarantine in place of the `steps` it ran; rows of other steps (later stages) are kept.

    A flow that runs only the first stages (ingest, clean, annotation sync) must not erase what the
    pipeline quarantined later (labels, split) for the same snapshot. A kept row whose item the fresh
    run quarantined itself is dropped: an item sits in the quarantine once.
    """
    if existing.empty:
        return concat_quarantine([fresh])
    keep = ~existing["step"].isin(list(steps)) & ~existing[ITEM_ID].isin(fresh[ITEM_ID])
    return concat_quarantine([fresh, existing[keep]])


def update_quarantine(quarantine: pd.DataFrame, path: Path, *, steps: Collection[str]) -> Path:
    """Write a run's quarantine to `path`, merged with what is there (see `merge_quarantine`)."""
    existing = pd.read_parquet(path) if path.is_file() else empty_quarantine()
    return write_quarantine(merge_quarantine(existing, quarantine, steps=steps), path)


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
