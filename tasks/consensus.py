"""Consensus labels from several annotators, the adjudication queue, the agreement gate, and gold checks.

Majority vote per item; ties, thin items and weak majorities go to a human adjudicator instead of
being guessed. Every item ends in exactly one place: the labels or the queue. Gold items (known
labels mixed into the stream) score each annotator; one who falls under `min_gold_accuracy` is
left out of consensus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tasks.agreement import AgreementReport, CodedAnnotations, FloatArray, IntArray, encode_annotations
from tasks.label_quality import (
    Inputs,
    annotation_matrix,
    majority_codes,
    pick_for_review,
    predict_oof,
    review_count,
    score_crowdlab,
)

BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]

QUEUE_REASONS = ("too_few_votes", "tie", "low_agreement", "low_quality")


class ConsensusConfig(BaseModel):
    """Thresholds for consensus and the agreement gate (defaults live here only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_votes: int = Field(default=2, ge=1, description="items with fewer annotations go to adjudication")
    min_item_agreement: float = Field(
        default=0.5, ge=0.0, le=1.0, description="items whose majority share is below this go to adjudication"
    )
    alpha_threshold: float = Field(
        default=0.667, ge=-1.0, le=1.0, description="Krippendorff's floor for tentative conclusions (2004)"
    )
    annotator_kappa_threshold: float = Field(
        default=0.4,
        ge=-1.0,
        le=1.0,
        description="kappa vs the others' consensus below which an annotator is flagged",
    )
    min_annotator_items: int = Field(
        default=10,
        ge=1,
        description="annotators compared on fewer items are not judged (their kappa is noise)",
    )
    min_gold_accuracy: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description="annotators whose accuracy on gold items is below this are excluded from consensus",
    )
    min_gold_items: int = Field(
        default=5, ge=1, description="gold items an annotator must have answered before their accuracy is judged"
    )
    method: Literal["crowdlab", "majority"] = Field(
        default="crowdlab",
        description="crowdlab: cleanlab weighs annotators and a quick model; majority: a plain vote",
    )
    review_budget: float = Field(
        default=0.05,
        ge=0.0,
        description="crowdlab: items sent to review, the lowest-quality first; below 1 a fraction, else a count",
    )


@dataclass(frozen=True)
class ConsensusResult:
    """Consensus `labels` (item_id, label, n_votes, agreement, source, reviewer) and adjudication `queue`.

    With CROWDLAB, `quality` holds every scored item (item_id, consensus_label, quality,
    n_annotations, agreement, suggestion, suggestion_score) and `annotators` each annotator's quality.
    """

    labels: pd.DataFrame
    queue: pd.DataFrame
    n_items: int
    n_consensus: int
    n_adjudicated: int
    n_queued: int
    method: str = "majority"
    quality: pd.DataFrame | None = None
    annotators: pd.DataFrame | None = None


