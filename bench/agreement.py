"""Benchmark: agreement report + consensus on 1,000,000 annotations (goal <= 5 s).

333,334 items x 3 annotators drawn from 20 annotators with error rates from 2% to 45%, 3 labels.
Baseline, measured in the same process: the `krippendorff` PyPI package's nominal alpha on the same
data, including building the annotator x item matrix it needs from the long frame (what a caller
must do); its time on a ready-made matrix is printed too.

Run from the repository root: .venv/bin/python -m bench.agreement
"""

from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np
import numpy.typing as npt
import pandas as pd

from tasks.agreement import agreement_report, krippendorff_alpha
from tasks.consensus import ConsensusConfig, check_agreement_gate, consensus_labels

N_ITEMS = 333_334
N_ANNOTATORS = 20
OVERLAP = 3
LABELS = np.array(["fresh", "rotten", "plot"])
GOAL_S = 5.0


def make_annotations(seed: int = 0) -> pd.DataFrame:
    """Long-format annotations: item_id, annotator, label."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(LABELS), N_ITEMS)
    # OVERLAP distinct annotators per item: the first columns of a random permutation per row.
    who = np.argsort(rng.random((N_ITEMS, N_ANNOTATORS)), axis=1)[:, :OVERLAP]
    error_rate = np.linspace(0.02, 0.45, N_ANNOTATORS)
    item = np.repeat(np.arange(N_ITEMS), OVERLAP)
    annotator = who.ravel()
    wrong = rng.random(len(item)) < error_rate[annotator]
    # A wrong label is one of the other labels, uniformly.
    label = np.where(wrong, (truth[item] + rng.integers(1, len(LABELS), len(item))) % len(LABELS), truth[item])
    item_names = np.char.add("item-", np.char.zfill(np.arange(N_ITEMS).astype(str), 6))
    annotator_names = np.array([f"annotator-{a:02d}" for a in range(N_ANNOTATORS)])
    return pd.DataFrame({"item_id": item_names[item], "annotator": annotator_names[annotator], "label": LABELS[label]})


def to_reliability_matrix(df: pd.DataFrame) -> npt.NDArray[np.float64]:
    """The annotator x item matrix of label codes (NaN = not labelled) the krippendorff package takes."""
    item, _ = pd.factorize(df["item_id"])
    annotator, annotators = pd.factorize(df["annotator"])
    label, _ = pd.factorize(df["label"])
    matrix = np.full((len(annotators), int(item.max()) + 1), np.nan)
    matrix[annotator, item] = label
    return matrix


def main() -> None:
    import krippendorff

    df = make_annotations()
    n = len(df)
    config = ConsensusConfig()

    start = time.perf_counter()
    report = agreement_report(df)
    result = consensus_labels(df, config)
    decision = check_agreement_gate(report, config)
    ours = time.perf_counter() - start

    start = time.perf_counter()
    alpha_only = krippendorff_alpha(df)
    ours_alpha = time.perf_counter() - start

    start = time.perf_counter()
    matrix = to_reliability_matrix(df)
    built = time.perf_counter()
    package_alpha = krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")
    package = time.perf_counter() - start
    package_matrix_only = time.perf_counter() - built

    if not np.isclose(alpha_only, package_alpha, atol=1e-9):
        raise SystemExit(f"alpha differs from the krippendorff package: {alpha_only} vs {package_alpha}")
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {sys.version.split()[0]}",
        f"alpha {report.alpha:.4f}, fleiss {report.fleiss:.4f}, consensus {result.n_consensus:,}, "
        f"queued {result.n_queued:,}, gate {'passed' if decision.passed else 'failed'} "
        f"(flagged: {', '.join(decision.low_agreement_annotators) or 'none'})",
        f"agreement on {n:,} annotations: {ours:.2f} s (goal <= {GOAL_S:.0f} s); "
        f"krippendorff package: {package:.2f} s; ratio {ours / package:.2f}",
        "  ours = alpha + fleiss + pairwise kappa + per annotator/item/label + consensus + gate;"
        " package = its nominal alpha only, incl. building its matrix from the long frame",
        f"alpha alone: ours {ours_alpha:.2f} s vs package {package:.2f} s "
        f"(ratio {ours_alpha / package:.2f}); package on a ready-made matrix {package_matrix_only:.2f} s",
    ]
    print("\n".join(lines))  # noqa: T201 -- a benchmark reports on stdout


if __name__ == "__main__":
    main()
