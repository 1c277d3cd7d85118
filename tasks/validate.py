"""Great Expectations gate: suites kept as JSON files in `expectations/`, run through a checkpoint.

An expectation whose `meta` says `"row_level": true` quarantines its unexpected
rows instead of failing the gate; every other failed expectation stops the flow, and
so does a row-level one that names no rows (a table-level or aggregate expectation
has none to quarantine, so marking it row-level must not wave it through).
Data Docs are built under the project home.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.columns import ITEM_ID
from tasks.quarantine import check_ids_conserved, concat_quarantine, quarantine_rows

_ROW_LEVEL_KEY = "row_level"
_MAX_IDS_KEPT = 20  # unexpected ids shown per expectation in reports


class ExpectationGateError(RuntimeError):
    """A suite's hard expectations failed; the message lists each with its count of bad rows."""

    def __init__(self, message: str, outcome: ValidationOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class SuiteFileError(ValueError):
    """A suite file is missing, unreadable, or names a column the data lacks."""


@dataclass
class ExpectationOutcome:
    type: str
    column: str | None
    kwargs: dict[str, Any]
    row_level: bool
    success: bool
    unexpected_count: int
    unexpected_ids: list[str] = field(default_factory=list)
    observed: object = None
    """A table-level expectation's observed value (e.g. the row count)."""
    element_count: int = 0
    missing_count: int = 0
    """Rows seen and rows whose value was missing (what `mostly` is measured against)."""

    @property
    def quarantines(self) -> bool:
        """A failure this expectation settles by quarantining rows: row-level, and it named them."""
        return self.row_level and bool(self.unexpected_ids)

    @property
    def problem(self) -> str:
        """What failed, in words: the bad-row count, or the observed value for table-level expectations."""
        if self.observed is not None and (self.column is None or not self.unexpected_ids):
            found = f"observed {self.observed}"
        else:
            found = f"{self.unexpected_count} bad rows"
        if self.row_level and not self.unexpected_ids:
            found += (
                ' (marked "row_level" but it names no rows to quarantine, so it fails the gate: '
                'remove "row_level" from its meta, or fix the data)'
            )
        return found

    @property
    def label(self) -> str:
        where = f'"{self.column}"' if self.column else "table"
        return f"{self.type}({where})"


@dataclass
class ValidationOutcome:
    suite: str
    suite_path: str
    success: bool
    expectations: list[ExpectationOutcome]
    data_docs: str | None = None
    quarantine: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def passed(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if e.success]

    @property
    def step(self) -> str:
        """The quarantine step of this suite's row-level failures."""
        return f"expectations:{self.suite}"

    @property
    def failed_hard(self) -> list[ExpectationOutcome]:
        """Failures that stop the flow: every failure not settled by quarantining rows."""
        return [e for e in self.expectations if not e.success and not e.quarantines]

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "suite_path": self.suite_path,
            "success": self.success,
            "data_docs": self.data_docs,
            "quarantined": len(self.quarantine),
            "expectations": [
                {
                    "type": e.type,
                    "column": e.column,
                    "row_level": e.row_level,
                    "success": e.success,
                    "unexpected_count": e.unexpected_count,
                    "unexpected_ids": e.unexpected_ids[:_MAX_IDS_KEPT],
                }
                for e in self.expectations
            ],
        }

    def summary_markdown(self) -> str:
        verdict = "passed" if self.success else "FAILED"
        lines = [
            f"### Expectation suite `{self.suite}`: {verdict}",
            "",
            f"{len(self.passed)}/{len(self.expectations)} expectations passed; "
            f"{len(self.quarantine)} rows quarantined by row-level expectations.",
            "",
            "| expectation | row-level | result | unexpected rows |",
            "|---|---|---|---|",
        ]
        for e in self.expectations:
            result = "pass" if e.success else ("quarantined" if e.quarantines else "FAIL")
            lines.append(f"| `{e.label}` | {'yes' if e.row_level else 'no'} | {result} | {e.unexpected_count} |")
        if self.data_docs:
            lines += ["", f"Data Docs: {self.data_docs}"]
        return "\n".join(lines)


def load_suite(path: Path) -> dict[str, Any]:
    """A suite file as a dict, checked for the fields GX needs.

    Raises:
        SuiteFileError: the file is missing or not a suite.
    """
    if not path.is_file():
        raise SuiteFileError(
            f"expectation suite {path} does not exist; fix expectations.raw_suite or expectations.clean_suite "
            "in the pipeline config."
        )
    try:
        suite = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SuiteFileError(f"expectation suite {path} is not valid JSON: {exc}") from exc
    if not isinstance(suite, dict) or "name" not in suite or not isinstance(suite.get("expectations"), list):
        raise SuiteFileError(f'expectation suite {path} needs a "name" and an "expectations" list.')
    return suite