@dataclass(frozen=True)
class GateDecision:
    """Whether agreement is good enough to train on, and why not in plain words."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    low_agreement_annotators: list[str] = field(default_factory=list)


class AgreementGateError(RuntimeError):
    """Raised by a flow when the agreement gate fails; carries the decision and the report."""

    def __init__(self, decision: GateDecision, report_markdown: str = "") -> None:
        self.decision = decision
        self.report_markdown = report_markdown
        reasons = "; ".join(decision.reasons) or "no reason given"
        message = (
            f"annotator agreement is too low to train on: {reasons}. Review the guidelines or the flagged "
            "annotators, relabel, then run again"
        )
        super().__init__(f"{message}\n\n{report_markdown}" if report_markdown else message)


def consensus_labels(
    df: pd.DataFrame, config: ConsensusConfig, adjudicated: pd.DataFrame | None = None
) -> ConsensusResult:
    """Majority label per item; ties, thin items and weak majorities go to the adjudication queue.

    Args:
        df: annotations, one row per annotation: item_id, annotator, label.
        adjudicated: decisions by a reviewer (item_id, label, reviewer); they win over the
            majority and take their items out of the queue.

    Returns:
        `labels` with source "consensus" or "adjudicated", and `queue` with item_id, reason (one of
        too_few_votes, tie, low_agreement), detail, n_votes and votes ("alice:fresh, bob:rotten").

    Raises:
        ValueError: malformed annotations, or an adjudication for an unknown or repeated item.
    """
    coded = encode_annotations(df)
    top_label, top_count, n_top, _, _ = coded.top
    votes = coded.ratings
    share = np.divide(top_count, votes, out=np.zeros(coded.n_items), where=votes > 0)

    too_few = votes < config.min_votes
    tie = ~too_few & (n_top > 1)
    low = ~too_few & ~tie & (share < config.min_item_agreement)
    adj_item, adj_label, adj_reviewer = _read_adjudicated(adjudicated, coded)
    is_adjudicated = np.zeros(coded.n_items, dtype=bool)
    is_adjudicated[adj_item] = True
    by_consensus = ~(too_few | tie | low) & ~is_adjudicated
    queued = (too_few | tie | low) & ~is_adjudicated

    label_names = np.asarray(coded.labels, dtype=object)
    consensus_item = np.flatnonzero(by_consensus)
    labels = pd.DataFrame(
        {
            "item_code": np.concatenate([consensus_item, adj_item]),
            "label": np.concatenate([label_names[top_label[consensus_item]], adj_label]),
            "n_votes": np.concatenate([votes[consensus_item], votes[adj_item]]),
            "agreement": np.concatenate([share[consensus_item], _vote_share(coded, adj_item, adj_label)]),
            "source": ["consensus"] * len(consensus_item) + ["adjudicated"] * len(adj_item),
            "reviewer": np.concatenate([np.full(len(consensus_item), None, dtype=object), adj_reviewer]),
        }
    )
    queue = _build_queue(coded, config, np.flatnonzero(queued), too_few, tie, share)
    _check_conservation(coded, labels["item_code"].to_numpy(), queue["item_code"].to_numpy())
    return ConsensusResult(
        labels=_by_item(labels, coded),
        queue=_by_item(queue, coded),
        n_items=coded.n_items,
        n_consensus=len(consensus_item),
        n_adjudicated=len(adj_item),
        n_queued=len(queue),
    )


def crowdlab_consensus(
    df: pd.DataFrame,
    config: ConsensusConfig,
    items: pd.DataFrame,
    classes: list[str],
    inputs: Inputs,
    adjudicated: pd.DataFrame | None = None,
    *,
    seed: int = 0,
) -> ConsensusResult:
    """CROWDLAB consensus: every item with enough votes is labelled, the lowest-quality ones go to review.

    The quick model learns the majority labels over group-aware folds; cleanlab weighs each
    annotator against it. The `review_budget` lowest-quality items are queued (reason
    low_quality) with the model's suggestion, unless a reviewer already decided them: a reviewer's
    label wins. Items with fewer than `min_votes` annotations wait (too_few_votes).

    Args:
        df: annotations: item_id, annotator, label.
        items: the items with the model's input columns, by item_id.
        adjudicated: reviewers' decisions (item_id, label, reviewer).
    """
    coded = encode_annotations(df)
    votes = coded.ratings
    too_few = votes < config.min_votes
    adj_item, adj_label, adj_reviewer = _read_adjudicated(adjudicated, coded)
    scored_ids = coded.items[np.flatnonzero(~too_few)]
    matrix = annotation_matrix(df, scored_ids, classes)
    frame = items.drop_duplicates("item_id").set_index(items["item_id"].drop_duplicates().astype(str))
    frame = frame.reindex(pd.Index(scored_ids).astype(str))
    proba = predict_oof(frame, majority_codes(matrix, len(classes)), len(classes), inputs, seed=seed)
    scored = score_crowdlab(matrix, proba, classes)
    names = np.asarray(classes, dtype=object)
    quality = scored.items.assign(
        suggestion=names[proba.argmax(axis=1)] if len(proba) else [], suggestion_score=proba.max(axis=1).round(4)
    )
    adjudicated_ids = set(coded.items[adj_item])
    to_review = set(pick_for_review(quality, config.review_budget)) - adjudicated_ids
    keep = quality[~quality["item_id"].isin(to_review | adjudicated_ids)]
    code = np.asarray(coded.items.get_indexer(pd.Index(keep["item_id"])), dtype=np.int64)
    labels = pd.DataFrame(
        {
            "item_code": np.concatenate([code, adj_item]),
            "label": np.concatenate([keep["consensus_label"].to_numpy(dtype=object), adj_label]),
            "n_votes": np.concatenate([votes[code], votes[adj_item]]),
            "agreement": np.concatenate(
                [
                    _vote_share(coded, code, keep["consensus_label"].to_numpy(dtype=object)),
                    _vote_share(coded, adj_item, adj_label),
                ]
            ),
            "source": ["consensus"] * len(code) + ["adjudicated"] * len(adj_item),
            "reviewer": np.concatenate([np.full(len(code), None, dtype=object), adj_reviewer]),
        }
    )
    queued = np.sort(
        np.concatenate(
            [
                np.flatnonzero(too_few & ~np.isin(np.arange(coded.n_items), adj_item)),
                coded.items.get_indexer(pd.Index(sorted(to_review))),
            ]
        ).astype(np.int64)
    )
    queue = _build_queue(coded, config, queued, too_few, np.zeros(coded.n_items, dtype=bool), np.zeros(coded.n_items))
    queue = _low_quality_detail(queue, coded, quality, review_count(config.review_budget, len(quality)))
    _check_conservation(coded, labels["item_code"].to_numpy(), queue["item_code"].to_numpy())
    return ConsensusResult(
        labels=_by_item(labels, coded),
        queue=_by_item(queue, coded),
        n_items=coded.n_items,
        n_consensus=len(code),
        n_adjudicated=len(adj_item),
        n_queued=len(queue),
        method="crowdlab",
        quality=quality,
        annotators=scored.annotators,
    )


def _low_quality_detail(
    queue: pd.DataFrame, coded: CodedAnnotations, quality: pd.DataFrame, n_budget: int
) -> pd.DataFrame:
    """Mark the queued items that CROWDLAB picked (not too_few_votes) and add the model's suggestion."""
    by_id = quality.set_index("item_id")
    ids = coded.items[queue["item_code"].to_numpy()]
    picked = pd.Index(ids).isin(by_id.index) & (queue["reason"] != "too_few_votes").to_numpy()
    q = by_id.reindex(ids)
    queue = queue.assign(
        quality=q["quality"].to_numpy(),
        suggestion=q["suggestion"].to_numpy(),
        suggestion_score=q["suggestion_score"].to_numpy(),
    )
    queue.loc[picked, "reason"] = "low_quality"
    queue.loc[picked, "detail"] = [
        f"CROWDLAB quality {v:.2f}, among the {n_budget} lowest (consensus.review_budget)" for v in q["quality"][picked]
    ]
    return queue


