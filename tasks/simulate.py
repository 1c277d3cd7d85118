"""Demo annotators: simulated labels with known per-annotator error rates.

The demo has no humans at hand, so these stand in for them: each item is labelled by
`overlap` distinct simulated annotators, each of whom copies the reference label except
with probability `error_rate`, when they pick one of the other classes uniformly. Because
the error rates are known, the agreement report can be checked: it should name the
annotator with the highest rate as the noisiest. Never use this on real labelling work.

Two ways in: `build_annotation_payloads` imports a whole demo's labels inline with the tasks
(one call; ~70x faster than posting 15,000 annotations one by one, so `make demo` stays quick),
and `label_stream` works through Label Studio's labelling stream with the annotator's own
account, exactly as a person pressing "Label All Tasks" does (the stream picks the tasks,
gold items included).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator

from tasks.label_config import build_choice_result

# Three demo annotators with clearly different error rates, so the noisiest is unambiguous.
DEMO_ANNOTATORS: dict[str, float] = {
    "alice@sluice.local": 0.05,
    "bruno@sluice.local": 0.12,
    "chidi@sluice.local": 0.30,
}

SIMULATED_COLUMNS = ["item_id", "annotator", "label", "lead_time"]


class SimulatorConfig(BaseModel):
    """Settings of the demo-annotator simulator."""

    annotators: dict[str, float] = Field(default_factory=lambda: dict(DEMO_ANNOTATORS))
    seed: int = 13
    mean_lead_time_s: float = Field(8.0, gt=0)

    @field_validator("annotators")
    @classmethod
    def _rates_are_probabilities(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {name: rate for name, rate in value.items() if not 0.0 <= rate <= 1.0}
        if bad:
            raise ValueError(f"annotator error rates must lie in [0, 1]; got {bad}")
        if not value:
            raise ValueError("the simulator needs at least one annotator")
        return value


def simulate_annotations(
    items: pd.DataFrame,
    annotators: Mapping[str, float],
    classes: Sequence[str],
    *,
    overlap: int,
    seed: int,
    label_col: str = "label",
    id_col: str = "item_id",
    mean_lead_time_s: float = 8.0,
) -> pd.DataFrame:
    """Label every item by `overlap` distinct simulated annotators.

    Args:
        items: one row per item, with `id_col` and the reference label in `label_col`.
        annotators: name -> error rate (probability of picking a wrong class).
        classes: the label set; every reference label must be one of them.
        overlap: annotators per item (at most the number of annotators).
        seed: same seed, same items -> the same annotations.

    Returns:
        One row per annotation: item_id, annotator, label, lead_time (seconds).
    """
    if overlap < 1 or overlap > len(annotators):
        raise ValueError(
            f"overlap={overlap} needs between 1 and {len(annotators)} annotators "
            f"(the simulator has {sorted(annotators)}); lower overlap or add annotators"
        )
    for col in (id_col, label_col):
        if col not in items.columns:
            raise ValueError(f"column {col!r} is missing from the items; simulate_annotations needs it")
    class_list = list(classes)
    if len(class_list) < 2:
        raise ValueError(f"the simulator needs at least two classes, got {class_list}")
    index = {c: i for i, c in enumerate(class_list)}
    reference = items[label_col].map(index)
    unknown = items.loc[reference.isna(), label_col].unique().tolist()
    if unknown:
        raise ValueError(
            f"reference labels {unknown[:10]} are not among the classes {class_list}; "
            "filter those items out or add the classes"
        )

    rng = np.random.default_rng(seed)
    names = list(annotators)
    rates = np.array([annotators[n] for n in names], dtype=float)
    n_items = len(items)
    # A random permutation of annotators per item, cut to `overlap`: distinct annotators per item.
    chosen = rng.random((n_items, len(names))).argsort(axis=1)[:, :overlap]
    wrong = rng.random((n_items, overlap)) < rates[chosen]
    # A wrong label is any *other* class, uniformly: shift the reference index by 1..k-1.
    shift = rng.integers(1, len(class_list), size=(n_items, overlap))
    ref = reference.to_numpy(dtype=int)[:, None]
    label_idx = np.where(wrong, (ref + shift) % len(class_list), ref)
    # Human lead times are right-skewed; a log-normal with the requested mean.
    sigma = 0.5
    lead = rng.lognormal(np.log(mean_lead_time_s) - sigma**2 / 2, sigma, size=(n_items, overlap))

    return pd.DataFrame(
        {
            "item_id": np.repeat(items[id_col].to_numpy(), overlap),
            "annotator": np.asarray(names, dtype=object)[chosen.ravel()],
            "label": np.asarray(class_list, dtype=object)[label_idx.ravel()],
            "lead_time": lead.ravel().round(2),
        }
    ).astype({"annotator": "str", "label": "str"})


def simulate_extra(
    items: pd.DataFrame,
    annotations: pd.DataFrame,
    annotators: Mapping[str, float],
    classes: Sequence[str],
    *,
    seed: int,
    mean_lead_time_s: float = 8.0,
) -> pd.DataFrame:
    """One more annotation per item (item_id, label: the reference) by a simulated annotator not yet on it.

    Items every simulated annotator has labelled already get none. Same columns as `simulate_annotations`.
    """
    rng = np.random.default_rng(seed)
    names = list(annotators)
    done = annotations.groupby(annotations["item_id"].astype(str))["annotator"].agg(set)
    others = {c: [o for o in classes if o != c] for c in classes}
    rows = []
    for item_id, label in items[["item_id", "label"]].itertuples(index=False):
        free = [n for n in names if n not in done.get(str(item_id), set())]
        if not free:
            continue
        who = str(rng.choice(free))
        given = str(rng.choice(others[str(label)])) if rng.random() < annotators[who] else str(label)
        lead = round(float(rng.lognormal(np.log(mean_lead_time_s) - 0.125, 0.5)), 2)
        rows.append((item_id, who, given, lead))
    return pd.DataFrame(rows, columns=["item_id", "annotator", "label", "lead_time"]).astype(
        {"annotator": "str", "label": "str"}
    )


def build_annotation_payloads(
    annotations: pd.DataFrame,
    user_ids: Mapping[str, int],
    *,
    from_name: str,
    to_name: str,
    result_type: str = "choices",
) -> dict[Hashable, list[dict[str, Any]]]:
    """Label Studio inline annotations (`tasks[i].annotations`) per item_id.

    Args:
        annotations: rows of item_id, annotator, label, lead_time (from simulate_annotations).
        user_ids: annotator name -> Label Studio user id (LabelStudioClient.ensure_users).
        from_name, to_name: the control and object tag names of the labelling config.
    """
    missing = sorted(set(annotations["annotator"]) - set(user_ids))
    if missing:
        raise ValueError(
            f"annotators {missing} have no Label Studio user id; create them first (LabelStudioClient.ensure_users)"
        )
    payloads: dict[Hashable, list[dict[str, Any]]] = {}
    for item_id, annotator, label, lead_time in annotations[SIMULATED_COLUMNS].itertuples(index=False):
        payloads.setdefault(item_id, []).append(
            {
                "result": build_choice_result(
                    str(label), from_name=from_name, to_name=to_name, result_type=result_type
                ),
                "completed_by": int(user_ids[annotator]),
                "lead_time": float(lead_time),
                # Imported annotations default to ground truth in Label Studio; these are not.
                "ground_truth": False,
            }
        )
    return payloads


class LabellingStream(Protocol):
    """What an annotator's own Label Studio client offers (`sluice.labelstudio.LabelStudioClient`)."""

    def next_task(self, project_id: int) -> dict[str, Any] | None: ...

    def submit_annotation(
        self, task_id: int, result: Sequence[Mapping[str, Any]], *, lead_time: float | None = None
    ) -> int: ...


