"""A data-quality report from cleanlab's Datalab: label issues, outliers, near duplicates, class imbalance, non-IID.

Datalab reads the features the label-quality model already builds (TF-IDF reduced by truncated SVD
for text, the scaled feature columns for tabular data) and that model's out-of-fold probabilities,
so the report costs a few seconds on the demo. It reports only: no row is moved or dropped here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tasks.columns import ITEM_ID, LABEL
from tasks.label_quality import Inputs, model_input, predict_oof

FloatArray = npt.NDArray[np.float64]

ISSUE_TYPES = ("label", "outlier", "near_duplicate", "class_imbalance", "non_iid")
MIN_ROWS = 30
"""Below this many labelled rows the neighbour graph Datalab builds says nothing; the report is skipped."""


class DataQualityConfig(BaseModel):
    """The Datalab report of a run (`data_quality:` in the config)."""

    model_config = ConfigDict(extra="forbid")

    datalab: bool = True
    """Run cleanlab's Datalab on the labelled rows before the split; false skips it."""
    max_rows: int = Field(20_000, ge=MIN_ROWS)
    """Above this many rows Datalab reads a seeded sample of them, so the report stays seconds long."""
    top: int = Field(10, ge=1)
    """Rows shown per kind of issue in the report."""


@dataclass
class DataQualityReport:
    """Datalab's summary per kind of issue, and the worst rows of each kind (by item id)."""

    rows: int
    summary: pd.DataFrame
    """issue_type, score (1 = no issue), num_issues."""
    top: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    """Per kind, what Datalab's info adds (the rarest class, the non-IID p-value)."""
    issues: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Every row: item_id and each kind's flag and score (the CSV artifact)."""
    skipped: str | None = None

    def count(self, kind: str) -> int:
        """How many rows Datalab flags with this kind of issue."""
        hit = self.summary.loc[self.summary["issue_type"] == kind, "num_issues"]
        return int(hit.iloc[0]) if len(hit) else 0

    def to_markdown(self) -> str:
        """The report as the Prefect artifact and MLflow file show it."""
        lines = ["### Data quality (cleanlab Datalab)", ""]
        if self.skipped:
            return "\n".join([*lines, f"Skipped: {self.skipped}."])
        lines += [f"{self.rows} labelled rows checked; a score near 1 means no issue of that kind.", ""]
        lines += ["| issue | rows flagged | score | note |", "|---|---|---|---|"]
        for row in self.summary.itertuples():
            lines.append(
                f"| {row.issue_type} | {row.num_issues} | {row.score:.3f} | {self.notes.get(str(row.issue_type), '')} |"
            )
        for kind, frame in self.top.items():
            if frame.empty:
                continue
            lines += ["", f"#### {kind}: top {len(frame)} rows", "", frame.to_markdown(index=False)]
        return "\n".join(lines)


def build_features(frame: pd.DataFrame, inputs: Inputs, *, dims: int = 64, seed: int = 0) -> tuple[Any, FloatArray]:
    """The probability model's input and dense features for Datalab's neighbour graph.

    Text: TF-IDF (sparse) and its truncated SVD, unit length; tabular: the scaled columns for both.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import StandardScaler

    if inputs.text_col:
        texts = frame[inputs.text_col].fillna("").astype(str).to_numpy()
        # Words seen twice or more: the neighbour graph needs shared words, and the fit stays seconds long.
        tfidf = TfidfVectorizer(min_df=2, sublinear_tf=True).fit_transform(texts)
        k = max(1, min(dims, tfidf.shape[1] - 1, len(texts) - 1))
        reduced = TruncatedSVD(n_components=k, random_state=seed).fit_transform(tfidf)
        norms = np.linalg.norm(reduced, axis=1, keepdims=True)
        return tfidf, np.asarray(reduced / np.where(norms == 0, 1.0, norms), dtype=np.float64)
    scaled = np.asarray(StandardScaler().fit_transform(model_input(frame, inputs)), dtype=np.float64)
    return scaled, scaled


def _top_rows(
    kind: str, issues: pd.DataFrame, ids: npt.NDArray[Any], preview: pd.Series | None, top: int
) -> pd.DataFrame:
    """The `top` flagged rows of one kind, lowest score first, with what makes them readable."""
    flagged = issues[issues[f"is_{kind}_issue"]].sort_values(f"{kind}_score", kind="stable").head(top)
    out = pd.DataFrame({ITEM_ID: ids[flagged.index], "score": flagged[f"{kind}_score"].round(4).to_numpy()})
    if kind == "label":
        out["given"] = flagged["given_label"].astype(str).to_numpy()
        out["suggested"] = flagged["predicted_label"].astype(str).to_numpy()
    if kind == "near_duplicate":
        out["duplicates"] = [", ".join(str(ids[j]) for j in sets[:5]) for sets in flagged["near_duplicate_sets"]]
    if kind == "class_imbalance":
        out["label"] = flagged["given_label"].astype(str).to_numpy()
    if preview is not None:
        out["preview"] = preview.iloc[flagged.index].astype(str).str.slice(0, 80).to_numpy()
    return out


def _notes(lab: Any) -> dict[str, str]:
    """What Datalab's info adds per kind: the rarest class (flagged below a tenth of an even share), the p-value."""
    imbalance = lab.get_info("class_imbalance")
    non_iid = lab.get_info("non_iid")
    rarest = imbalance.get("Rarest Class")
    even = "no class below a tenth of an even share"
    return {
        "class_imbalance": f"rarest class: {rarest}" if rarest not in (None, "NA") else even,
        "non_iid": f"p-value {float(non_iid.get('p-value', float('nan'))):.3g} (row order vs neighbours)",
    }


