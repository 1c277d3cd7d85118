"""Label quality with cleanlab: out-of-fold probabilities, CROWDLAB consensus, review picks, ActiveLab, label issues.

A quick model (TF-IDF + logistic regression for text, logistic regression for tabular features)
gives out-of-fold probabilities over group-aware folds, so an item never scores itself and a
group's rows (a movie's snippets) never score each other. cleanlab then weighs annotators against
that model (CROWDLAB), says which labelled item is worth another annotation (ActiveLab), and finds
likely label errors in data that arrives labelled (`find_label_issues`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from tasks.train import TrainConfig

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

# cleanlab and scikit-learn are imported where they are used: `sluice.config` reaches this module for its
# settings, and cleanlab's import (scikit-learn, `datasets`, scipy.stats) is most of a CLI start's seconds.

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ITEM_QUALITY_COLUMNS = ["item_id", "consensus_label", "quality", "n_annotations", "agreement"]
ANNOTATOR_QUALITY_COLUMNS = ["annotator", "crowdlab_quality", "crowdlab_agreement"]


@dataclass(frozen=True)
class Inputs:
    """What the quick model reads: a text column, or tabular feature columns, and the group column."""

    text_col: str | None = None
    feature_cols: tuple[str, ...] = ()
    group_col: str | None = None


@dataclass(frozen=True)
class CrowdlabResult:
    """Per item: consensus label, quality, annotations; per annotator: CROWDLAB quality."""

    items: pd.DataFrame
    annotators: pd.DataFrame


def build_quick_model(inputs: Inputs, seed: int = 0) -> Pipeline:
    """TF-IDF + logistic regression for text, scaled logistic regression for tabular features."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if inputs.text_col:
        return make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True),
            LogisticRegression(max_iter=1000, C=4.0, random_state=seed),
        )
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))


def model_input(frame: pd.DataFrame, inputs: Inputs) -> Any:
    """What the quick model reads: the texts, or the feature columns one-hot encoded with medians for gaps."""
    if inputs.text_col:
        return frame[inputs.text_col].fillna("").astype(str).to_numpy()
    if not inputs.feature_cols:
        raise ValueError("the quick label-quality model needs columns.text or columns.features; set one of them")
    features = pd.get_dummies(frame[list(inputs.feature_cols)], dummy_na=False).astype("float64")
    return features.fillna(features.median(numeric_only=True)).fillna(0.0).to_numpy()


def _fit_proba(model: Any, x_fit: Any, y_fit: IntArray, x_new: Any, n_classes: int) -> FloatArray:
    """Probabilities over all classes, also when the fold's training part lacks a class."""
    model.fit(x_fit, y_fit)
    out = np.zeros((x_new.shape[0], n_classes))
    out[:, model.classes_] = model.predict_proba(x_new)
    return out


