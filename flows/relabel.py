"""labels.label_issues: relabel: the rows cleanlab flags go to a Label Studio project; the answers come back.

The project (`<config name>-relabel`) shows each flagged row with its given label, and the model's
suggestion pre-selected (a prediction). A flagged row waits there (counted as awaiting, not trained
on) until someone answers; on the next run the answer replaces the given label and is trained on.
"""

from __future__ import annotations

import os

import pandas as pd

from sluice.config import ColumnsConfig
from sluice.home import Home
from sluice.labelstudio import LabelStudioClient
from sluice.labelstudio_server import URL_ENV_VAR, ensure_server
from sluice.labelstudio_settings import LabelStudioSettings
from tasks.columns import ITEM_ID
from tasks.label_config import build_label_config, build_review_config, parse_label_config
from tasks.labels import LabelOutcome

DATA_KEY = "text"
"""The task field the relabel project shows: the text column, or the row's feature values written out."""


def open_relabel_project(
    dataset: str, classes: list[str], labelstudio: LabelStudioSettings, home: Home
) -> tuple[LabelStudioClient, int]:
    """A client of the Label Studio server the annotation stage uses, and the relabel project (created once)."""
    url = os.environ.get(URL_ENV_VAR) or ensure_server(labelstudio, home).url
    client = LabelStudioClient.connect(url, labelstudio.resolve_token(home))
    xml = build_label_config(classes, data_key=DATA_KEY, question="Which label is right for this row?")
    project_id = client.ensure_project(
        f"{dataset}-relabel",
        f"{dataset} (relabel)",
        build_review_config(
            parse_label_config(xml, classes),
            votes_key="given",
            header="The label this row arrived with, and the model's suggestion (pick the right label)",
        ),
        1,
        description="Rows whose given label the model doubts (cleanlab find_label_issues): pick the right label.",
    )
    return client, project_id


def fetch_relabels(client: LabelStudioClient, project_id: int) -> pd.DataFrame:
    """The answers so far: item_id, label, reviewer (the newest per row); empty before anyone answers."""
    if not client.progress(project_id).annotations:
        return pd.DataFrame({ITEM_ID: pd.Series(dtype=str), "label": [], "reviewer": []})
    return client.fetch_adjudications(project_id)


def _shown(columns: ColumnsConfig, rows: pd.DataFrame) -> pd.Series:
    """What a person reads to relabel a row: its text, or its feature values."""
    if columns.text:
        return rows[columns.text].astype(str)
    features = list(columns.features) or [c for c in rows.columns if c != ITEM_ID]
    return rows[features].apply(lambda r: " · ".join(f"{k}={v}" for k, v in r.items()), axis=1)


def send_for_relabel(columns: ColumnsConfig, client: LabelStudioClient, project_id: int, outcome: LabelOutcome) -> int:
    """Import the flagged rows awaiting relabel (not imported yet) with the given label and the model's suggestion."""
    issues = outcome.issues
    if issues.empty or not issues["awaiting_relabel"].any():
        return 0
    waiting = issues[issues["awaiting_relabel"]]
    rows = outcome.awaiting.assign(**{ITEM_ID: outcome.awaiting[ITEM_ID].astype(str)}).drop_duplicates(ITEM_ID)
    shown = pd.Series(_shown(columns, rows).to_numpy(), index=rows[ITEM_ID])
    queue = pd.DataFrame(
        {
            ITEM_ID: waiting[ITEM_ID].to_numpy(),
            DATA_KEY: waiting[ITEM_ID].map(shown).to_numpy(),
            "votes": [{"given label": label} for label in waiting["label"]],
            "suggestion": waiting["suggested"].to_numpy(),
            "suggestion_score": waiting["suggested_score"].to_numpy(),
        }
    )
    return client.create_review_tasks(project_id, queue, text_col=DATA_KEY, votes_key="given").imported