def _check_suite_columns(suite: dict[str, Any], df: pd.DataFrame, path: Path, where: str) -> None:
    for expectation in suite["expectations"]:
        kwargs = expectation.get("kwargs", {})
        for key in ("column", "column_A", "column_B"):
            column = kwargs.get(key)
            if column is not None and column not in df.columns:
                raise SuiteFileError(
                    f'column "{column}" is missing from {where}; expected by {path} '
                    f"({expectation.get('type')}). Available columns: "
                    f"{', '.join(map(str, df.columns))}."
                )


def _quiet_gx() -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def run_suite(df: pd.DataFrame, suite_path: Path, *, gx_root: Path, asset: str, where: str) -> ValidationOutcome:
    """Validate `df` against one suite file through a GX checkpoint, and update Data Docs under `gx_root`."""
    suite_dict = load_suite(suite_path)
    _check_suite_columns(suite_dict, df, suite_path, where)
    _quiet_gx()
    import great_expectations as gx  # slow import (~4-8 s): only when validating
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(gx_root))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_or_update_pandas(name="sluice")
    try:
        data_asset = source.get_asset(asset)
    except LookupError:
        data_asset = source.add_dataframe_asset(name=asset)
    try:
        batch = data_asset.get_batch_definition("whole")
    except KeyError:
        batch = data_asset.add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add_or_update(gx.ExpectationSuite(**suite_dict))
    name = f"{asset}-{suite.name}"
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_data_docs")],
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [ITEM_ID]},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": df})
    outcomes: list[ExpectationOutcome] = []
    for run in result.run_results.values():
        for item in run.results:
            config = item.expectation_config
            if config is None:  # GX fills it for every suite-driven result; guard for the type checker
                continue
            details = item.result or {}
            ids = [str(entry[ITEM_ID]) for entry in details.get("unexpected_index_list") or [] if ITEM_ID in entry]
            outcomes.append(
                ExpectationOutcome(
                    type=config.type,
                    column=config.kwargs.get("column"),
                    kwargs=dict(config.kwargs),
                    row_level=bool((config.meta or {}).get(_ROW_LEVEL_KEY)),
                    success=bool(item.success),
                    unexpected_count=int(details.get("unexpected_count") or (0 if item.success else 1)),
                    unexpected_ids=ids,
                    observed=details.get("observed_value"),
                    element_count=int(details.get("element_count") or 0),
                    missing_count=int(details.get("missing_count") or 0),
                )
            )
    docs = context.get_docs_sites_urls()
    return ValidationOutcome(
        suite=suite.name,
        suite_path=str(suite_path),
        success=all(o.success for o in outcomes),
        expectations=outcomes,
        data_docs=docs[0]["site_url"] if docs else None,
    )


def quarantine_row_level(df: pd.DataFrame, outcome: ValidationOutcome) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off the rows that failed row-level expectations, each with the expectations it failed."""
    reasons: dict[str, list[str]] = {}
    for e in outcome.expectations:
        if e.row_level and not e.success:
            for item_id in e.unexpected_ids:
                reasons.setdefault(item_id, []).append(f"failed {e.label}")
    mask = df[ITEM_ID].astype(str).isin(reasons)
    bad = df[mask]
    quarantine = quarantine_rows(
        bad, step=outcome.step, reason=["; ".join(reasons[i]) for i in bad[ITEM_ID].astype(str)]
    )
    kept = df[~mask].reset_index(drop=True)
    check_ids_conserved(df[ITEM_ID], stage=outcome.step, kept=kept[ITEM_ID], quarantined=quarantine[ITEM_ID])
    return kept, quarantine


def raise_on_failure(outcome: ValidationOutcome) -> None:
    """Stop on failed hard expectations.

    Raises:
        ExpectationGateError: lists each failed expectation with its count of bad rows.
    """
    failed_hard = outcome.failed_hard
    if failed_hard:
        listing = "; ".join(f"{e.label}: {e.problem}" for e in failed_hard)
        raise ExpectationGateError(
            f"expectation suite {outcome.suite} ({outcome.suite_path}) failed {len(failed_hard)} "
            f"expectation(s): {listing}. Fix the data or the suite; Data Docs: {outcome.data_docs}",
            outcome,
        )


def validate_frame(
    df: pd.DataFrame, suite_path: Path, *, gx_root: Path, asset: str, where: str
) -> tuple[pd.DataFrame, ValidationOutcome]:
    """Run a suite as a gate: row-level failures are quarantined, hard failures raise.

    When rows were quarantined, the suite runs again on the kept rows, so the verdict
    (and Data Docs) describe the data that moves on.

    Raises:
        ExpectationGateError: a hard expectation failed on the kept rows.
    """
    outcome = run_suite(df, suite_path, gx_root=gx_root, asset=asset, where=where)
    kept, quarantine = quarantine_row_level(df, outcome)
    if len(kept) < len(df):
        outcome = run_suite(kept, suite_path, gx_root=gx_root, asset=asset, where=where)
        # A row-level expectation can only fail again if ids were truncated; loop once more to be safe.
        kept, more = quarantine_row_level(kept, outcome)
        quarantine = concat_quarantine([quarantine, more])
    outcome.quarantine = quarantine
    raise_on_failure(outcome)
    return kept, outcome