def predict_oof(
    frame: pd.DataFrame,
    labels: Sequence[int] | IntArray,
    n_classes: int,
    inputs: Inputs,
    *,
    folds: int = 5,
    seed: int = 0,
    x: Any = None,
    make_model: Callable[[], Any] | None = None,
) -> FloatArray:
    """Out-of-fold class probabilities (rows x classes) of the quick model, folds grouped by `inputs.group_col`.

    Fewer folds are used when a class or the groups are too few; with fewer than two of either,
    the class shares stand in for the model (every item then scores alike). `x` and `make_model`
    replace the model's input and the model when a caller has built the features already.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(y, minlength=n_classes)
    groups = frame[inputs.group_col].astype(str).to_numpy() if inputs.group_col else None
    k = min(folds, int(counts[counts > 0].min()) if len(y) else 0)
    if groups is not None:
        k = min(k, len(np.unique(groups)))
    prior = (counts + 1.0) / (counts.sum() + n_classes)
    if k < 2:
        return np.tile(prior, (len(y), 1))
    x = model_input(frame, inputs) if x is None else x
    splitter = (
        StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        if groups is not None
        else StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    )
    proba = np.zeros((len(y), n_classes))
    for fit_rows, held_rows in splitter.split(np.zeros(len(y)), y, groups):
        model = make_model() if make_model else build_quick_model(inputs, seed)
        proba[held_rows] = _fit_proba(model, x[fit_rows], y[fit_rows], x[held_rows], n_classes)
    return proba


def predict_new(
    frame: pd.DataFrame, labels: Sequence[int] | IntArray, new: pd.DataFrame, n_classes: int, inputs: Inputs
) -> FloatArray:
    """Probabilities for items nobody has labelled yet, from the quick model fitted on every labelled item."""
    y = np.asarray(labels, dtype=np.int64)
    if new.empty:
        return np.zeros((0, n_classes))
    if len(np.unique(y)) < 2:
        counts = np.bincount(y, minlength=n_classes)
        return np.tile((counts + 1.0) / (counts.sum() + n_classes), (len(new), 1))
    return _fit_proba(build_quick_model(inputs), model_input(frame, inputs), y, model_input(new, inputs), n_classes)


def annotation_matrix(
    annotations: pd.DataFrame, item_ids: Sequence[Any] | pd.Index, classes: Sequence[str]
) -> pd.DataFrame:
    """Items x annotators of class indices (NaN where an annotator did not label the item), rows in `item_ids` order."""
    code = {c: i for i, c in enumerate(classes)}
    coded = annotations.assign(code=annotations["label"].astype(str).map(code))
    unknown = coded.loc[coded["code"].isna(), "label"].unique().tolist()
    if unknown:
        raise ValueError(f"annotation labels {unknown[:5]} are not among the classes {list(classes)}")
    matrix = coded.pivot_table(index="item_id", columns="annotator", values="code", aggfunc="last")
    matrix = matrix.reindex(pd.Index(item_ids, name="item_id")).dropna(axis=1, how="all")
    matrix.columns = [str(c) for c in matrix.columns]
    return matrix


def majority_codes(matrix: pd.DataFrame, n_classes: int) -> IntArray:
    """Majority class index per row of an annotation matrix (ties: the lower class index)."""
    values = matrix.to_numpy()
    counts = np.stack([(values == k).sum(axis=1) for k in range(n_classes)], axis=1)
    return np.asarray(counts.argmax(axis=1), dtype=np.int64)


def score_crowdlab(matrix: pd.DataFrame, pred_probs: FloatArray, classes: Sequence[str]) -> CrowdlabResult:
    """CROWDLAB consensus label and quality per item, and each annotator's quality, from cleanlab."""
    from cleanlab.multiannotator import get_label_quality_multiannotator

    if matrix.empty:
        return CrowdlabResult(
            items=pd.DataFrame({c: [] for c in ITEM_QUALITY_COLUMNS}),
            annotators=pd.DataFrame({c: [] for c in ANNOTATOR_QUALITY_COLUMNS}),
        )
    result = get_label_quality_multiannotator(matrix, pred_probs, verbose=False)
    quality = result["label_quality"]
    names = np.asarray(list(classes), dtype=object)
    items = pd.DataFrame(
        {
            "item_id": matrix.index.to_numpy(),
            "consensus_label": names[quality["consensus_label"].to_numpy(dtype=np.int64)],
            "quality": quality["consensus_quality_score"].to_numpy(dtype=float),
            "n_annotations": quality["num_annotations"].to_numpy(dtype=np.int64),
            "agreement": quality["annotator_agreement"].to_numpy(dtype=float),
        }
    )
    stats = result["annotator_stats"]
    annotators = pd.DataFrame(
        {
            "annotator": [str(a) for a in stats.index],
            "crowdlab_quality": stats["annotator_quality"].to_numpy(dtype=float),
            "crowdlab_agreement": stats["agreement_with_consensus"].to_numpy(dtype=float),
        }
    )
    return CrowdlabResult(items=items, annotators=annotators)


def review_count(budget: float, n_items: int) -> int:
    """How many items a review budget allows: below 1 a fraction of the items, from 1 up a count."""
    if budget < 1:
        return min(n_items, math.ceil(budget * n_items))
    return min(n_items, int(budget))


