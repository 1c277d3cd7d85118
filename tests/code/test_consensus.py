"""Consensus labels, the adjudication queue and the agreement gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from tasks.agreement import agreement_report
from tasks.consensus import (
    AgreementGateError,
    ConsensusConfig,
    GateDecision,
    check_agreement_gate,
    consensus_labels,
    gold_exclusions,
    score_gold,
)

LABELS = ["fresh", "rotten", "plot"]


def _long(rows: list[tuple[str, str, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item_id", "annotator", "label"])


def _simulated(error_rates: dict[str, float], n_items: int = 300, overlap: int = 3, seed: int = 0) -> pd.DataFrame:
    """`overlap` annotators per item drawn from `error_rates`; a wrong label is a random other label."""
    rng = np.random.default_rng(seed)
    names = list(error_rates)
    rows = []
    for i in range(n_items):
        truth = rng.integers(len(LABELS))
        for name in rng.choice(names, overlap, replace=False):
            wrong = rng.random() < error_rates[name]
            label = (truth + rng.integers(1, len(LABELS))) % len(LABELS) if wrong else truth
            rows.append((f"t{i}", str(name), LABELS[label]))
    return _long(rows)  # type: ignore[arg-type]


MIXED = _long(
    [
        ("clear", "alice", "fresh"), ("clear", "bob", "fresh"), ("clear", "carol", "rotten"),
        ("tie", "alice", "fresh"), ("tie", "bob", "rotten"),
        ("single", "carol", "plot"),
        ("weak", "alice", "fresh"), ("weak", "bob", "fresh"), ("weak", "carol", "rotten"),
        ("weak", "dan", "plot"), ("weak", "eve", "plot"), ("weak", "finn", "rotten"),
        ("unlabelled", "alice", None),
    ]
)  # fmt: skip


def test_majority_becomes_the_label_and_the_rest_go_to_the_queue_with_a_reason() -> None:
    result = consensus_labels(MIXED, ConsensusConfig())
    labels = result.labels.set_index("item_id")
    assert list(labels.index) == ["clear"]
    assert labels.loc["clear", "label"] == "fresh"
    assert labels.loc["clear", "agreement"] == pytest.approx(2 / 3)
    assert labels.loc["clear", "source"] == "consensus" and labels.loc["clear", "n_votes"] == 3
    queue = result.queue.set_index("item_id")
    assert queue["reason"].to_dict() == {
        "tie": "tie",
        "single": "too_few_votes",
        "weak": "tie",  # fresh 2, rotten 2, plot 2
        "unlabelled": "too_few_votes",
    }
    assert queue.loc["tie", "votes"] == "alice:fresh, bob:rotten"
    assert queue.loc["single", "votes"] == "carol:plot"
    assert queue.loc["unlabelled", "n_votes"] == 0
    assert (result.n_items, result.n_consensus, result.n_adjudicated, result.n_queued) == (5, 1, 0, 4)


@pytest.mark.parametrize(
    ("config", "expected_reason"),
    [
        (ConsensusConfig(min_item_agreement=0.7), "low_agreement"),  # 2 of 3 = 0.67 < 0.7
        (ConsensusConfig(min_votes=4), "too_few_votes"),
        (ConsensusConfig(min_item_agreement=0.6), None),  # 0.67 passes
    ],
)
def test_thresholds_send_a_two_of_three_majority_to_the_right_place(
    config: ConsensusConfig, expected_reason: str | None
) -> None:
    df = _long([("i", "a", "fresh"), ("i", "b", "fresh"), ("i", "c", "rotten")])
    result = consensus_labels(df, config)
    if expected_reason is None:
        assert result.labels["item_id"].tolist() == ["i"] and result.queue.empty
    else:
        assert result.labels.empty
        assert result.queue["reason"].tolist() == [expected_reason]
        assert "a:fresh, b:fresh, c:rotten" == result.queue["votes"].iloc[0]


def test_low_agreement_detail_names_the_majority_and_the_threshold() -> None:
    df = _long([("i", "a", "x"), ("i", "b", "x"), ("i", "c", "y"), ("i", "d", "z"), ("i", "e", "w")])
    queue = consensus_labels(df, ConsensusConfig()).queue
    assert queue["reason"].tolist() == ["low_agreement"]
    assert queue["detail"].iloc[0] == "majority 'x' has 2 of 5 votes (0.4), below min_item_agreement=0.5"


def test_adjudication_wins_over_consensus_and_empties_the_queue() -> None:
    adjudicated = pd.DataFrame({"item_id": ["tie", "clear"], "label": ["rotten", "plot"], "reviewer": ["rita", "rita"]})
    result = consensus_labels(MIXED, ConsensusConfig(), adjudicated)
    labels = result.labels.set_index("item_id")
    assert labels.loc["tie", "label"] == "rotten" and labels.loc["tie", "source"] == "adjudicated"
    assert labels.loc["tie", "agreement"] == pytest.approx(0.5)  # bob said rotten, alice fresh
    assert labels.loc["clear", "label"] == "plot"  # the reviewer overrides a 2-of-3 majority
    assert labels.loc["clear", "reviewer"] == "rita"
    assert "tie" not in set(result.queue["item_id"])
    assert (result.n_consensus, result.n_adjudicated, result.n_queued) == (0, 2, 3)


@pytest.mark.parametrize(
    ("adjudicated", "message"),
    [
        (pd.DataFrame({"item_id": ["ghost"], "label": ["fresh"]}), "not among the annotated items"),
        (pd.DataFrame({"item_id": ["tie", "tie"], "label": ["fresh", "rotten"]}), "more than once"),
        (pd.DataFrame({"item_id": ["tie"], "label": [None]}), "have no label"),
        (pd.DataFrame({"item_id": ["tie"]}), "label"),
    ],
)
def test_bad_adjudications_are_refused(adjudicated: pd.DataFrame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        consensus_labels(MIXED, ConsensusConfig(), adjudicated)


@pytest.mark.parametrize("seed", range(4))
def test_every_item_lands_in_exactly_one_place(seed: int) -> None:
    rng = np.random.default_rng(seed)
    df = _simulated({n: 0.3 for n in "abcdef"}, n_items=400, overlap=int(rng.integers(2, 5)), seed=seed)
    # Thin out annotations at random so some items have 0 (a missing label) or 1 votes.
    df.loc[rng.random(len(df)) < 0.3, "label"] = None
    items = df["item_id"].drop_duplicates()
    picked = items.sample(40, random_state=seed)
    adjudicated = pd.DataFrame({"item_id": picked, "label": "fresh", "reviewer": "rita"})
    result = consensus_labels(df, ConsensusConfig(), adjudicated)
    placed = pd.concat([result.labels["item_id"], result.queue["item_id"]])
    assert not placed.duplicated().any()
    assert set(placed) == set(items)
    assert result.n_consensus + result.n_adjudicated + result.n_queued == result.n_items == len(items)
    assert set(result.labels.loc[result.labels["source"] == "adjudicated", "item_id"]) == set(picked)
    assert set(result.queue["reason"]) <= {"too_few_votes", "tie", "low_agreement"}


def test_gate_passes_a_careful_team() -> None:
    df = _simulated({n: 0.05 for n in ["ann", "bea", "cal", "dev", "eli"]})
    decision = check_agreement_gate(agreement_report(df), ConsensusConfig())
    assert decision == GateDecision(passed=True, reasons=[], low_agreement_annotators=[])


def test_gate_names_the_noisy_annotator() -> None:
    df = _simulated({**{name: 0.03 for name in "abcdefgh"}, "noisy": 0.55}, n_items=600)
    report = agreement_report(df)
    decision = check_agreement_gate(report, ConsensusConfig())
    assert not decision.passed
    assert decision.low_agreement_annotators == ["noisy"]
    assert any(r.startswith("annotator 'noisy' has kappa") for r in decision.reasons)
    assert report.alpha >= 0.667  # the team as a whole is fine: only the annotator fails the gate


def test_gate_fails_on_low_alpha_with_a_plain_reason() -> None:
    df = _simulated({n: 0.45 for n in ["ann", "bea", "cal", "dev"]})
    report = agreement_report(df)
    decision = check_agreement_gate(report, ConsensusConfig(annotator_kappa_threshold=-1.0))
    assert not decision.passed
    assert decision.reasons == [f"Krippendorff's alpha {report.alpha:.3f} is below the threshold 0.667"]


def test_gate_does_not_judge_annotators_on_too_few_items() -> None:
    df = pd.concat(
        [
            _simulated({n: 0.05 for n in ["ann", "bea", "cal", "dev"]}),
            _long([("t0", "rare", "plot"), ("t1", "rare", "plot"), ("t2", "rare", "plot")]),
        ]
    )
    decision = check_agreement_gate(agreement_report(df), ConsensusConfig(min_annotator_items=10))
    assert "rare" not in decision.low_agreement_annotators


def test_gate_error_carries_the_reasons_and_the_report() -> None:
    decision = GateDecision(passed=False, reasons=["Krippendorff's alpha 0.580 is below the threshold 0.667"])
    error = AgreementGateError(decision, "## Inter-annotator agreement")
    assert isinstance(error, RuntimeError) and error.decision is decision
    assert "alpha 0.580 is below the threshold 0.667" in str(error)
    assert str(error).endswith("## Inter-annotator agreement")


@pytest.mark.parametrize("bad", [{"min_votes": 0}, {"min_item_agreement": 1.5}, {"overlap": 0}, {"min_vote": 2}])
def test_config_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        ConsensusConfig(**bad)  # type: ignore[arg-type]


def test_gold_accuracy_and_who_is_excluded() -> None:
    gold = pd.DataFrame({"item_id": ["g1", "g2", "g3", "g4"], "label": ["fresh", "rotten", "fresh", "rotten"]})
    answers = pd.DataFrame(
        {
            "item_id": ["g1", "g2", "g3", "g4"] * 2 + ["g1"],
            "annotator": ["ann"] * 4 + ["bob"] * 4 + ["new"],
            "label": ["fresh", "rotten", "fresh", "fresh"] + ["rotten", "rotten", "rotten", "fresh"] + ["rotten"],
        }
    )
    scores = score_gold(answers, gold)
    assert scores.to_dict("records") == [
        {"annotator": "new", "gold_items": 1, "gold_correct": 0, "gold_accuracy": 0.0},
        {"annotator": "bob", "gold_items": 4, "gold_correct": 1, "gold_accuracy": 0.25},
        {"annotator": "ann", "gold_items": 4, "gold_correct": 3, "gold_accuracy": 0.75},
    ]
    excluded = gold_exclusions(scores, ConsensusConfig(min_gold_accuracy=0.7, min_gold_items=3))
    # "new" answered one gold item only: not judged yet
    assert excluded == {
        "bob": "gold accuracy 25% (1 of 4 gold items) is below consensus.min_gold_accuracy 70%",
    }
    with pytest.raises(ValueError, match="gold file does not hold"):
        score_gold(answers.assign(item_id="other"), gold)
