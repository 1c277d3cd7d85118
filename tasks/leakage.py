"""Leakage report: does anything the model trains on reappear, or give away the label, in val/test?

Hard checks (any failure fails the report): exact duplicates across splits, near
duplicates across splits, a group value in more than one split, overlapping time
ranges (for a temporal split). Soft checks (warnings): labels missing from a split,
a val/test label mix far from train's or a single class there (`label_shift`, a
hard gate with `max_label_shift`), and identifier-like columns that predict the
label on their own. Information only: the time ranges of a split that is not
temporal, and the copies of rows in other groups quarantined before the split.

Only rows whose split is "train", "val" or "test" take part; "gap" rows (excluded
by a temporal split) are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from tasks.columns import SPLITS
from tasks.modalities import registered_modalities

Severity = Literal["hard", "soft", "info"]

# Column names that usually hold identifiers, paths or free-form keys.
_ID_NAME_RE = re.compile(
    r"(?:^|[^a-z0-9])(id|ids|uuid|guid|key|hash|sha\d*|md5|file|filename|path|url|uri|name|index|rownames?)"
    r"(?:$|[^a-z0-9])",
    re.IGNORECASE,
)
_TOKEN_RE = re.compile(r"[^0-9a-z]+")
# A token must occur this often in train before its label counts as learned.
_MIN_TOKEN_SUPPORT = 3
# Balanced accuracy above chance (1 / classes) at which a lookup counts as predictive.
_ID_LIFT = 0.2
# Total variation distance between a split's label mix and train's that is worth a warning.
_MAX_LABEL_TVD = 0.1
EXAMPLES = 5
_COPY_EXAMPLES = 20
DUPLICATE_FIX = "re-split with duplicates merged (tasks.split)"
_SNIPPET = 80


class LeakageError(RuntimeError):
    """A hard leakage check failed; `.report` holds the full report."""

    def __init__(self, report: LeakageReport) -> None:
        failed = "; ".join(f"{c.name}: {c.summary}" for c in report.failures)
        fixes = "; ".join(dict.fromkeys(c.fix for c in report.failures if c.fix))
        super().__init__(f"leakage between splits: {failed}. Fix: {fixes or DUPLICATE_FIX}")
        self.report = report


@dataclass
class LeakageCheck:
    """One check's outcome; `details` and `examples` are JSON-safe."""

    name: str
    severity: Severity
    passed: bool
    summary: str
    skipped: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    fix: str = ""
    """What to change when this check stops the run."""

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "name": self.name,
                "severity": self.severity,
                "passed": self.passed,
                "skipped": self.skipped,
                "summary": self.summary,
                "fix": self.fix,
                "details": self.details,
                "examples": self.examples,
            }
        )