def check_agreement_gate(report: AgreementReport, config: ConsensusConfig) -> GateDecision:
    """Pass when alpha reaches the threshold and no annotator falls below the kappa floor.

    Annotators compared on fewer than `min_annotator_items` items are not judged. Nothing is raised:
    the flow decides whether to stop (see `AgreementGateError`).
    """
    reasons: list[str] = []
    if np.isnan(report.alpha):
        reasons.append(
            f"Krippendorff's alpha is undefined (every annotation on a shared item has the same label), "
            f"so reliability cannot be shown against the threshold {config.alpha_threshold:.3f}"
        )
    elif report.alpha < config.alpha_threshold:
        reasons.append(f"Krippendorff's alpha {report.alpha:.3f} is below the threshold {config.alpha_threshold:.3f}")
    per = report.per_annotator
    judged = per[(per["n_compared"] >= config.min_annotator_items) & per["kappa"].notna()]
    low = judged[judged["kappa"] < config.annotator_kappa_threshold].sort_values("kappa", kind="stable")
    for row in low.itertuples(index=False):
        reasons.append(
            f"annotator {row.annotator!r} has kappa {row.kappa:.3f} against the other annotators' majority "
            f"(on {row.n_compared:,} items), below the threshold {config.annotator_kappa_threshold:.3f}"
        )
    return GateDecision(
        passed=not reasons, reasons=reasons, low_agreement_annotators=[str(a) for a in low["annotator"]]
    )


GOLD_SCORE_COLUMNS = ["annotator", "gold_items", "gold_correct", "gold_accuracy"]


