"""Agreement metrics against published worked examples, reference packages, and their error paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal

import krippendorff
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from tasks.agreement import (
    agreement_report,
    annotator_agreement,
    cohen_kappa,
    fleiss_kappa,
    item_agreement,
    krippendorff_alpha,
    label_agreement,
    pairwise_kappa,
    plot_kappa_heatmap,
)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers,
# 12 units, values 1-5, "." = missing. Published: nominal 0.743, ordinal 0.815, interval 0.849.
KRIPPENDORFF_2011 = {
    "A": "1 2 3 3 2 1 4 1 2 . . .",
    "B": "1 2 3 3 2 2 4 1 2 5 . 3",
    "C": ". 3 3 3 2 3 4 2 2 5 1 .",
    "D": "1 2 3 3 2 4 4 1 2 5 1 .",
}

# Fleiss (1971) as worked on Wikipedia's "Fleiss' kappa": 10 subjects x 5 categories, 14 raters each.
FLEISS_1971 = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def _long(rows: list[tuple[str, str, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item_id", "annotator", "label"])


def _krippendorff_2011() -> pd.DataFrame:
    rows = [
        (f"unit{unit}", observer, value)
        for observer, values in KRIPPENDORFF_2011.items()
        for unit, value in enumerate(values.split(), start=1)
        if value != "."
    ]
    return _long(rows)  # type: ignore[arg-type]


def _from_count_table(table: list[list[int]]) -> pd.DataFrame:
    """Long frame from an items x categories count table (rater names are arbitrary per item)."""
    rows = []
    for subject, counts in enumerate(table):
        labels = [f"cat{c}" for c, n in enumerate(counts) for _ in range(n)]
        rows += [(f"s{subject}", f"rater{r}", label) for r, label in enumerate(labels)]
    return _long(rows)  # type: ignore[arg-type]


def _random_annotations(
    seed: int, n_items: int = 200, n_annotators: int = 6, n_labels: int = 4, p_missing: float = 0.4
) -> tuple[pd.DataFrame, npt.NDArray[np.float64]]:
    """Random long frame with gaps plus the annotator x item matrix the krippendorff package takes."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_labels, n_items)
    noise = rng.integers(0, n_labels, (n_annotators, n_items))
    values = np.where(rng.random((n_annotators, n_items)) < 0.6, truth, noise).astype(float)
    values[rng.random(values.shape) < p_missing] = np.nan
    a, i = np.nonzero(~np.isnan(values))
    df = pd.DataFrame(
        {
            "item_id": [f"i{x}" for x in i],
            "annotator": [f"a{x}" for x in a],
            "label": [str(int(v)) for v in values[a, i]],
        }
    )
    return df, values


# -- Krippendorff's alpha ---------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_alpha_matches_krippendorff_2011_worked_example(level: str, published: float) -> None:
    assert krippendorff_alpha(_krippendorff_2011(), level) == pytest.approx(published, abs=5e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_alpha_matches_krippendorff_package_on_random_data_with_gaps(
    seed: int, level: Literal["nominal", "ordinal", "interval"]
) -> None:
    df, matrix = _random_annotations(seed)
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement=level)
    assert krippendorff_alpha(df, level) == pytest.approx(expected, abs=1e-9)


def test_ordinal_alpha_follows_the_given_order_not_the_spelling() -> None:
    words = {"1": "low", "2": "mid", "3": "high", "4": "top", "5": "max"}
    df = _krippendorff_2011().assign(label=lambda d: d["label"].map(words))
    order = ["low", "mid", "high", "top", "max"]
    assert krippendorff_alpha(df, "ordinal", order=order) == pytest.approx(0.815, abs=5e-4)
    # Equally spaced ranks reproduce the interval result on 1..5; a mapping gives explicit values.
    assert krippendorff_alpha(df, "interval", order=order) == pytest.approx(0.849, abs=5e-4)
    mapping = {w: float(k) for k, w in words.items()}
    assert krippendorff_alpha(df, "interval", order=mapping) == pytest.approx(0.849, abs=5e-4)


def test_unpairable_items_drop_out_of_alpha() -> None:
    df = _krippendorff_2011()
    extra = _long([("lonely", "A", "5"), ("lonely2", "B", "1")])
    assert krippendorff_alpha(pd.concat([df, extra])) == pytest.approx(krippendorff_alpha(df))


def test_alpha_is_one_for_perfect_agreement_and_nan_without_variation() -> None:
    perfect = _long([("i1", "a", "x"), ("i1", "b", "x"), ("i2", "a", "y"), ("i2", "b", "y")])
    assert krippendorff_alpha(perfect) == pytest.approx(1.0)
    constant = _long([("i1", "a", "x"), ("i1", "b", "x"), ("i2", "a", "x"), ("i2", "b", "x")])
    assert np.isnan(krippendorff_alpha(constant))