@dataclass
class LeakageReport:
    """All checks, the split sizes and the label table (split x label counts)."""

    checks: list[LeakageCheck]
    split_sizes: dict[str, int]
    label_table: pd.DataFrame | None = None

    @property
    def passed(self) -> bool:
        """False when any hard check failed."""
        return not self.failures

    @property
    def failures(self) -> list[LeakageCheck]:
        return [c for c in self.checks if c.severity == "hard" and not c.passed]

    @property
    def warnings(self) -> list[LeakageCheck]:
        return [c for c in self.checks if c.severity == "soft" and not c.passed]

    def check(self, name: str) -> LeakageCheck:
        """The check called `name`."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; checks: {[c.name for c in self.checks]}")

    def raise_if_failed(self) -> None:
        """Raise `LeakageError` when a hard check failed."""
        if not self.passed:
            raise LeakageError(self)

    def to_dict(self) -> dict[str, Any]:
        table = None
        if self.label_table is not None:
            table = {str(s): {str(k): int(v) for k, v in row.items()} for s, row in self.label_table.iterrows()}
        return _jsonable(
            {
                "passed": self.passed,
                "split_sizes": self.split_sizes,
                "label_distribution": table,
                "checks": [c.to_dict() for c in self.checks],
            }
        )

    def to_markdown(self) -> str:
        status = "PASSED" if self.passed else "FAILED"
        lines = [f"# Leakage report: {status}", ""]
        shift = next((c for c in self.checks if c.name == "label_shift" and not c.passed), None)
        if shift is not None:
            # Said first and loudly: metrics on such a split look like numbers but measure nothing.
            lines += [f"> **WARNING: these splits cannot measure the model.** {_md_cell(shift.summary)}", ""]
        sizes = ", ".join(f"{k} {v}" for k, v in self.split_sizes.items())
        lines += [f"Rows per split: {sizes}.", ""]
        lines += ["| check | severity | result | summary |", "|---|---|---|---|"]
        for c in self.checks:
            result = "skipped" if c.skipped else "info" if c.severity == "info" else "pass" if c.passed else "FAIL"
            lines.append(f"| {c.name} | {c.severity} | {result} | {_md_cell(c.summary)} |")
        if self.label_table is not None:
            table = self.label_table
            lines += ["", "## Label distribution (rows)", ""]
            lines.append("| split | " + " | ".join(str(c) for c in table.columns) + " |")
            lines.append("|---" * (len(table.columns) + 1) + "|")
            for split, row in table.iterrows():
                lines.append(f"| {split} | " + " | ".join(str(int(v)) for v in row) + " |")
        for c in self.checks:
            if c.examples:
                lines += ["", f"## {c.name}: examples", ""]
                lines += [f"- {_md_cell(_format_example(e))}" for e in c.examples]
                more = int(c.details.get("quarantined", 0)) - len(c.examples)
                if more > 0:
                    lines.append(f"- … and {more} more (all in leakage_report.json and the run's quarantine)")
        return "\n".join(lines) + "\n"


def leakage_report(
    df: pd.DataFrame,
    splits: pd.Series,
    *,
    text_col: str | None = None,
    group_col: str | None = None,
    time_col: str | None = None,
    label_col: str | None = None,
    id_like_max_unique_ratio: float = 0.5,
    near_threshold: float | None = 0.8,
    time_ordered: bool = True,
    max_label_shift: float | None = None,
    copies: pd.DataFrame | None = None,
    columns: Mapping[str, Any] | None = None,
) -> LeakageReport:
    """Check a split for leaks; see the module docstring for the checks.

    Args:
        splits: "train"/"val"/"test" (other values are ignored) on `df`'s index.
        id_like_max_unique_ratio: a column with a larger share of distinct values
            than this (or with an id-like name) is tested as a possible identifier.
        near_threshold: Jaccard similarity of character 5-grams that counts as a near
            duplicate; None skips the check (the split found near duplicates another way).
        time_ordered: the split must keep train < val < test on `time_col` (a temporal
            split); False reports the time ranges as information only.
        max_label_shift: total variation distance from train's label mix above which
            val/test fail the report (as does a single class there); None warns only.
        copies: rows quarantined before the split as copies of rows in other groups
            (item_id, group, original, original_group, kind), listed in the report.
        columns: the modalities' role columns (`{"image_col": ...}`, tasks.modalities); each registered
            modality adds its own checks (text: exact and near duplicates on `text_col`).
    """
    if not splits.index.equals(df.index):
        raise ValueError("splits must be on the frame's index (the Series assign_splits returned for it)")
    for role, col in (
        ("text_col", text_col),
        ("group_col", group_col),
        ("time_col", time_col),
        ("label_col", label_col),
    ):
        if col is not None and col not in df.columns:
            raise ValueError(f"{role}={col!r} is not a column; available columns: {list(df.columns)}")
    keep = splits.isin(SPLITS).to_numpy()
    frame = df[keep]
    split = splits[keep].astype(str).to_numpy()
    sizes = {s: int((split == s).sum()) for s in SPLITS}

    checks = [
        _check_split_sizes(sizes),
        *_modality_checks(frame, split, {"text_col": text_col, **(columns or {})}, near_threshold),
        _check_groups(frame, split, group_col),
        _check_time(frame, split, time_col, ordered=time_ordered),
    ]
    table = None
    if label_col is not None:
        table = pd.crosstab(pd.Series(split, name="split"), frame[label_col].astype(object).fillna("<missing>"))
        table = table.reindex([s for s in SPLITS if sizes[s]]).fillna(0).astype(np.int64)
        table.columns.name = None
    checks.append(_check_labels(table))
    checks.append(_check_label_shift(table, max_label_shift))
    excluded = {c for c in (text_col, time_col, label_col) if c is not None}
    checks.append(_check_identifiers(frame, split, label_col, excluded, group_col, id_like_max_unique_ratio))
    checks.append(_check_copies(copies))
    return LeakageReport(checks=checks, split_sizes=sizes, label_table=table)


# -- checks ------------------------------------------------------------------
def _modality_checks(
    frame: pd.DataFrame, split: npt.NDArray[Any], columns: Mapping[str, Any], near_threshold: float | None
) -> list[LeakageCheck]:
    return [
        check
        for modality in registered_modalities()
        for check in modality.leakage_checks(frame, split, columns, near_threshold=near_threshold)
    ]


def _check_split_sizes(sizes: dict[str, int]) -> LeakageCheck:
    empty = [s for s, n in sizes.items() if n == 0]
    return LeakageCheck(
        name="split_sizes",
        severity="soft",
        passed=not empty,
        summary=f"empty: {', '.join(empty)}" if empty else "every split has rows",
        details=dict(sizes),
    )


def _check_groups(frame: pd.DataFrame, split: npt.NDArray[Any], group_col: str | None) -> LeakageCheck:
    name = "group_overlap"
    if group_col is None:
        return skipped_check(name, "hard", "group_col")
    table = pd.DataFrame({"g": frame[group_col].to_numpy(), "s": split}).dropna()
    spans = table.groupby("g")["s"].nunique()
    shared = spans[spans > 1]
    examples = []
    for value in shared.index[:EXAMPLES]:
        counts = table.loc[table["g"] == value, "s"].value_counts()
        examples.append({"group": value, "rows": {s: int(counts.get(s, 0)) for s in SPLITS}})
    return LeakageCheck(
        name=name,
        severity="hard",
        passed=len(shared) == 0,
        summary=f"{len(shared)} of {len(spans)} {group_col!r} values appear in more than one split"
        if len(shared)
        else f"each of {len(spans)} {group_col!r} values sits in one split",
        details={"groups": len(spans), "groups_in_several_splits": len(shared)},
        examples=examples,
        fix="split with the group column set (columns.group)",
    )


def _check_time(frame: pd.DataFrame, split: npt.NDArray[Any], time_col: str | None, *, ordered: bool) -> LeakageCheck:
    name = "temporal_overlap"
    if time_col is None:
        return skipped_check(name, "hard", "time_col")
    values = frame[time_col]
    times: pd.Series
    if pd.api.types.is_numeric_dtype(values):
        times = values
    else:
        times = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    ranges = {}
    for s in SPLITS:
        t = times[split == s].dropna()
        if len(t):
            ranges[s] = (t.min(), t.max())
    overlaps = []
    present = [s for s in SPLITS if s in ranges]
    for earlier, later in zip(present, present[1:], strict=False):
        if ranges[earlier][1] >= ranges[later][0]:
            inside = int((times[split == later] <= ranges[earlier][1]).sum())
            overlaps.append(
                {
                    "earlier": earlier,
                    "later": later,
                    "earlier_max": str(ranges[earlier][1]),
                    "later_min": str(ranges[later][0]),
                    "later_rows_not_after": inside,
                }
            )
    unparsed = int(times.isna().sum())
    summary = (
        "; ".join(f"max({o['earlier']}) {o['earlier_max']} >= min({o['later']}) {o['later_min']}" for o in overlaps)
        if overlaps
        else "train < val < test in time"
    )
    if unparsed:
        summary += f" ({unparsed} rows without a parsable time ignored)"
    details = {"ranges": {s: [str(lo), str(hi)] for s, (lo, hi) in ranges.items()}, "unparsed": unparsed}
    if not ordered:
        # Overlapping times are what a stratified or group split gives: worth knowing, not a leak.
        return LeakageCheck(
            name=name,
            severity="info",
            passed=True,
            summary=f"information only (the split is not temporal): {summary}",
            details=details,
            examples=overlaps,
        )
    return LeakageCheck(
        name=name,
        severity="hard",
        passed=not overlaps,
        summary=summary,
        details=details,
        examples=overlaps,
        fix="use split.strategy: temporal, which orders train < val < test in time",
    )


def _check_labels(table: pd.DataFrame | None) -> LeakageCheck:
    name = "label_distribution"
    if table is None:
        return skipped_check(name, "soft", "label_col")
    problems = []
    if "train" in table.index:
        counts = table.to_numpy(dtype=np.int64)
        names = [str(c) for c in table.columns]
        train = counts[list(table.index).index("train")]
        for s, row in zip(table.index, counts, strict=True):
            if s == "train":
                continue
            unseen = [c for c, n, t in zip(names, row, train, strict=True) if n > 0 and t == 0]
            if unseen:
                problems.append(f"{s} has labels never seen in train: {unseen}")
            missing = [c for c, n, t in zip(names, row, train, strict=True) if n == 0 and t > 0]
            if missing:
                problems.append(f"{s} lacks labels present in train: {missing}")
    return LeakageCheck(
        name=name,
        severity="soft",
        passed=not problems,
        summary="; ".join(problems) if problems else "every split holds the labels train holds",
    )


def _check_label_shift(table: pd.DataFrame | None, max_shift: float | None) -> LeakageCheck:
    """Can val and test measure anything: a label mix near train's, and more than one class?

    The distance is the total variation distance between label shares (half the L1
    distance, 0 = same mix, 1 = disjoint labels). A temporal split on data whose labels
    drift over time is the usual cause.
    """
    name = "label_shift"
    severity: Severity = "hard" if max_shift is not None else "soft"
    if table is None:
        return skipped_check(name, severity, "label_col")
    limit = max_shift if max_shift is not None else _MAX_LABEL_TVD
    shares = table.div(table.sum(axis=1).clip(lower=1), axis=0)
    problems, tvd = [], {}
    several = (table.sum(axis=0) > 0).sum() > 1
    for s, row in table.iterrows():
        present = row[row > 0]
        if several and len(present) == 1:
            problems.append(
                f"{s} holds a single class: {present.index[0]!r} ({int(present.iloc[0])} of {int(row.sum())} rows)"
            )
    if "train" in table.index:
        names = [str(c) for c in table.columns]
        mixes = shares.to_numpy(dtype=np.float64)
        train = mixes[list(table.index).index("train")]
        for s, mix in zip(table.index, mixes, strict=True):
            if s == "train":
                continue
            tvd[str(s)] = round(float(np.abs(mix - train).sum() / 2), 4)
            if tvd[str(s)] > limit:
                problems.append(
                    f"{s} label mix differs from train's by TVD {tvd[str(s)]:.2f} > {limit:.2f} "
                    f"({s}: {_mix(names, mix)}; train: {_mix(names, train)})"
                )
    return LeakageCheck(
        name=name,
        severity=severity,
        passed=not problems,
        summary="; ".join(problems) if problems else f"label mixes within TVD {limit:.2f} of train's ({tvd})",
        details={"total_variation_from_train": tvd, "max_label_shift": limit, "shares": _shares(shares)},
        fix="use split.strategy: stratified (or other ratios or a longer time range), or raise split.max_label_shift",
    )


def _mix(names: list[str], shares: npt.NDArray[np.float64]) -> str:
    return ", ".join(f"{k} {v:.0%}" for k, v in zip(names, shares, strict=True))


def _shares(shares: pd.DataFrame) -> dict[str, dict[str, float]]:
    return {str(s): {str(k): round(float(v), 4) for k, v in row.items()} for s, row in shares.iterrows()}


def _check_copies(copies: pd.DataFrame | None) -> LeakageCheck:
    """List the rows quarantined before the split as copies of rows in other groups."""
    name = "cross_group_duplicates"
    if copies is None:
        return skipped_check(name, "info", "the split's quarantined copies")
    records = _jsonable(copies.to_dict(orient="records"))
    kinds = copies["kind"].value_counts().to_dict() if len(copies) else {}
    summary = (
        f"{len(copies)} copies of rows in other groups quarantined before the split, the first occurrence kept "
        f"({', '.join(f'{k} {v}' for k, v in kinds.items())}); the run's quarantine (step split) holds them"
        if len(copies)
        else "no row duplicates a row of another group"
    )
    return LeakageCheck(
        name=name,
        severity="info",
        passed=True,
        summary=summary,
        details={"quarantined": len(copies), "by_kind": kinds, "copies": records},
        examples=records[:_COPY_EXAMPLES],
    )


def _check_identifiers(
    frame: pd.DataFrame,
    split: npt.NDArray[Any],
    label_col: str | None,
    excluded: set[str],
    group_col: str | None,
    max_unique_ratio: float,
) -> LeakageCheck:
    """Flag columns from which a train-only lookup table predicts val/test labels.

    Rule: a column is a candidate when it is the group column, its name looks like
    an identifier (id, key, file, path, url, name, ...) or more than
    `max_unique_ratio` of its values are distinct. Two lookups are fit on train rows
    only: value -> majority label, and for text values, token -> majority label
    (tokens split on non-alphanumerics, seen >= 3 times; a row takes the label of its
    purest known token), which catches labels embedded in paths like ".../obj/..." or
    "cat_001.jpg". Unknown values fall back to train's majority label. A column is
    flagged when either lookup's balanced accuracy on val+test beats chance
    (1 / number of classes there) by >= 0.2.
    """
    name = "identifier_columns"
    if label_col is None:
        return skipped_check(name, "soft", "label_col")
    train = split == "train"
    held = ~train
    labels = frame[label_col].astype(object).fillna("<missing>").to_numpy()
    if not train.any() or not held.any():
        return skipped_check(name, "soft", "rows in both train and val/test")
    chance = 1.0 / len(np.unique(labels[held]))
    fallback = pd.Series(labels[train]).mode().iloc[0]
    flagged, tested = [], {}
    for col in frame.columns:
        if col in excluded or col == label_col:
            continue
        values = frame[col]
        if pd.api.types.is_datetime64_any_dtype(values):
            continue
        unique_ratio = values.nunique(dropna=True) / max(len(values), 1)
        if not (col == group_col or _ID_NAME_RE.search(str(col)) or unique_ratio > max_unique_ratio):
            continue
        scores = {"value": _balanced_accuracy(labels[held], _value_lookup(values, labels, train, fallback))}
        if values.dtype == object or pd.api.types.is_string_dtype(values):
            scores["token"] = _balanced_accuracy(labels[held], _token_lookup(values, labels, train, fallback))
        best = max(scores, key=lambda k: scores[k])
        tested[str(col)] = {
            "unique_ratio": round(float(unique_ratio), 4),
            **{f"{k}_balanced_accuracy": round(v, 4) for k, v in scores.items()},
        }
        if scores[best] >= chance + _ID_LIFT:
            flagged.append({"column": str(col), "lookup": best, "balanced_accuracy": round(scores[best], 4)})
    summary = (
        "; ".join(
            f"{f['column']!r} predicts {label_col!r} on val/test by {f['lookup']} lookup "
            f"(balanced accuracy {f['balanced_accuracy']:.2f}, chance {chance:.2f}): "
            "keep it out of the features"
            for f in flagged
        )
        if flagged
        else f"no identifier-like column predicts {label_col!r} (tested {sorted(tested)})"
    )
    return LeakageCheck(
        name=name,
        severity="soft",
        passed=not flagged,
        summary=summary,
        details={"chance": round(chance, 4), "tested": tested},
        examples=flagged,
    )


def _value_lookup(
    values: pd.Series, labels: npt.NDArray[Any], train: npt.NDArray[np.bool_], fallback: object
) -> npt.NDArray[Any]:
    # Integer codes keep the lookup independent of the column's dtype.
    codes = pd.factorize(values, use_na_sentinel=True)[0].astype(np.int64)
    fit = pd.DataFrame({"k": codes[train], "y": labels[train]})
    fit = fit[fit["k"] >= 0]
    counts = fit.groupby(["k", "y"]).size().rename("n").reset_index()
    best = counts.sort_values(["k", "n", "y"], ascending=[True, False, True]).drop_duplicates("k")
    predicted = pd.Series(codes[~train]).map(pd.Series(best["y"].to_numpy(), index=best["k"].to_numpy()))
    return predicted.where(predicted.notna(), fallback).to_numpy(dtype=object)


def _token_lookup(
    values: pd.Series, labels: npt.NDArray[Any], train: npt.NDArray[np.bool_], fallback: object
) -> npt.NDArray[Any]:
    tokens = pd.Series(
        [sorted({t for t in _TOKEN_RE.split(str(v).lower()) if t}) if pd.notna(v) else [] for v in values],
        dtype=object,
    )
    long = pd.DataFrame({"row": np.arange(len(values)), "tok": tokens, "y": labels}).explode("tok").dropna()
    fit = long[train[long["row"].to_numpy()]]
    counts = fit.groupby(["tok", "y"]).size().rename("n").reset_index()
    support = counts.groupby("tok")["n"].transform("sum")
    counts = counts.assign(support=support, purity=counts["n"] / support)
    counts = counts[counts["support"] >= _MIN_TOKEN_SUPPORT]
    best = counts.sort_values(["tok", "n", "y"], ascending=[True, False, True]).drop_duplicates("tok")
    best = best.rename(columns={"y": "predicted"})
    held_rows = np.flatnonzero(~train)
    ask = long[~train[long["row"].to_numpy()]].merge(best[["tok", "predicted", "purity", "support"]], on="tok")
    ask = ask.sort_values(["row", "purity", "support", "tok"], ascending=[True, False, False, True])
    chosen = ask.drop_duplicates("row").set_index("row")["predicted"]
    predicted = pd.Series(held_rows).map(chosen)
    return predicted.where(predicted.notna(), fallback).to_numpy(dtype=object)


def _balanced_accuracy(truth: npt.NDArray[Any], predicted: npt.NDArray[Any]) -> float:
    recalls = [float(np.mean(predicted[truth == c] == c)) for c in np.unique(truth)]
    return float(np.mean(recalls))


# -- formatting ----------------------------------------------------------------
def skipped_check(name: str, severity: Severity, needs: str) -> LeakageCheck:
    return LeakageCheck(name=name, severity=severity, passed=True, skipped=True, summary=f"skipped: needs {needs}")


def text_of(value: object) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)) else str(value)


def snippet(value: object) -> str:
    text = " ".join(text_of(value).split())
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 1] + "…"


def _format_example(example: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in _jsonable(example).items())


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars, timestamps and tuples converted."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