def pick_for_review(items: pd.DataFrame, budget: float) -> pd.Index:
    """Item ids of the lowest-quality items the review budget allows (lowest first)."""
    n = review_count(budget, len(items))
    lowest = items.sort_values(["quality", "item_id"], kind="stable").head(n)
    return pd.Index(lowest["item_id"])


def plan_extra_annotations(
    matrix: pd.DataFrame,
    pred_probs: FloatArray,
    pred_probs_unlabelled: FloatArray,
    *,
    max_annotations: int,
    max_extra: int | None = None,
    skip: Collection[Any] = (),
) -> pd.Index:
    """Item ids that should get one more annotator (ActiveLab): worth more than a first label elsewhere.

    An item under `max_annotations` annotators is picked when its ActiveLab score is below the best
    (lowest) score of an unlabelled item; with no unlabelled items left, below the median score of
    the labelled items. Lowest first, at most `max_extra`; items in `skip` (waiting for an extra
    annotation already) are not picked.
    """
    from cleanlab.multiannotator import get_active_learning_scores

    if matrix.empty:
        return pd.Index([])
    scores, unlabelled_scores = get_active_learning_scores(
        matrix, pred_probs, pred_probs_unlabelled if len(pred_probs_unlabelled) else None
    )
    bar = float(np.min(unlabelled_scores)) if len(unlabelled_scores) else float(np.median(scores))
    room = (matrix.notna().sum(axis=1).to_numpy() < max_annotations) & ~matrix.index.isin(list(skip))
    pick = np.flatnonzero(room & (scores < bar))
    pick = pick[np.argsort(scores[pick], kind="stable")]
    if max_extra is not None:
        pick = pick[:max_extra]
    return pd.Index(matrix.index.to_numpy()[pick])


def flag_label_issues(
    labels: Sequence[int] | IntArray, pred_probs: FloatArray
) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    """cleanlab's label issues (a mask) and each row's self-confidence (the given label's probability)."""
    from cleanlab.filter import find_label_issues

    y = np.asarray(labels, dtype=np.int64)
    if len(y) == 0 or len(np.unique(y)) < 2:
        return np.zeros(len(y), dtype=bool), np.ones(len(y))
    # n_jobs=1: cleanlab's pool forks, and a fork of a process running Prefect's threads can deadlock.
    mask = find_label_issues(y, pred_probs, n_jobs=1)
    return np.asarray(mask, dtype=bool), pred_probs[np.arange(len(y)), y]


def plan_next_round(
    annotations: pd.DataFrame,
    items: pd.DataFrame,
    task_overlaps: Mapping[str, int],
    classes: Sequence[str],
    inputs: Inputs,
    *,
    start_overlap: int,
    max_annotations: int,
    extra_share: float,
    seed: int = 0,
) -> dict[str, int]:
    """ActiveLab's next round: item_id -> the task overlap that asks for one more annotator.

    Items whose task already asks for more annotations than it has are waiting, not picked again.
    Unlabelled items (no annotation yet) are what a first label would go to. At most `extra_share`
    of the items ever get more than `start_overlap` annotators, over all rounds.
    """
    counts = annotations.groupby(annotations["item_id"].astype(str))["annotator"].nunique()
    if counts.empty:
        return {}
    ids = items["item_id"].astype(str)
    frame = items.set_index(ids)
    labelled = frame.reindex(counts.index)
    matrix = annotation_matrix(annotations.assign(item_id=annotations["item_id"].astype(str)), counts.index, classes)
    codes = majority_codes(matrix, len(classes))
    proba = predict_oof(labelled, codes, len(classes), inputs, seed=seed)
    unlabelled = frame[~ids.isin(counts.index).to_numpy()]
    proba_new = predict_new(labelled, codes, unlabelled, len(classes), inputs)
    waiting = [i for i, n in counts.items() if task_overlaps.get(str(i), n) > n]
    # A budget over all rounds, so that repeated syncs stop asking: items above the start already use it.
    asked = sum(1 for i, n in counts.items() if max(n, task_overlaps.get(str(i), n)) > start_overlap)
    budget = max(0, math.floor(extra_share * len(items)) - asked)
    if budget == 0:
        return {}
    picked = plan_extra_annotations(
        matrix, proba, proba_new, max_annotations=max_annotations, max_extra=budget, skip=waiting
    )
    return {str(i): int(counts[i]) + 1 for i in picked}