def find_data_issues(
    frame: pd.DataFrame, classes: list[str], inputs: Inputs, settings: DataQualityConfig, seed: int = 0
) -> DataQualityReport:
    """Run Datalab on the labelled rows (`LABEL` holds the class) and keep the summary and the worst rows per kind."""
    from cleanlab import Datalab
    from sklearn.linear_model import LogisticRegression

    if not inputs.text_col and not inputs.feature_cols:
        reason = "no text or feature columns to build features from (columns.text / columns.features)"
        return DataQualityReport(rows=len(frame), summary=pd.DataFrame(), skipped=reason)
    codes = pd.Index(classes).get_indexer(pd.Index(frame[LABEL].astype(str)))
    present = np.bincount(codes[codes >= 0], minlength=len(classes))
    if len(frame) < MIN_ROWS or (present > 0).sum() < 2:
        reason = f"{len(frame)} labelled rows in {(present > 0).sum()} classes; Datalab needs {MIN_ROWS} in two"
        return DataQualityReport(rows=len(frame), summary=pd.DataFrame(), skipped=reason)
    if len(frame) > settings.max_rows:
        frame = frame.sample(n=settings.max_rows, random_state=seed)
        codes = pd.Index(classes).get_indexer(pd.Index(frame[LABEL].astype(str)))
    data = frame.reset_index(drop=True)
    x, features = build_features(data, inputs, seed=seed)
    # Logistic regression on the same features, out of fold and group-aware: cheaper than a second model design.
    pred_probs = predict_oof(
        data, codes, len(classes), inputs, seed=seed, x=x, make_model=lambda: LogisticRegression(max_iter=1000, C=4.0)
    )
    given = pd.DataFrame({"label": np.asarray(classes, dtype=object)[codes]})
    lab = Datalab(data=given, label_name="label", verbosity=0)
    # n_jobs=1: cleanlab's label check forks a pool otherwise, which can deadlock under Prefect's threads.
    single = {"clean_learning_kwargs": {"find_label_issues_kwargs": {"n_jobs": 1}}}
    issue_types: dict[str, Any] = {k: single if k == "label" else {} for k in ISSUE_TYPES}
    lab.find_issues(features=features, pred_probs=pred_probs, issue_types=issue_types)
    summary = lab.get_issue_summary()
    summary = summary[summary["issue_type"].isin(ISSUE_TYPES)].reset_index(drop=True)
    ids = data[ITEM_ID].astype(str).to_numpy()
    preview = data[inputs.text_col] if inputs.text_col else None
    top, columns = {}, {ITEM_ID: ids}
    for kind in summary["issue_type"]:
        issues = lab.get_issues(kind)
        top[str(kind)] = _top_rows(str(kind), issues, ids, preview, settings.top)
        columns |= {f"{kind}_issue": issues[f"is_{kind}_issue"].to_numpy(), f"{kind}_score": issues[f"{kind}_score"]}
    return DataQualityReport(rows=len(data), summary=summary, top=top, notes=_notes(lab), issues=pd.DataFrame(columns))