def score_gold(answers: pd.DataFrame, gold: pd.DataFrame) -> pd.DataFrame:
    """Each annotator's accuracy on the gold items they answered.

    Args:
        answers: annotations on gold items: item_id, annotator, label.
        gold: the known labels: item_id, label.

    Returns:
        annotator, gold_items, gold_correct, gold_accuracy; most accurate last.
    """
    if answers.empty:
        dtypes = {"annotator": "str", "gold_items": "int64", "gold_correct": "int64", "gold_accuracy": "float64"}
        return pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in GOLD_SCORE_COLUMNS})
    known = gold.set_index(gold["item_id"].astype(str))["label"].astype(str)
    expected = answers["item_id"].astype(str).map(known)
    unknown = answers.loc[expected.isna(), "item_id"].unique().tolist()
    if unknown:
        raise ValueError(f"answers on items {unknown[:5]} that the gold file does not hold; score them with their file")
    scored = answers.assign(correct=(answers["label"].astype(str) == expected).astype("int64"))
    table = scored.groupby("annotator", sort=True)["correct"].agg(gold_items="size", gold_correct="sum").reset_index()
    table["gold_accuracy"] = table["gold_correct"] / table["gold_items"]
    return table.sort_values(["gold_accuracy", "annotator"], kind="stable").reset_index(drop=True)[GOLD_SCORE_COLUMNS]


def gold_exclusions(scores: pd.DataFrame, config: ConsensusConfig) -> dict[str, str]:
    """Annotators to leave out of consensus, each with the reason in plain words.

    Only annotators who answered at least `min_gold_items` gold items are judged: fewer
    answers say little about anyone.
    """
    enough = scores["gold_items"] >= config.min_gold_items
    judged = scores[enough & (scores["gold_accuracy"] < config.min_gold_accuracy)]
    return {
        str(row.annotator): (
            f"gold accuracy {row.gold_accuracy:.0%} ({row.gold_correct} of {row.gold_items} gold items) is below "
            f"consensus.min_gold_accuracy {config.min_gold_accuracy:.0%}"
        )
        for row in judged.itertuples(index=False)
    }


# -- helpers ----------------------------------------------------------------------------------------


def _read_adjudicated(
    adjudicated: pd.DataFrame | None, coded: CodedAnnotations
) -> tuple[IntArray, ObjectArray, ObjectArray]:
    """Item codes, labels and reviewers of the adjudications, validated against the annotations."""
    if adjudicated is None or adjudicated.empty:
        empty = np.zeros(0, dtype=object)
        return np.zeros(0, dtype=np.int64), empty, empty
    missing = [c for c in ("item_id", "label") if c not in adjudicated.columns]
    if missing:
        raise ValueError(
            f"column(s) {', '.join(missing)} missing from the adjudicated frame; expected item_id, label, reviewer"
        )
    if adjudicated["label"].isna().any():
        bad = adjudicated.loc[adjudicated["label"].isna(), "item_id"].head(5).tolist()
        raise ValueError(f"adjudicated items {bad} have no label; give each a label or leave them out")
    repeated = adjudicated["item_id"][adjudicated["item_id"].duplicated()].unique().tolist()
    if repeated:
        raise ValueError(
            f"items {repeated[:5]} are adjudicated more than once; keep one decision per item (the newest)"
        )
    item = coded.items.get_indexer(pd.Index(adjudicated["item_id"]))
    if (item < 0).any():
        unknown = adjudicated["item_id"][item < 0].head(5).tolist()
        raise ValueError(
            f"adjudicated items {unknown} are not among the annotated items; adjudicate items from this "
            "annotation set (check the project or snapshot)"
        )
    reviewer = (
        adjudicated["reviewer"].to_numpy(dtype=object)
        if "reviewer" in adjudicated.columns
        else np.full(len(adjudicated), None, dtype=object)
    )
    return item.astype(np.int64), adjudicated["label"].to_numpy(dtype=object), reviewer


def _vote_share(coded: CodedAnnotations, item: IntArray, label: ObjectArray) -> FloatArray:
    """Share of each item's annotators who gave `label` (NaN for an item without annotations)."""
    share: FloatArray = np.full(len(item), np.nan)
    cell_key = coded.cell_item * max(coded.n_labels, 1) + coded.cell_label  # sorted: np.unique made it
    if len(item) == 0 or len(cell_key) == 0:
        return share
    code = coded.labels.get_indexer(pd.Index(label, dtype=object))  # -1: a label nobody gave
    key = item * max(coded.n_labels, 1) + code
    pos = np.minimum(np.searchsorted(cell_key, key), len(cell_key) - 1)
    count = np.where((code >= 0) & (cell_key[pos] == key), coded.cell_count[pos], 0)
    votes = coded.ratings[item]
    np.divide(count, votes, out=share, where=votes > 0)
    return share