def test_missing_labels_count_as_no_annotation() -> None:
    df = _krippendorff_2011()
    with_gaps = pd.concat([df, _long([("unit11", "A", None), ("unit12", "C", None)])])
    assert krippendorff_alpha(with_gaps) == pytest.approx(krippendorff_alpha(df))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": "ratio"}, "valid levels: nominal, ordinal, interval"),
        ({"level": "ordinal"}, "pass order="),
        ({"level": "interval"}, "numeric labels"),
        ({"level": "ordinal", "order": ["fresh", "rotten"]}, "'plot' are not in `order`"),
    ],
)
def test_alpha_errors_name_the_problem_and_the_fix(kwargs: dict[str, object], message: str) -> None:
    df = _long([("i1", "a", "fresh"), ("i1", "b", "rotten"), ("i2", "a", "plot"), ("i2", "b", "plot")])
    with pytest.raises(ValueError, match=message):
        krippendorff_alpha(df, **kwargs)  # type: ignore[arg-type]


def test_alpha_without_overlap_says_to_add_overlap() -> None:
    with pytest.raises(ValueError, match="overlap"):
        krippendorff_alpha(_long([("i1", "a", "x"), ("i2", "b", "y")]))


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"item_id": ["i1"], "annotator": ["a"]}), "'label' missing"),
        (_long([("i1", "a", "x"), ("i1", "a", "y"), ("i1", "b", "x")]), "item 'i1' by 'a'"),
        (_long([(None, "a", "x"), ("i1", "b", "x")]), "no item_id"),  # type: ignore[list-item]
    ],
)
def test_malformed_annotations_are_refused(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        krippendorff_alpha(frame)


# -- Fleiss' and Cohen's kappa ----------------------------------------------------------------------


def test_fleiss_matches_the_1971_worked_example() -> None:
    assert fleiss_kappa(_from_count_table(FLEISS_1971)) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_refuses_uneven_counts_with_the_breakdown_and_the_fix() -> None:
    df = _from_count_table([[2, 1], [1, 2], [2, 0]])
    with pytest.raises(ValueError) as error:
        fleiss_kappa(df)
    message = str(error.value)
    assert "(3 ratings on 2 items, 2 ratings on 1 item)" in message
    assert "cut every item to 3 ratings" in message
    assert "krippendorff_alpha" in message


@pytest.mark.parametrize("seed", range(5))
def test_cohen_kappa_equals_sklearn_on_shared_items(seed: int) -> None:
    df, matrix = _random_annotations(seed, n_annotators=2, p_missing=0.3)
    shared = ~np.isnan(matrix).any(axis=0)
    expected = cohen_kappa_score(matrix[0, shared], matrix[1, shared])
    assert cohen_kappa(df, "a0", "a1") == pytest.approx(expected, abs=1e-12)


def test_pairwise_matrix_is_symmetric_matches_cohen_and_is_nan_without_overlap() -> None:
    df, _ = _random_annotations(3, n_annotators=4, p_missing=0.2)
    loner = _long([("only-mine", "z", "0"), ("only-mine-2", "z", "1")])
    matrix = pairwise_kappa(pd.concat([df, loner]))
    assert list(matrix.index) == list(matrix.columns) == ["a0", "a1", "a2", "a3", "z"]
    np.testing.assert_allclose(matrix.to_numpy(), matrix.to_numpy().T, equal_nan=True)
    for a, b in [("a0", "a1"), ("a1", "a3"), ("a2", "a0")]:
        assert matrix.loc[a, b] == pytest.approx(cohen_kappa(df, a, b))
    assert matrix.loc["z"].drop("z").isna().all()


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [("a0", "nobody", "annotator 'nobody' has no annotations"), ("a0", "z", "share no items")],
)
def test_cohen_kappa_errors(a: str, b: str, message: str) -> None:
    df = pd.concat([_random_annotations(0)[0], _long([("only-mine", "z", "0")])])
    with pytest.raises(ValueError, match=message):
        cohen_kappa(df, a, b)


# -- per annotator / item / label -------------------------------------------------------------------


