"""Label quality with cleanlab: out-of-fold scores, CROWDLAB consensus and review picks, ActiveLab, label issues."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification

from tasks.consensus import ConsensusConfig, consensus_labels, crowdlab_consensus
from tasks.label_quality import (
    Inputs,
    annotation_matrix,
    flag_label_issues,
    majority_codes,
    plan_extra_annotations,
    predict_oof,
    review_count,
    score_crowdlab,
)
from tasks.simulate import simulate_annotations

CLASSES = ["fresh", "rotten"]
WORDS = {"fresh": ["good", "great", "lovely", "moving"], "rotten": ["bad", "dull", "awful", "tedious"]}


def _items(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Snippets whose words say their label (with some neutral noise), 30 movies."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(CLASSES, n)
    neutral = ["film", "plot", "actor", "scene", "story", "music"]
    text = [" ".join([*rng.choice(WORDS[t], 3), *rng.choice(neutral, 4)]) for t in truth]
    return pd.DataFrame(
        {"item_id": [f"i{k:03d}" for k in range(n)], "text": text, "movie": rng.integers(0, 30, n), "truth": truth}
    )


def _annotate(items: pd.DataFrame, overlap: int = 2, seed: int = 1) -> pd.DataFrame:
    rates = {"alice": 0.03, "bruno": 0.06, "chidi": 0.3}
    reference = items[["item_id", "truth"]].rename(columns={"truth": "label"})
    return simulate_annotations(reference, rates, CLASSES, overlap=overlap, seed=seed)


TEXT = Inputs(text_col="text", group_col="movie")


def test_crowdlab_finds_the_careless_annotator_and_labels_more_items_rightly_than_the_vote() -> None:
    items = _items()
    annotations = _annotate(items, overlap=3)
    config = ConsensusConfig(method="crowdlab", review_budget=0.05, min_item_agreement=0.7)
    result = crowdlab_consensus(annotations, config, items, CLASSES, TEXT)

    # Every item is placed once; only the budget goes to review, the rest is trained on.
    assert result.n_consensus + result.n_adjudicated + result.n_queued == result.n_items == len(items)
    assert result.n_queued == review_count(0.05, len(items)) == 15
    assert set(result.queue["reason"]) == {"low_quality"}
    assert result.queue["suggestion"].isin(CLASSES).all() and result.queue["votes"].str.count(":").eq(3).all()
    quality = result.quality.set_index("item_id")
    assert (
        quality.loc[result.queue["item_id"], "quality"].max() <= quality["quality"].drop(result.queue["item_id"]).min()
    )

    truth = items.set_index("item_id")["truth"]
    trained = result.labels.set_index("item_id")["label"]
    assert (trained == truth[trained.index]).mean() >= 0.99
    majority = consensus_labels(annotations, config)  # 2-1 splits go to review under the vote
    assert result.n_consensus > majority.n_consensus  # more items trained on
    assert len(trained) / len(items) == pytest.approx(0.95)

    annotators = result.annotators.set_index("annotator")["crowdlab_quality"]
    assert annotators.idxmin() == "chidi" and annotators["alice"] > annotators["chidi"] + 0.1


def test_a_reviewers_label_wins_and_leaves_the_review_queue() -> None:
    items = _items(120)
    annotations = _annotate(items)
    config = ConsensusConfig(method="crowdlab", review_budget=6)
    first = crowdlab_consensus(annotations, config, items, CLASSES, TEXT)
    assert first.n_queued == 6
    picked = str(first.queue["item_id"].iloc[0])
    decided = pd.DataFrame({"item_id": [picked], "label": ["rotten"], "reviewer": ["rev"]})
    second = crowdlab_consensus(annotations, config, items, CLASSES, TEXT, decided)
    assert (second.n_adjudicated, second.n_queued) == (1, 5)
    labels = second.labels.set_index("item_id")
    assert labels.loc[picked, ["label", "source", "reviewer"]].tolist() == ["rotten", "adjudicated", "rev"]


def test_out_of_fold_scores_keep_a_group_together() -> None:
    # Each movie's snippets share a token and a label: only a leak across the folds predicts them.
    rng = np.random.default_rng(2)
    movie = np.repeat(np.arange(40), 5)
    label = rng.integers(0, 2, 40)[movie]
    frame = pd.DataFrame({"text": [f"movie{m} scene" for m in movie], "movie": movie})
    grouped = predict_oof(frame, label, 2, Inputs(text_col="text", group_col="movie"))
    leaky = predict_oof(frame, label, 2, Inputs(text_col="text"))
    assert (leaky.argmax(axis=1) == label).mean() > 0.95
    assert (grouped.argmax(axis=1) == label).mean() < 0.75


def test_activelab_asks_for_another_annotation_where_the_two_disagree() -> None:
    items = _items(200)
    annotations = _annotate(items, overlap=2)
    matrix = annotation_matrix(annotations, items["item_id"], CLASSES)
    proba = predict_oof(items, majority_codes(matrix, 2), 2, TEXT)
    extra = plan_extra_annotations(matrix, proba, np.zeros((0, 2)), max_annotations=3, max_extra=40)
    assert 0 < len(extra) <= 40
    split = matrix.nunique(axis=1) > 1
    assert split[extra].mean() > 3 * split.mean()  # disputed items first
    full = annotation_matrix(_annotate(items, overlap=3), items["item_id"], CLASSES)
    assert plan_extra_annotations(full, proba, np.zeros((0, 2)), max_annotations=3).empty  # none above the cap


def test_label_issues_find_planted_flips_on_tabular_data() -> None:
    x, y = make_classification(n_samples=600, n_features=8, n_informative=5, random_state=0)
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(y), 30, replace=False)
    noisy = y.copy()
    noisy[flipped] = 1 - noisy[flipped]
    frame = pd.DataFrame(x, columns=[f"f{k}" for k in range(8)])
    proba = predict_oof(frame, noisy, 2, Inputs(feature_cols=tuple(frame.columns)))
    mask, confidence = flag_label_issues(noisy, proba)
    recall = mask[flipped].mean()
    precision = mask[flipped].sum() / mask.sum()
    assert recall >= 0.6 and precision >= 0.2
    assert confidence[flipped].mean() < confidence.mean()


def test_crowdlab_matrix_rejects_a_label_outside_the_classes() -> None:
    bad = pd.DataFrame({"item_id": ["a"], "annotator": ["x"], "label": ["plot"]})
    with pytest.raises(ValueError, match="not among the classes"):
        annotation_matrix(bad, ["a"], CLASSES)
    assert score_crowdlab(annotation_matrix(bad.iloc[:0], [], CLASSES), np.zeros((0, 2)), CLASSES).items.empty


def test_excluded_label_issues_are_quarantined_with_their_score_and_every_row_is_accounted_for() -> None:
    from tasks.columns import ITEM_ID
    from tasks.labels import LabelsConfig, apply_label_issues, labels_from_column

    x, y = make_classification(n_samples=400, n_features=6, n_informative=4, random_state=1)
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(y), 20, replace=False)
    y[flipped] = 1 - y[flipped]
    names = np.array(["negative", "positive"])
    frame = pd.DataFrame(x, columns=[f"x{k}" for k in range(6)]).assign(
        **{ITEM_ID: [f"r{k}" for k in range(len(y))], "target": names[y]}
    )
    config = LabelsConfig(source="column", column="target", classes=list(names), label_issues="exclude")
    outcome = labels_from_column(frame, config)
    inputs = Inputs(feature_cols=tuple(f"x{k}" for k in range(6)))
    proba = predict_oof(outcome.data, pd.Index(names).get_indexer(pd.Index(outcome.data["sluice_label"])), 2, inputs)
    codes = pd.Index(names).get_indexer(pd.Index(outcome.data["sluice_label"]))
    flagged, confidence = flag_label_issues(codes, proba)
    suggested = names[proba.argmax(axis=1)].tolist()
    result = apply_label_issues(outcome, flagged, confidence, suggested, "exclude")

    assert len(result.data) + len(result.quarantine) == len(frame)  # nothing dropped silently
    planted = set(frame[ITEM_ID].iloc[flipped])
    caught = set(result.quarantine[ITEM_ID])
    assert len(caught & planted) >= 10 and len(caught & planted) / len(caught) >= 0.1  # recall, precision
    assert (result.quarantine["step"] == "label_issues").all()
    assert result.quarantine["reason"].str.contains(r"probability 0\.\d{3} and suggests").all()
    reported = apply_label_issues(outcome, flagged, confidence, suggested, "report")
    assert len(reported.data) == len(frame) and len(reported.issues) == flagged.sum()


def test_oof_from_training_scores_every_row_with_the_pipelines_model_trained_without_it() -> None:
    from tasks.label_quality import oof_from_training
    from tasks.train import TrainConfig

    x, y = make_classification(n_samples=240, n_features=6, n_informative=4, class_sep=1.5, random_state=4)
    rng = np.random.default_rng(4)
    flipped = rng.choice(len(y), 12, replace=False)
    kept = np.setdiff1d(np.arange(len(y)), flipped)
    y[flipped] = 1 - y[flipped]
    names = ["negative", "positive"]
    # 48 groups of 5 rows sharing a group id: a group never scores itself
    frame = pd.DataFrame(x, columns=[f"x{k}" for k in range(6)]).assign(
        sluice_label=np.asarray(names)[y], batch=np.repeat(np.arange(48), 5)
    )
    config = TrainConfig(
        task="tabular", architecture="mlp", hidden=[16], epochs=60, patience=3, batch_size=32, lr=0.01, seed=0
    )
    inputs = Inputs(feature_cols=tuple(f"x{k}" for k in range(6)), group_col="batch")

    proba = oof_from_training(
        frame, config=config, label_col="sluice_label", classes=names, inputs=inputs, folds=3, max_epochs=6
    )

    assert proba.shape == (240, 2) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    # out of fold: the flipped rows' given labels look unlikely, since no model saw them labelled so
    assert proba[flipped, y[flipped]].mean() < 0.5 < proba[kept, y[kept]].mean()
    mask, _ = flag_label_issues(y, proba)
    assert mask[flipped].mean() >= 0.4 and mask[flipped].sum() >= 0.2 * mask.sum()


def test_relabel_answers_replace_given_labels_and_an_answer_outside_the_classes_is_quarantined() -> None:
    from tasks.columns import ITEM_ID, LABEL
    from tasks.labels import LabelsConfig, apply_label_issues, apply_relabels, labels_from_column

    frame = pd.DataFrame({ITEM_ID: ["a", "b", "c", "d"], "target": ["fresh", "fresh", "rotten", "rotten"]})
    config = LabelsConfig(source="column", column="target", classes=CLASSES, label_issues="relabel")
    answers = pd.DataFrame({ITEM_ID: ["a", "b"], "label": ["rotten", "meh"], "reviewer": ["ana", "ana"]})

    outcome = apply_relabels(labels_from_column(frame, config), answers, CLASSES)
    assert outcome.data.set_index(ITEM_ID)[LABEL].to_dict() == {"a": "rotten", "c": "rotten", "d": "rotten"}
    assert outcome.quarantine[ITEM_ID].tolist() == ["b"] and "meh" in outcome.quarantine["reason"].iloc[0]
    # flagged now: "a" has a person's answer and is trained on; "d" waits for one
    flagged = np.array([True, False, True])
    result = apply_label_issues(outcome, flagged, np.array([0.1, 0.9, 0.2]), ["fresh", "rotten", "fresh"], "relabel")
    assert result.data[ITEM_ID].tolist() == ["a", "c"] and result.awaiting[ITEM_ID].tolist() == ["d"]
    assert result.issues.set_index(ITEM_ID)["awaiting_relabel"].to_dict() == {"a": False, "d": True}
    assert len(result.data) + len(result.awaiting) + len(result.quarantine) == len(frame)