def _build_queue(
    coded: CodedAnnotations,
    config: ConsensusConfig,
    queued: IntArray,
    too_few: BoolArray,
    tie: BoolArray,
    share: FloatArray,
) -> pd.DataFrame:
    top_label, top_count, n_top, _, _ = coded.top
    votes = pd.Series(coded.ratings[queued])
    top = pd.Series(top_count[queued]).astype(str) + " of " + votes.astype(str) + " votes"
    reason = np.where(too_few[queued], "too_few_votes", np.where(tie[queued], "tie", "low_agreement"))
    # A trailing "" makes code -1 (no ratings) safe to index; such items are never low_agreement anyway.
    top_name = pd.Series(np.append(np.asarray(coded.labels, dtype=object), "")[top_label[queued]]).astype(str)
    detail = np.where(
        reason == "too_few_votes",
        votes.astype(str) + f" vote(s), fewer than min_votes={config.min_votes}",
        np.where(
            reason == "tie",
            pd.Series(n_top[queued]).astype(str) + " labels tie at " + top,
            "majority '"
            + top_name
            + "' has "
            + top
            + " ("
            + pd.Series(share[queued]).round(2).astype(str)
            + f"), below min_item_agreement={config.min_item_agreement}",
        ),
    )
    return pd.DataFrame(
        {
            "item_code": queued,
            "reason": reason,
            "detail": detail,
            "n_votes": votes.to_numpy(),
            "votes": _format_votes(coded, queued),
        }
    )


def _format_votes(coded: CodedAnnotations, queued: IntArray) -> ObjectArray:
    """'alice:fresh, bob:rotten' per queued item, annotators in name order ('' for no votes)."""
    in_queue = np.zeros(coded.n_items, dtype=bool)
    in_queue[queued] = True
    rows = np.flatnonzero(in_queue[coded.item])
    names = np.asarray([str(a) for a in coded.annotators], dtype=object)
    name_rank = np.argsort(np.argsort(names, kind="stable"), kind="stable")
    item, annotator = coded.item[rows], coded.annotator[rows]
    order = np.lexsort((name_rank[annotator], item))
    item, annotator, label = item[order], annotator[order], coded.label[rows][order]
    labels = np.asarray([str(lab) for lab in coded.labels], dtype=object)
    vote = names[annotator] + ":" + labels[label]
    # Lay the votes out as an items x max-votes grid and join column by column: a loop over at most
    # (number of annotators) columns instead of a Python call per queued item.
    group = np.searchsorted(queued, item)
    first = np.r_[0, np.flatnonzero(np.diff(group)) + 1] if len(group) else np.zeros(0, np.int64)
    position = np.arange(len(group)) - np.repeat(first, np.diff(np.r_[first, len(group)]))
    width = int(position.max()) + 1 if len(position) else 1
    grid = np.full((len(queued), width), "", dtype=object)
    grid[group, position] = vote
    joined = grid[:, 0].copy()
    for column in range(1, width):
        more = grid[:, column] != ""
        joined[more] = joined[more] + ", " + grid[more, column]
    return joined


def _by_item(table: pd.DataFrame, coded: CodedAnnotations) -> pd.DataFrame:
    """Replace internal item codes by item ids, in the order items first appear in the annotations."""
    table = table.sort_values("item_code", kind="stable")
    item_id = coded.items[table["item_code"].to_numpy()]
    return table.drop(columns="item_code").assign(item_id=item_id).pipe(_item_first)


def _item_first(table: pd.DataFrame) -> pd.DataFrame:
    return table[["item_id", *[c for c in table.columns if c != "item_id"]]].reset_index(drop=True)


def _check_conservation(coded: CodedAnnotations, labelled: IntArray, queued: IntArray) -> None:
    """Every annotated item must land in exactly one of labels / queue; anything else is a bug here."""
    placed = np.bincount(np.concatenate([labelled, queued]).astype(np.int64), minlength=coded.n_items)
    if len(placed) != coded.n_items or not (placed == 1).all():
        lost = coded.items[np.flatnonzero(placed[: coded.n_items] == 0)[:5]].tolist()
        doubled = coded.items[np.flatnonzero(placed[: coded.n_items] > 1)[:5]].tolist()
        raise RuntimeError(
            f"consensus lost or duplicated items (lost: {lost}, in both labels and queue: {doubled}); "
            "this is a bug in tasks.consensus, please report it with the annotations"
        )
