"""Inter-annotator agreement on long-format annotations (one row per annotation).

Input everywhere is a DataFrame with columns `item_id`, `annotator`, `label`. A row whose
label is missing counts as no annotation. Each annotator may label an item once.

Everything is computed from integer codes with numpy (no Python loop over annotations):
the codes and the per-item tallies are built once per frame and shared by every metric.

References:
- Krippendorff, K. (2011). Computing Krippendorff's Alpha-Reliability. (coincidence matrix,
  nominal/ordinal/interval distance functions)
- Fleiss, J. L. (1971). Measuring nominal scale agreement among many raters.
- Cohen, J. (1960). A coefficient of agreement for nominal scales.
- Uebersax, J. S. (1982). A design-independent method for measuring the reliability of
  psychiatric diagnosis. (category-specific agreement for many raters)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

COLUMNS = ("item_id", "annotator", "label")
LEVELS = ("nominal", "ordinal", "interval")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
LabelOrder = Sequence[str] | Mapping[str, float]


# -- public metrics ---------------------------------------------------------------------------------


def cohen_kappa(df: pd.DataFrame, annotator_a: str, annotator_b: str) -> float:
    """Cohen's kappa between two annotators on the items both labelled.

    Returns NaN when chance agreement is 1 (both used one and the same label throughout),
    as `sklearn.metrics.cohen_kappa_score` does.

    Raises:
        ValueError: an annotator has no annotations, or the two share no items.
    """
    coded = encode_annotations(df)
    a, b = (_annotator_code(coded, name) for name in (annotator_a, annotator_b))
    label_a, label_b = coded.labels_by_item(a), coded.labels_by_item(b)
    shared = (label_a >= 0) & (label_b >= 0)
    if not shared.any():
        raise ValueError(
            f"annotators {annotator_a!r} and {annotator_b!r} share no items, so Cohen's kappa is "
            "undefined; pick two annotators who labelled the same items, or use krippendorff_alpha "
            "over everyone"
        )
    kappa = _grouped_kappa(
        np.zeros(int(shared.sum()), dtype=np.int64), label_a[shared], label_b[shared], 1, coded.n_labels
    )
    return float(kappa[0])


def fleiss_kappa(df: pd.DataFrame) -> float:
    """Fleiss' kappa; every rated item must carry the same number of ratings (at least 2).

    Raises:
        ValueError: items carry different numbers of ratings, or only one each.
    """
    return _fleiss(encode_annotations(df))


def krippendorff_alpha(df: pd.DataFrame, level: str = "nominal", order: LabelOrder | None = None) -> float:
    """Krippendorff's alpha from the coincidence matrix; missing and uneven ratings are fine.

    Items with a single rating cannot be paired and drop out (Krippendorff 2011).

    Args:
        level: "nominal", "ordinal" or "interval".
        order: ordinal: the labels from lowest to highest (or a label -> rank mapping); interval:
            a label -> value mapping, or a sequence read as equally spaced values 0, 1, 2, ...
            Not needed when the labels are numbers ("1", "2.5", ...).

    Returns:
        alpha, or NaN when every pairable annotation has the same label (no variation to judge).

    Raises:
        ValueError: unknown level, labels without the order the level needs, or no item with
            two or more ratings.
    """
    return _alpha(encode_annotations(df), level, order)


def pairwise_kappa(df: pd.DataFrame) -> pd.DataFrame:
    """Cohen's kappa for every pair of annotators (annotator x annotator, NaN where no overlap).

    The diagonal is 1.0: an annotator agrees with themself.
    """
    return _pairwise(encode_annotations(df))


def annotator_agreement(df: pd.DataFrame) -> pd.DataFrame:
    """Each annotator against the leave-one-out consensus of the others.

    For every annotation, the consensus is the majority label of the OTHER annotators on that item;
    when the others tie, or nobody else labelled the item, the annotation is not compared.

    Returns:
        One row per annotator: `annotator`, `n_items` (items labelled), `n_compared` (items with a
        leave-one-out consensus), `agreement` (share of compared items matching it) and `kappa`
        (Cohen's kappa against it), lowest kappa first.
    """
    return _per_annotator(encode_annotations(df))


def item_agreement(df: pd.DataFrame) -> pd.DataFrame:
    """Per item: `n_ratings`, `majority_label` (missing on a tie), `majority_share`, `tied`."""
    return _per_item(encode_annotations(df))


def label_agreement(df: pd.DataFrame) -> pd.DataFrame:
    """Per label: how often annotators who might agree on it actually do.

    `specific_agreement` is the category-specific agreement (Uebersax 1982; Fleiss 1971): of all
    pairs of ratings on the same item in which one rating is this label, the share in which the
    other is this label too: sum_u n_uc (n_uc - 1) / sum_u n_uc (m_u - 1). For two annotators it is
    the positive specific agreement 2a / (2a + b + c). `alpha` is nominal Krippendorff's alpha of
    "this label" against "any other label". Both use items with two or more ratings only.
    """
    return _per_label(encode_annotations(df))


@dataclass(frozen=True)
class AgreementReport:
    """Every agreement figure for one set of annotations; `to_markdown()` renders it."""

    level: str
    alpha: float
    fleiss: float | None
    fleiss_reason: str | None  # why `fleiss` is None
    pairwise: pd.DataFrame
    per_annotator: pd.DataFrame
    per_item: pd.DataFrame
    per_label: pd.DataFrame
    n_items: int
    n_annotations: int
    n_annotators: int

    def to_markdown(self, max_items: int = 10, max_matrix: int = 12) -> str:
        """A readable summary: headline figures, annotators, labels, worst items, pairwise kappa."""
        n_pairable = int((self.per_item["n_ratings"] >= 2).sum())
        fleiss = f"{self.fleiss:.3f}" if self.fleiss is not None else f"not computed: {self.fleiss_reason}"
        lines = [
            "## Inter-annotator agreement",
            "",
            "| measure | value |",
            "|---|---|",
            f"| Krippendorff's alpha ({self.level}) | {_fmt(self.alpha)} |",
            f"| Fleiss' kappa | {fleiss} |",
            f"| annotations | {self.n_annotations:,} |",
            f"| items | {self.n_items:,} ({n_pairable:,} with two or more ratings) |",
            f"| annotators | {self.n_annotators:,} |",
            "",
            "Alpha >= 0.800 supports conclusions; 0.667-0.800 only tentative ones (Krippendorff 2004).",
            "",
            "### Annotators against the others' majority (lowest kappa first)",
            "",
            _markdown_table(self.per_annotator),
            "",
            "### Labels",
            "",
            _markdown_table(self.per_label),
            "",
        ]
        worst = self.per_item[self.per_item["n_ratings"] >= 2].sort_values(
            ["majority_share", "n_ratings"], ascending=[True, False], kind="stable"
        )
        lines += [
            f"### Items with the lowest agreement ({min(max_items, len(worst))} of {len(worst):,})",
            "",
            _markdown_table(worst.head(max_items)),
            "",
        ]
        if self.n_annotators <= max_matrix:
            lines += ["### Pairwise Cohen's kappa", "", _markdown_table(self.pairwise, index=True), ""]
        else:
            lines += [f"Pairwise kappa matrix: {self.n_annotators} annotators, see the heatmap.", ""]
        return "\n".join(lines)


def agreement_report(df: pd.DataFrame, *, level: str = "nominal", order: LabelOrder | None = None) -> AgreementReport:
    """Alpha, Fleiss' kappa (when counts are even), pairwise kappa and per annotator/item/label tables."""
    coded = encode_annotations(df)
    alpha = _alpha(coded, level, order)
    fleiss: float | None
    try:
        fleiss, fleiss_reason = _fleiss(coded), None
    except ValueError as error:
        fleiss, fleiss_reason = None, str(error)
    return AgreementReport(
        level=level,
        alpha=alpha,
        fleiss=fleiss,
        fleiss_reason=fleiss_reason,
        pairwise=_pairwise(coded),
        per_annotator=_per_annotator(coded),
        per_item=_per_item(coded),
        per_label=_per_label(coded),
        n_items=coded.n_items,
        n_annotations=coded.n_annotations,
        n_annotators=coded.n_annotators,
    )


def plot_kappa_heatmap(matrix: pd.DataFrame, path: Path) -> Path:
    """Write an annotator x annotator kappa heatmap (PNG) with each cell's value; returns `path`."""
    # Figure + its Agg canvas directly: no pyplot, so no global backend switch and no GUI.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = matrix.to_numpy(dtype=float)
    n = len(matrix)
    side = max(4.0, 0.55 * n + 2.0)
    fig = Figure(figsize=(side + 1.0, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(
        np.ma.masked_invalid(values),
        cmap="RdYlGn",
        vmin=-1.0,
        vmax=1.0,
    )
    ax.set_facecolor("#dddddd")  # grey = no shared items
    ax.set_xticks(range(n), [str(c) for c in matrix.columns], rotation=60, ha="right")
    ax.set_yticks(range(n), [str(i) for i in matrix.index])
    if n <= 30:  # beyond that the numbers no longer fit in the cells
        for (row, col), value in np.ndenumerate(values):
            text = "-" if np.isnan(value) else f"{value:.2f}"
            colour = "white" if abs(value) > 0.75 else "black"  # stay legible on the darkest cells
            ax.text(col, row, text, ha="center", va="center", fontsize=8, color=colour)
    ax.set_title("Cohen's kappa between annotators")
    fig.colorbar(image, ax=ax, label="kappa")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path


# -- coding and tallies -----------------------------------------------------------------------------


def encode_annotations(df: pd.DataFrame) -> CodedAnnotations:
    """Validate an annotations frame and turn it into integer codes (shared by every metric here).

    Raises:
        ValueError: a column is missing, an item or annotator is missing, or an annotator labelled
            the same item twice.
    """
    return CodedAnnotations.from_frame(df)


class CodedAnnotations:
    """Integer codes of one annotations frame plus tallies derived from them (computed once).

    A building block for `tasks.consensus`; build it with `encode_annotations`.
    """

    def __init__(
        self,
        item: IntArray,
        annotator: IntArray,
        label: IntArray,
        items: pd.Index,
        annotators: pd.Index,
        labels: pd.Index,
    ) -> None:
        self.item, self.annotator, self.label = item, annotator, label  # one entry per annotation
        self.items, self.annotators, self.labels = items, annotators, labels
        self.n_items, self.n_annotators, self.n_labels = len(items), len(annotators), len(labels)
        self.n_annotations = len(label)

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> CodedAnnotations:
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(
                f"column(s) {', '.join(map(repr, missing))} missing from the annotations frame (columns: "
                f"{', '.join(map(str, df.columns))}); expected one row per annotation with "
                "item_id, annotator, label"
            )
        for column in ("item_id", "annotator"):
            n_null = int(df[column].isna().sum())
            if n_null:
                raise ValueError(f"{n_null} annotation(s) have no {column}; drop or fill them first")
        # Items are coded before dropping missing labels: an item nobody labelled still exists.
        # Factorizing whole columns is faster than converting subsets to numpy (arrow-backed strings).
        item_all, items = pd.factorize(df["item_id"])
        # Sorted labels give deterministic tie-breaks and column orders; a missing label codes as -1.
        label_all, labels = pd.factorize(df["label"], sort=True)
        annotator_all, annotators = pd.factorize(df["annotator"])
        has_label = label_all >= 0
        item = item_all[has_label].astype(np.int64)
        label = label_all[has_label].astype(np.int64)
        annotator = annotator_all[has_label].astype(np.int64)
        if not has_label.all():  # drop annotators whose every row lacks a label
            used = np.bincount(annotator, minlength=len(annotators)) > 0
            if not used.all():
                annotator = (np.cumsum(used) - 1)[annotator]
                annotators = annotators[used]
        coded = cls(
            item,
            annotator,
            label,
            pd.Index(items),
            pd.Index(annotators),
            pd.Index(labels),
        )
        coded._check_unique()
        return coded

    def _check_unique(self) -> None:
        key = self.item * max(self.n_annotators, 1) + self.annotator
        ordered = np.sort(key)
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        if len(repeated):
            first = int(repeated[0])
            item, annotator = divmod(first, max(self.n_annotators, 1))
            raise ValueError(
                f"{len(np.unique(repeated)):,} (item_id, annotator) pair(s) appear more than once, e.g. "
                f"item {self.items[item]!r} by {self.annotators[annotator]!r}; keep one annotation per "
                "annotator per item (e.g. the newest) before computing agreement"
            )

    def labels_by_item(self, annotator: int) -> IntArray:
        """Label code per item for one annotator; -1 where they gave none."""
        out = np.full(self.n_items, -1, dtype=np.int64)
        mine = self.annotator == annotator
        out[self.item[mine]] = self.label[mine]
        return out

    @cached_property
    def ratings(self) -> IntArray:
        """Number of ratings per item (m_u)."""
        return np.bincount(self.item, minlength=self.n_items).astype(np.int64)

    @cached_property
    def _cells(self) -> tuple[IntArray, IntArray, IntArray, IntArray]:
        """Distinct (item, label) cells: item, label, count n_uc; and each annotation's cell."""
        key = self.item * max(self.n_labels, 1) + self.label
        cells, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        item, label = np.divmod(cells, max(self.n_labels, 1))
        return item, label, counts.astype(np.int64), inverse.ravel()

    @property
    def cell_item(self) -> IntArray:
        return self._cells[0]

    @property
    def cell_label(self) -> IntArray:
        return self._cells[1]

    @property
    def cell_count(self) -> IntArray:
        return self._cells[2]

    @property
    def own_cell(self) -> IntArray:
        return self._cells[3]

    @cached_property
    def top(self) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray]:
        """Per item: top label, its count, how many labels share that count, runner-up label and count.

        Ties break towards the lower label code; the runner-up of a tie is the second tied label.
        Items without ratings have label -1 and count 0.
        """
        item, label, count = self.cell_item, self.cell_label, self.cell_count
        order = np.lexsort((label, -count, item))  # by item, then count descending, then label
        item, label, count = item[order], label[order], count[order]
        first = np.flatnonzero(np.r_[True, item[1:] != item[:-1]]) if len(item) else np.zeros(0, np.int64)
        top_label = np.full(self.n_items, -1, dtype=np.int64)
        top_count = np.zeros(self.n_items, dtype=np.int64)
        second_label = np.full(self.n_items, -1, dtype=np.int64)
        second_count = np.zeros(self.n_items, dtype=np.int64)
        top_label[item[first]], top_count[item[first]] = label[first], count[first]
        nxt = first + 1
        has_second = nxt < len(item)
        has_second[has_second] = item[nxt[has_second]] == item[first[has_second]]
        owner = item[first[has_second]]
        second_label[owner], second_count[owner] = label[nxt[has_second]], count[nxt[has_second]]
        n_top = np.bincount(item, weights=count == top_count[item], minlength=self.n_items).astype(np.int64)
        return top_label, top_count, n_top, second_label, second_count

    @cached_property
    def pairs(self) -> tuple[IntArray, IntArray]:
        """All ordered pairs (i, j), i != j, of annotations on the same item (sum of m_u (m_u - 1))."""
        order = np.argsort(self.item, kind="stable")
        sizes = self.ratings[self.item[order]]  # size of each annotation's item, in sorted order
        starts = np.cumsum(self.ratings) - self.ratings
        left = np.repeat(np.arange(len(order)), sizes)
        # Offset of each partner inside its item's run: 0..m-1 for every annotation.
        run_start = np.repeat(np.cumsum(sizes) - sizes, sizes)
        offset = np.arange(len(left)) - run_start
        right = np.repeat(starts[self.item[order]], sizes) + offset
        keep = left != right
        return order[left[keep]], order[right[keep]]


def _annotator_code(coded: CodedAnnotations, name: str) -> int:
    code = coded.annotators.get_indexer(pd.Index([name]))[0]
    if code < 0:
        known = ", ".join(map(str, coded.annotators[:10])) + (" ..." if coded.n_annotators > 10 else "")
        raise ValueError(f"annotator {name!r} has no annotations; annotators with annotations: {known}")
    return int(code)


# -- metric internals -------------------------------------------------------------------------------


def _fleiss(coded: CodedAnnotations) -> float:
    rated = coded.ratings[coded.ratings > 0]
    sizes, n_with = np.unique(rated, return_counts=True)
    if len(sizes) > 1:
        common_first = np.argsort(-n_with, kind="stable")
        breakdown = ", ".join(
            f"{sizes[i]} ratings on {n_with[i]:,} item{'s' if n_with[i] != 1 else ''}" for i in common_first
        )
        usable = sizes >= 2
        target = int(sizes[usable][np.argmax(n_with[usable])]) if usable.any() else 2
        raise ValueError(
            f"Fleiss' kappa needs the same number of ratings on every item, but items carry different "
            f"numbers ({breakdown}); cut every item to {target} ratings and drop "
            "items with fewer, or use krippendorff_alpha, which handles uneven counts"
        )
    if len(sizes) == 0 or sizes[0] < 2:
        raise ValueError("Fleiss' kappa needs at least 2 ratings per item; assign two or more annotators per item")
    m = float(sizes[0])
    n_rated = len(rated)
    count = coded.cell_count.astype(np.float64)
    # P_i = (sum_j n_ij^2 - m) / (m (m - 1)); mean over items, summed over cells in one go.
    p_bar = (np.sum(count**2) - n_rated * m) / (n_rated * m * (m - 1))
    p_j = np.bincount(coded.cell_label, weights=count, minlength=coded.n_labels) / (n_rated * m)
    p_e = float(np.sum(p_j**2))
    return _ratio(p_bar - p_e, 1.0 - p_e)


def _alpha(coded: CodedAnnotations, level: str, order: LabelOrder | None) -> float:
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r} for Krippendorff's alpha; valid levels: {', '.join(LEVELS)}")
    m = coded.ratings
    pairable = m >= 2
    if not pairable.any():
        raise ValueError(
            "no item has two or more ratings, so agreement cannot be measured; have at least two "
            "annotators label the same items (overlap >= 2)"
        )
    weight = np.where(pairable, 1.0 / np.maximum(m - 1, 1), 0.0)  # 1 / (m_u - 1), 0 if unpairable
    item, label = coded.cell_item, coded.cell_label
    count = coded.cell_count.astype(np.float64) * pairable[item]
    n_c = np.bincount(label, weights=count, minlength=coded.n_labels)
    n = float(n_c.sum())

    if level == "nominal":
        # Sum of off-diagonal coincidences = n - sum_c o_cc; expected: n^2 - sum_c n_c^2.
        o_diag = float(np.sum(weight[item] * count * (count - 1)))
        return 1.0 - _ratio((n - 1) * (n - o_diag), n * n - float(np.sum(n_c**2)))

    if level == "interval":
        value = _label_values(coded.labels, order)
        value = value - np.sum(n_c * value) / n  # centring keeps the sums of squares well conditioned
        v = value[label]
        s1 = np.bincount(item, weights=count * v, minlength=coded.n_items)
        s2 = np.bincount(item, weights=count * v * v, minlength=coded.n_items)
        # sum_{i != j in u} (v_i - v_j)^2 = 2 (m_u sum v^2 - (sum v)^2): no K x K matrix needed.
        observed = float(np.sum(weight * 2.0 * (m * s2 - s1 * s1)))
        expected = 2.0 * (n * float(np.sum(n_c * value**2)) - float(np.sum(n_c * value)) ** 2)
        return 1.0 - _ratio((n - 1) * observed, expected)

    # ordinal: the distance depends on the marginals between two ranks, so build the R x R matrix.
    rank, n_ranks = _label_ranks(coded.labels, order)
    grid = np.zeros((coded.n_items, n_ranks))
    np.add.at(grid, (item, rank[label]), count)  # add.at: a mapping may put two labels on one rank
    per_item, w = grid[pairable], weight[pairable]
    coincidence = (per_item * w[:, None]).T @ per_item - np.diag(w @ per_item)
    marg = coincidence.sum(axis=1)
    cum = np.cumsum(marg)
    lo = np.minimum.outer(np.arange(n_ranks), np.arange(n_ranks))
    hi = np.maximum.outer(np.arange(n_ranks), np.arange(n_ranks))
    # delta_ck = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2   (Krippendorff 2011, ordinal metric)
    delta = (cum[hi] - cum[lo] + marg[lo] - (marg[lo] + marg[hi]) / 2.0) ** 2
    return 1.0 - _ratio((n - 1) * float(np.sum(coincidence * delta)), float(marg @ delta @ marg))


def _label_values(labels: pd.Index, order: LabelOrder | None) -> FloatArray:
    """Numeric value of each label for interval alpha."""
    if order is None:
        numeric = pd.to_numeric(pd.Series(labels, dtype=object), errors="coerce")
        bad = [str(lab) for lab, x in zip(labels, numeric, strict=True) if pd.isna(x)]
        if bad:
            raise ValueError(
                f"interval alpha needs numeric labels, got {', '.join(map(repr, bad[:5]))}; pass "
                "order={label: value, ...} (or a list from lowest to highest for equal spacing)"
            )
        return numeric.to_numpy(dtype=np.float64)
    mapping = _order_mapping(order)
    _check_order_covers(labels, mapping)
    return np.array([mapping[str(lab)] for lab in labels], dtype=np.float64)


def _label_ranks(labels: pd.Index, order: LabelOrder | None) -> tuple[IntArray, int]:
    """Rank of each label for ordinal alpha, and the number of ranks in the order."""
    if order is None:
        numeric = pd.to_numeric(pd.Series(labels, dtype=object), errors="coerce")
        if numeric.isna().any():
            raise ValueError(
                f"ordinal alpha needs the order of the labels ({', '.join(map(repr, map(str, labels[:5])))}"
                f"{' ...' if len(labels) > 5 else ''}); pass order=[lowest, ..., highest]"
            )
        numbers = numeric.to_numpy(dtype=np.float64)
        distinct = np.unique(numbers)
        return np.searchsorted(distinct, numbers).astype(np.int64), len(distinct)
    mapping = _order_mapping(order)
    _check_order_covers(labels, mapping)
    # Ranks over the whole declared order: unused levels still sit between used ones (with n_g = 0).
    declared = np.unique(np.fromiter(mapping.values(), dtype=np.float64))
    values = np.array([mapping[str(lab)] for lab in labels], dtype=np.float64)
    return np.searchsorted(declared, values).astype(np.int64), len(declared)


def _order_mapping(order: LabelOrder) -> dict[str, float]:
    if isinstance(order, Mapping):
        return {str(k): float(v) for k, v in order.items()}
    if isinstance(order, str):
        raise ValueError(f"order must be a list of labels from lowest to highest, not the string {order!r}")
    return {str(lab): float(i) for i, lab in enumerate(order)}


def _check_order_covers(labels: pd.Index, mapping: Mapping[str, float]) -> None:
    absent = [str(lab) for lab in labels if str(lab) not in mapping]
    if absent:
        raise ValueError(
            f"label(s) {', '.join(map(repr, absent[:10]))} are not in `order` ({', '.join(mapping)}); "
            "add them to the order or fix the labels"
        )


def _grouped_kappa(group: IntArray, x: IntArray, y: IntArray, n_groups: int, n_labels: int) -> FloatArray:
    """Cohen's kappa of (x, y) label pairs within each group; NaN for empty groups or pe == 1."""
    k = max(n_labels, 1)
    n = np.bincount(group, minlength=n_groups).astype(np.float64)
    agree = np.bincount(group, weights=x == y, minlength=n_groups)
    margin_x = np.bincount(group * k + x, minlength=n_groups * k).reshape(n_groups, k)
    margin_y = np.bincount(group * k + y, minlength=n_groups * k).reshape(n_groups, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_o = agree / n
        p_e = np.sum(margin_x.astype(np.float64) * margin_y, axis=1) / (n * n)
        kappa = (p_o - p_e) / (1.0 - p_e)
    # Chance agreement of exactly 1 leaves kappa undefined (0/0), as in sklearn.
    return np.where((n > 0) & ~np.isclose(p_e, 1.0), kappa, np.nan)


def _pairwise(coded: CodedAnnotations) -> pd.DataFrame:
    left, right = coded.pairs
    a, b = coded.annotator[left], coded.annotator[right]
    upper = a < b  # each unordered pair once
    a, b, x, y = a[upper], b[upper], coded.label[left[upper]], coded.label[right[upper]]
    pair_code, pair_keys = pd.factorize(a * coded.n_annotators + b)
    kappa = _grouped_kappa(pair_code.astype(np.int64), x, y, len(pair_keys), coded.n_labels)
    matrix = np.full((coded.n_annotators, coded.n_annotators), np.nan)
    rows, cols = np.divmod(np.asarray(pair_keys, dtype=np.int64), max(coded.n_annotators, 1))
    matrix[rows, cols] = kappa
    matrix[cols, rows] = kappa
    np.fill_diagonal(matrix, 1.0)
    names = pd.Index([str(a) for a in coded.annotators], name="annotator")
    return pd.DataFrame(matrix, index=names, columns=names.rename(None))


def _loo_consensus(coded: CodedAnnotations) -> IntArray:
    """For each annotation, the others' majority label on its item; -1 on a tie or with no others."""
    top_label, top_count, n_top, second_label, second_count = coded.top
    u, x = coded.item, coded.label
    own = coded.cell_count[coded.own_cell]  # votes for this annotation's label, itself included
    k1, nt, b1, b2 = top_count[u], n_top[u], top_label[u], second_label[u]
    loo = np.full(len(x), -1, dtype=np.int64)
    # Own label is the sole top: removing this vote keeps it on top only if it still beats the runner-up.
    sole = (own == k1) & (nt == 1) & (k1 - 1 > second_count[u])
    loo[sole] = b1[sole]
    # Own label is one of exactly two tied tops: the other one now wins.
    pair = (own == k1) & (nt == 2)
    loo[pair] = np.where(x[pair] == b1[pair], b2[pair], b1[pair])
    # Own label is below the top: the top stands if it was unique.
    below = (own < k1) & (nt == 1)
    loo[below] = b1[below]
    return loo


def _per_annotator(coded: CodedAnnotations) -> pd.DataFrame:
    loo = _loo_consensus(coded)
    compared = loo >= 0
    group = coded.annotator[compared]
    n_items = np.bincount(coded.annotator, minlength=coded.n_annotators)
    n_compared = np.bincount(group, minlength=coded.n_annotators)
    matches = np.bincount(group, weights=coded.label[compared] == loo[compared], minlength=coded.n_annotators)
    kappa = _grouped_kappa(group, coded.label[compared], loo[compared], coded.n_annotators, coded.n_labels)
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = np.where(n_compared > 0, matches / n_compared, np.nan)
    table = pd.DataFrame(
        {
            "annotator": [str(a) for a in coded.annotators],
            "n_items": n_items.astype(np.int64),
            "n_compared": n_compared.astype(np.int64),
            "agreement": agreement,
            "kappa": kappa,
        }
    )
    return table.sort_values(["kappa", "annotator"], na_position="last", kind="stable").reset_index(drop=True)


def _per_item(coded: CodedAnnotations) -> pd.DataFrame:
    top_label, top_count, n_top, _, _ = coded.top
    m = coded.ratings
    tied = n_top > 1
    names = np.empty(coded.n_labels + 1, dtype=object)
    names[:-1] = coded.labels
    names[-1] = None  # so that code -1 (no ratings) reads as no label
    majority = pd.Series(names[top_label])
    majority[(top_label < 0) | tied] = None
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(m > 0, top_count / np.maximum(m, 1), np.nan)
    return pd.DataFrame(
        {
            "item_id": coded.items,
            "n_ratings": m,
            "majority_label": majority.to_numpy(),
            "majority_share": share,
            "tied": tied,
        }
    )


def _per_label(coded: CodedAnnotations) -> pd.DataFrame:
    m = coded.ratings
    item, label = coded.cell_item, coded.cell_label
    count = coded.cell_count.astype(np.float64)
    pairable = (m >= 2)[item]
    k = coded.n_labels
    n_annotations = np.bincount(label, weights=count, minlength=k)
    cp = count * pairable
    m_cell = m[item].astype(np.float64)
    same = np.bincount(label, weights=cp * (count - 1), minlength=k)
    possible = np.bincount(label, weights=cp * (m_cell - 1), minlength=k)
    # One-vs-rest nominal alpha: disagreement pairs are (c, not c) inside an item, weighted 1/(m_u - 1).
    n_c = np.bincount(label, weights=cp, minlength=k)
    n = float(n_c.sum())
    cross = np.bincount(label, weights=cp * (m_cell - count) / np.maximum(m_cell - 1, 1), minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        specific = np.where(possible > 0, same / possible, np.nan)
        expected = n_c * (n - n_c)
        alpha = np.where(expected > 0, 1.0 - (n - 1) * cross / expected, np.nan)
    return pd.DataFrame(
        {
            "label": [str(lab) for lab in coded.labels],
            "n_annotations": n_annotations.astype(np.int64),
            "share": n_annotations / max(coded.n_annotations, 1),
            "specific_agreement": specific,
            "alpha": alpha,
        }
    )


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator != 0 else float("nan")


def _fmt(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "n/a" if np.isnan(value) else f"{value:.3f}"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if value is None or value is pd.NA:
        return "-"
    return str(value).replace("|", "\\|")


def _markdown_table(table: pd.DataFrame, index: bool = False) -> str:
    """GitHub markdown table (pandas' to_markdown needs the optional `tabulate`)."""
    frame = table.reset_index() if index else table
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])