def test_leave_one_out_consensus_compares_each_annotation_with_the_others() -> None:
    df = _long(
        [
            # i1: a and b agree, c dissents; a's others (b, c) tie -> a not compared on i1.
            ("i1", "a", "x"), ("i1", "b", "x"), ("i1", "c", "y"),
            # i2: all agree.
            ("i2", "a", "y"), ("i2", "b", "y"), ("i2", "c", "y"),
            # i3: c alone: nobody to compare with.
            ("i3", "c", "x"),
        ]
    )  # fmt: skip
    table = annotator_agreement(df).set_index("annotator")
    assert table.loc["a", "n_items"] == 2 and table.loc["a", "n_compared"] == 1
    assert table.loc["c", "n_items"] == 3 and table.loc["c", "n_compared"] == 2
    assert table.loc["c", "agreement"] == pytest.approx(0.5)  # wrong on i1 (others say x), right on i2
    assert table.loc["b", "agreement"] == pytest.approx(1.0)


def test_noisy_annotator_ranks_last() -> None:
    rng = np.random.default_rng(7)
    truth = rng.choice(["fresh", "rotten", "plot"], 300)
    rows = []
    for i, label in enumerate(truth):
        for annotator, error in [("ann", 0.05), ("bea", 0.05), ("cal", 0.05), ("noisy", 0.6)]:
            given = rng.choice(["fresh", "rotten", "plot"]) if rng.random() < error else label
            rows.append((f"t{i}", annotator, given))
    table = annotator_agreement(_long(rows))
    assert table.iloc[0]["annotator"] == "noisy"  # lowest kappa first
    assert table.iloc[0]["kappa"] < 0.6 < table.iloc[1]["kappa"]


def test_item_agreement_reports_majority_share_and_ties() -> None:
    df = _long([("i1", "a", "x"), ("i1", "b", "x"), ("i1", "c", "y"), ("i2", "a", "x"), ("i2", "b", "y")])
    table = item_agreement(df).set_index("item_id")
    assert table.loc["i1", "majority_label"] == "x"
    assert table.loc["i1", "majority_share"] == pytest.approx(2 / 3)
    assert table.loc["i1", "n_ratings"] == 3 and not table.loc["i1", "tied"]
    assert table.loc["i2", "tied"] and table["majority_label"].isna()["i2"]


def test_label_specific_agreement_is_positive_specific_agreement_for_two_raters() -> None:
    # a = 3 items both say x, b + c = 2 items exactly one says x: PSA(x) = 2a / (2a + b + c) = 6 / 8.
    pairs = [("x", "x")] * 3 + [("x", "y"), ("y", "x")] + [("y", "y")] * 4
    rows = [(f"i{k}", rater, label) for k, pair in enumerate(pairs) for rater, label in zip("ab", pair, strict=True)]
    table = label_agreement(_long(rows)).set_index("label")  # type: ignore[arg-type]
    assert table.loc["x", "specific_agreement"] == pytest.approx(6 / 8)
    assert table.loc["y", "specific_agreement"] == pytest.approx(8 / 10)


def test_label_alpha_is_one_vs_rest_krippendorff() -> None:
    df, matrix = _random_annotations(4)
    table = label_agreement(df).set_index("label")
    for label in ["0", "2"]:
        binary = np.where(np.isnan(matrix), np.nan, (matrix == int(label)).astype(float))
        expected = krippendorff.alpha(reliability_data=binary, level_of_measurement="nominal")
        assert table.loc[label, "alpha"] == pytest.approx(expected, abs=1e-9)


# -- the report and the heatmap ---------------------------------------------------------------------


def test_report_carries_every_figure_and_renders_markdown() -> None:
    report = agreement_report(_krippendorff_2011())
    assert report.alpha == pytest.approx(0.743, abs=5e-4)
    assert report.fleiss is None and "same number of ratings" in (report.fleiss_reason or "")
    assert (report.n_items, report.n_annotations, report.n_annotators) == (12, 41, 4)
    assert report.pairwise.shape == (4, 4) and len(report.per_item) == 12 and len(report.per_label) == 5
    text = report.to_markdown()
    assert "Krippendorff's alpha (nominal) | 0.743" in text
    assert "| C | 10 | 9 | 0.778 |" in text  # the observer who disagrees most, listed first
    assert text.index("| C |") < text.index("| A |")


def test_report_has_fleiss_when_counts_are_even() -> None:
    report = agreement_report(_from_count_table(FLEISS_1971))
    assert report.fleiss == pytest.approx(0.210, abs=5e-4) and report.fleiss_reason is None


def test_heatmap_writes_a_png(tmp_path: Path) -> None:
    df, _ = _random_annotations(5, n_annotators=5)
    path = plot_kappa_heatmap(pairwise_kappa(df), tmp_path / "plots" / "kappa.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_importing_agreement_pulls_in_no_orchestration_or_plotting() -> None:
    code = (
        "import sys, tasks.agreement, tasks.consensus; "
        "print(sorted(m for m in ('prefect', 'mlflow', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert out.stdout.strip() == "[]"