def label_stream(
    stream: LabellingStream,
    project_id: int,
    reference: Mapping[str, str],
    *,
    classes: Sequence[str],
    build_result: Callable[[str], Sequence[Mapping[str, Any]]],
    error_rate: float = 0.0,
    seed: int = 0,
    mean_lead_time_s: float = 8.0,
    limit: int | None = None,
) -> dict[str, str]:
    """Label what the stream serves until it has nothing left (or `limit` tasks); returns item_id -> label given.

    Args:
        stream: the annotator's own client: the stream serves them, not anybody else.
        reference: item_id -> the reference label (known labels of the demo data and the gold items).
        build_result: label -> Label Studio result (`tasks.label_config.LabelConfig.build_result`).
        error_rate: probability of picking another class, uniformly.
    """
    rng = np.random.default_rng(seed)
    others = {c: [o for o in classes if o != c] for c in classes}
    given: dict[str, str] = {}
    while limit is None or len(given) < limit:
        task = stream.next_task(project_id)
        if task is None:
            break
        item_id = str((task.get("data") or {}).get("item_id"))
        if item_id not in reference:
            raise ValueError(f"the stream served item {item_id!r}, which has no reference label; add it to `reference`")
        label = reference[item_id]
        if rng.random() < error_rate:
            label = str(rng.choice(others[label]))
        lead = float(rng.lognormal(np.log(mean_lead_time_s) - 0.125, 0.5))
        stream.submit_annotation(int(task["id"]), build_result(label), lead_time=round(lead, 2))
        given[item_id] = label
    return given