def measure_labelling(
    labels: pd.DataFrame, queue: pd.DataFrame, annotations: pd.DataFrame, reference: pd.Series | None = None
) -> dict[str, float | int | None]:
    """The labelling figures of a run: share trained on, share sent to review, annotations per item, labels right.

    Args:
        labels: consensus labels (item_id, label); queue: the review queue (item_id).
        annotations: the kept annotations (item_id, annotator) of the user's items.
        reference: item_id -> the true label, known only to the demo (the simulator's held-back
            column); without it `trained_labels_right` is None.
    """
    items = annotations["item_id"].astype(str).nunique()
    share = lambda n: round(n / items, 4) if items else None  # noqa: E731 - one local formula
    right = None
    if reference is not None and len(labels):
        truth = reference.set_axis(reference.index.astype(str))
        given = labels.set_index(labels["item_id"].astype(str))["label"].astype(str)
        right = round(float((given == truth.reindex(given.index).astype(str)).mean()), 4)
    return {
        "items_labelled": items,
        "trained_share": share(len(labels)),
        "review_share": share(int((queue.get("reason", pd.Series(dtype=str)) != "too_few_votes").sum())),
        "annotations_per_item": round(len(annotations) / items, 3) if items else None,
        "trained_labels_right": right,
    }


def audit_test_metrics(
    test: pd.DataFrame,
    proba: FloatArray,
    quality: pd.DataFrame,
    *,
    label_col: str,
    classes: list[str],
    min_quality: float,
) -> dict[str, float | int]:
    """Test metrics on the test items whose consensus quality is at least `min_quality` (plus how many there are)."""
    from tasks.evaluate import evaluate_predictions

    by_id = quality.set_index(quality["item_id"].astype(str))["quality"]
    score = test["item_id"].astype(str).map(by_id).to_numpy(dtype=float)
    keep = score >= min_quality
    if not keep.any():
        return {"rows": 0}
    metrics = evaluate_predictions(test[label_col].to_numpy()[keep], proba[keep], classes)
    return {"rows": int(keep.sum())} | {k: float(v) for k, v in metrics.items() if k in ("accuracy", "f1_macro")}


def oof_from_training(
    frame: pd.DataFrame,
    *,
    config: TrainConfig,
    label_col: str,
    classes: list[str],
    inputs: Inputs,
    folds: int = 5,
    max_epochs: int = 20,
) -> FloatArray:
    """Out-of-fold probabilities of the pipeline's own model design (tasks.tune.cross_validate), epochs shrunk.

    Folds are grouped by `inputs.group_col` and stratified by label, so no row (and no group) scores itself.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    from tasks.tune import cross_validate

    y = pd.Index(classes).get_indexer(pd.Index(frame[label_col].astype(str)))
    groups = frame[inputs.group_col].astype(str).to_numpy() if inputs.group_col else None
    k = min(folds, int(np.bincount(y).min()), len(np.unique(groups)) if groups is not None else folds)
    if k < 2:
        counts = np.bincount(y, minlength=len(classes))
        return np.tile((counts + 1.0) / (counts.sum() + len(classes)), (len(y), 1))
    splitter = (
        StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=config.seed)
        if groups is not None
        else StratifiedKFold(n_splits=k, shuffle=True, random_state=config.seed)
    )
    fold_of = np.zeros(len(y), dtype=np.int64)
    for number, (_, held) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
        fold_of[held] = number
    data = frame.reset_index(drop=True)
    fold_ids = pd.Series(fold_of, index=data.index)
    shrunk = config.model_copy(update={"epochs": min(config.epochs, max_epochs)})
    result = cross_validate(
        data,
        fold_ids,
        config=shrunk,
        label_col=label_col,
        classes=classes,
        text_col=inputs.text_col,
        feature_cols=list(inputs.feature_cols) or None,
    )
    proba = np.zeros((len(y), len(classes)))
    for number, trained in enumerate(result.results):
        held = fold_of == number
        proba[held] = trained.predictor.predict_proba(data[held])
    return proba
