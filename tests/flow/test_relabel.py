"""labels.label_issues: relabel against a real Label Studio: flagged rows wait there, and the answers are trained on."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect import flow

from flows import steps
from flows.relabel import open_relabel_project
from sluice.config import load_config
from sluice.home import Home
from sluice.labelstudio import LabelStudioClient
from tasks.columns import ITEM_ID, LABEL
from tasks.demo_data import make_classification_frame
from tasks.label_config import build_label_config, parse_label_config
from tasks.labels import LabelOutcome

pytestmark = [pytest.mark.labelstudio, pytest.mark.usefixtures("prefect_server", "use_labelstudio")]


@flow(name="relabel-test-labels")
def _labels(config_path: str, data_path: str, home: str) -> LabelOutcome:
    return steps.resolve_labels(
        steps.LabelSettings.of(load_config(config_path)), pd.read_parquet(data_path), None, Home.resolve(home)
    )


def _rows(outcome: LabelOutcome) -> int:
    return len(outcome.data) + len(outcome.awaiting) + len(outcome.quarantine)


def test_flagged_rows_wait_for_relabel_and_the_answers_replace_the_given_labels(
    make_config: Callable[..., Path], home: Home, labelstudio_client: LabelStudioClient
) -> None:
    name = f"relabel-{uuid.uuid4().hex[:8]}"
    shrunk = {"train__epochs": 5, "train__lr": 0.01, "train__patience": 2}
    config_path = make_config("make_classification", name=name, labels__label_issues="relabel", **shrunk)
    data = make_classification_frame(200).assign(**{ITEM_ID: [f"r{i:03d}" for i in range(200)]})
    truth = data["target"].copy()
    flips = np.random.default_rng(0).choice(200, size=20, replace=False)
    data.loc[flips, "target"] = data.loc[flips, "target"].map({"negative": "positive", "positive": "negative"})

    data_path = config_path.with_suffix(".parquet")
    data.to_parquet(data_path)

    first = _labels(str(config_path), str(data_path), str(home.root))

    # flagged rows are neither trained on nor lost: they await relabel, and each is a task in Label Studio
    assert _rows(first) == 200
    waiting = set(first.issues.loc[first.issues["awaiting_relabel"], ITEM_ID])
    assert waiting and set(first.awaiting[ITEM_ID]) == waiting and not waiting & set(first.data[ITEM_ID])
    config = load_config(config_path)
    client, project_id = open_relabel_project(config.name, config.labels.classes, config.labelstudio, home)
    tasks = {t["data"][ITEM_ID]: t for t in labelstudio_client.export_tasks(project_id)}
    assert set(tasks) == waiting
    suggestions = labelstudio_client.list_predictions(project_id).set_index(ITEM_ID)["label"]
    issues = first.issues.set_index(ITEM_ID)
    for item in waiting:  # the person sees the given label, with the model's suggestion pre-selected
        assert f"given label: {issues.loc[item, 'label']}" in tasks[item]["data"]["given"]
        assert suggestions[item] == issues.loc[item, "suggested"]

    # someone answers every task with the true label; the next run trains on the answers
    shown = parse_label_config(build_label_config(config.labels.classes), config.labels.classes)
    answers = {int(t["id"]): [{"result": shown.build_result(truth[int(i[1:])])}] for i, t in tasks.items()}
    assert labelstudio_client.add_annotations(answers) == len(waiting)
    second = _labels(str(config_path), str(data_path), str(home.root))

    assert _rows(second) == 200
    trained = second.data.set_index(ITEM_ID)[LABEL]
    assert waiting <= set(trained.index) and not waiting & set(second.awaiting[ITEM_ID])
    assert all(trained[i] == truth[int(i[1:])] for i in waiting)
    assert set(second.relabelled[ITEM_ID]) == waiting
    # nothing is sent twice: the answered rows' tasks are the only ones for them
    again = [t["data"][ITEM_ID] for t in labelstudio_client.export_tasks(project_id)]
    assert len(again) == len(set(again)) and waiting <= set(again)
    client.close()
