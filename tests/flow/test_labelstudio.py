"""Label Studio for real: a local server on loopback, driven through sluice.labelstudio.

Each test works in its own project (its own identifier), so one server serves them all.
"""

from __future__ import annotations

import hashlib
import time
import traceback
import uuid
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from sluice.home import Home
from sluice.labelstudio import (
    LabelStudioAuthError,
    LabelStudioClient,
    LabelStudioError,
    LabelStudioUnreachableError,
)
from sluice.labelstudio_server import (
    LabelStudioServerError,
    LabelStudioSettings,
    RunningServer,
    ensure_server,
    read_user_token,
    start_server,
)
from sluice.processes import free_port
from tasks.annotations import load_export, parse_export
from tasks.label_config import LabelConfig, build_review_config, load_label_config
from tasks.simulate import DEMO_ANNOTATORS, build_annotation_payloads, simulate_annotations

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["fresh", "rotten"]


@pytest.fixture(scope="module")
def text_config() -> LabelConfig:
    return load_label_config(REPO / "label_config" / "text_classification.xml", CLASSES)


def _items(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"rt-{i:04d}" for i in range(start, start + n)],
            "text": [f"A review snippet number {i}, {'lovely' if i % 2 else 'dull'}." for i in range(start, start + n)],
            "label": [CLASSES[i % 2] for i in range(start, start + n)],
        }
    )


def _project(client: LabelStudioClient, config: LabelConfig, overlap: int = 3) -> int:
    identifier = f"test-{uuid.uuid4().hex[:8]}"
    return client.ensure_project(identifier, f"sluice {identifier}", config.xml, overlap)


def _annotator_client(server: RunningServer, email: str) -> LabelStudioClient:
    return LabelStudioClient(server.url, read_user_token(server.data_dir, email))


# -- server ----------------------------------------------------------------------------------
@pytest.mark.labelstudio
def test_ensure_server_reuses_the_running_one(
    labelstudio_server: RunningServer, labelstudio_settings: LabelStudioSettings
) -> None:
    assert labelstudio_server.state_path is not None
    home = Home(labelstudio_server.state_path.parent.parent)
    started = time.monotonic()
    again = ensure_server(labelstudio_settings, home)
    assert again.pid == labelstudio_server.pid
    assert again.url == labelstudio_server.url
    assert time.monotonic() - started < 5  # reused, not restarted


def test_missing_venv_says_make_labelstudio(tmp_path: Path) -> None:
    settings = LabelStudioSettings(venv=tmp_path / "no-venv", token="ab" * 20)
    with pytest.raises(LabelStudioServerError, match="make labelstudio"):
        start_server(settings, Home(tmp_path / "home"))


def test_token_must_be_40_hex() -> None:
    with pytest.raises(ValueError, match="40 lowercase hex"):
        LabelStudioSettings(token="not-a-token")


# -- connection errors -----------------------------------------------------------------------
def test_unreachable_server_fails_after_backoff() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(LabelStudioUnreachableError) as err:
        LabelStudioClient.connect(url, "ab" * 20, tries=3, backoff_s=0.05)
    elapsed = time.monotonic() - started
    assert str(err.value) == (
        f"Label Studio at {url} is unreachable after 3 tries; start it with `sluice labelstudio start`"
    )
    assert elapsed >= 0.05 + 0.10  # waited between tries, doubling


@pytest.mark.labelstudio
def test_wrong_token_is_named_but_never_shown(labelstudio_server: RunningServer) -> None:
    wrong = hashlib.sha1(b"not the admin token").hexdigest()
    with pytest.raises(LabelStudioAuthError) as err:
        LabelStudioClient.connect(labelstudio_server.url, wrong, tries=1)
    text = "".join(traceback.format_exception(err.value))
    assert "rejected the API token" in str(err.value)
    assert wrong not in text
    assert labelstudio_server.token not in text
    assert wrong not in repr(LabelStudioClient(labelstudio_server.url, wrong))


# -- projects and import ---------------------------------------------------------------------
@pytest.mark.labelstudio
def test_project_is_created_once_then_reused(labelstudio_client: LabelStudioClient, text_config: LabelConfig) -> None:
    identifier = f"reuse-{uuid.uuid4().hex[:8]}"
    first = labelstudio_client.ensure_project(identifier, "sluice reuse", text_config.xml, 3)
    again = labelstudio_client.ensure_project(identifier, "another title", text_config.xml, 3)
    assert again == first
    # A changed overlap is applied to the same project, not a new one.
    assert labelstudio_client.ensure_project(identifier, "sluice reuse", text_config.xml, 2) == first
    other = labelstudio_client.ensure_project(f"{identifier}-b", "sluice reuse b", text_config.xml, 3)
    assert other != first


@pytest.mark.labelstudio
def test_image_config_is_accepted_by_the_server(labelstudio_client: LabelStudioClient) -> None:
    config = load_label_config(REPO / "label_config" / "image_classification.xml", [str(d) for d in range(10)])
    project_id = _project(labelstudio_client, config)
    items = pd.DataFrame({"item_id": [1, 2], "image": ["/data/upload/1.png", "/data/upload/2.png"]})
    result = labelstudio_client.import_items(project_id, items, "image")
    assert result.imported == 2
    assert set(labelstudio_client.list_item_ids(project_id)) == {"1", "2"}


@pytest.mark.labelstudio
def test_import_twice_creates_no_duplicates(labelstudio_client: LabelStudioClient, text_config: LabelConfig) -> None:
    project_id = _project(labelstudio_client, text_config)
    first = labelstudio_client.import_items(project_id, _items(30), "text", batch_size=7)
    assert (first.imported, first.already_present) == (30, 0)
    # A rerun with 10 more items imports only those 10.
    second = labelstudio_client.import_items(project_id, _items(40), "text", batch_size=7)
    assert (second.imported, second.already_present) == (10, 30)
    assert labelstudio_client.progress(project_id).tasks == 40
    ids = labelstudio_client.list_item_ids(project_id)
    assert sorted(ids) == sorted(_items(40)["item_id"])
    assert len(set(ids.values())) == 40


# -- annotations: inline import, export, parse -----------------------------------------------
@pytest.mark.labelstudio
def test_inline_annotations_export_and_parse_back(
    labelstudio_server: RunningServer,
    labelstudio_client: LabelStudioClient,
    text_config: LabelConfig,
    tmp_path: Path,
) -> None:
    project_id = _project(labelstudio_client, text_config)
    items = _items(20)
    sim = simulate_annotations(items, DEMO_ANNOTATORS, CLASSES, overlap=3, seed=4)
    user_ids = labelstudio_client.ensure_users(list(DEMO_ANNOTATORS))
    assert labelstudio_client.ensure_users(list(DEMO_ANNOTATORS)) == user_ids  # no second users
    payloads = build_annotation_payloads(sim, user_ids, from_name=text_config.control_name, to_name=text_config.to_name)
    started = time.monotonic()
    result = labelstudio_client.import_items(project_id, items, "text", annotations=payloads)
    assert time.monotonic() - started < 10  # bulk: 20 tasks + 60 annotations in one call
    assert (result.imported, result.annotations) == (20, 60)
    progress = labelstudio_client.progress(project_id)
    assert (progress.tasks, progress.labelled, progress.annotations) == (20, 20, 60)

    # Community accepts what the stream would not: a 4th annotator, and a user twice.
    task_ids = labelstudio_client.list_item_ids(project_id)
    first_item = items["item_id"].iloc[0]
    on_first = sim[sim["item_id"] == first_item]
    outsider = next(n for n in ("dana@sluice.local",) if n not in set(on_first["annotator"]))
    labelstudio_client.ensure_users([outsider])
    repeater = on_first["annotator"].iloc[0]
    flipped = "rotten" if on_first["label"].iloc[0] == "fresh" else "fresh"
    with _annotator_client(labelstudio_server, outsider) as dana:
        dana.submit_annotation(task_ids[first_item], text_config.build_result("fresh"), lead_time=1.0)
    with _annotator_client(labelstudio_server, repeater) as again:
        again.submit_annotation(task_ids[first_item], text_config.build_result(flipped), lead_time=1.0)

    path, sha256 = labelstudio_client.export_snapshot(project_id, tmp_path / "exports")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    assert path.with_name(path.name + ".sha256").read_text().startswith(sha256)
    parsed = parse_export(load_export(path, expected_sha256=sha256), classes=CLASSES, overlap=3)
    assert parsed.summary() == {
        "tasks": 20, "raw_annotations": 62, "kept": 60, "cancelled": 0,
        "duplicates_dropped": 1, "rejected": 0, "excluded": 0, "over_overlap_dropped": 1,
    }  # fmt: skip
    kept = parsed.annotations.set_index(["item_id", "annotator"])["label"]
    expected = sim.set_index(["item_id", "annotator"])["label"].copy()
    expected[(first_item, repeater)] = flipped  # the repeater's newest word wins
    assert kept.sort_index().to_dict() == expected.sort_index().to_dict()


# -- overlap through the labelling stream ----------------------------------------------------
@pytest.mark.labelstudio
def test_stream_serves_each_task_to_three_distinct_annotators(
    labelstudio_server: RunningServer, labelstudio_client: LabelStudioClient, text_config: LabelConfig
) -> None:
    project_id = _project(labelstudio_client, text_config, overlap=3)
    labelstudio_client.import_items(project_id, _items(8), "text")
    names = [f"stream-{k}-{uuid.uuid4().hex[:6]}@sluice.local" for k in range(4)]
    labelstudio_client.ensure_users(names)
    annotators = {name: _annotator_client(labelstudio_server, name) for name in names}
    served: dict[str, list[int]] = {name: [] for name in names}
    active = list(names)
    try:
        # Round robin, like people working side by side; nobody is assigned anything.
        while active:
            for name in list(active):
                task = annotators[name].next_task(project_id)
                if task is None:
                    active.remove(name)
                    continue
                served[name].append(int(task["id"]))
                annotators[name].submit_annotation(int(task["id"]), text_config.build_result("fresh"), lead_time=1.0)
    finally:
        for client in annotators.values():
            client.close()

    for name, tasks in served.items():
        assert len(tasks) == len(set(tasks)), f"{name} was served a task twice"
    per_task = Counter(t for tasks in served.values() for t in tasks)
    assert len(per_task) == 8 and set(per_task.values()) == {3}
    assert sorted(len(t) for t in served.values()) == [6, 6, 6, 6]  # 24 slots over 4 people
    parsed = parse_export(labelstudio_client.export_tasks(project_id), classes=CLASSES, overlap=3)
    assert parsed.n_kept == 24 and parsed.n_over_overlap_dropped == 0
    assert parsed.annotations.groupby("item_id")["annotator"].nunique().eq(3).all()
    assert labelstudio_client.progress(project_id).labelled == 8


@pytest.mark.labelstudio
def test_raised_overlaps_reach_a_new_annotator_through_the_stream(
    labelstudio_server: RunningServer, labelstudio_client: LabelStudioClient, text_config: LabelConfig
) -> None:
    """ActiveLab's round: two answers per task, then four of ten tasks get a third slot, sent in parallel."""
    project_id = _project(labelstudio_client, text_config, overlap=2)
    labelstudio_client.import_items(project_id, _items(10, start=500), "text")
    names = [f"active-{k}-{uuid.uuid4().hex[:6]}@sluice.local" for k in range(3)]
    ids = labelstudio_client.ensure_users(names)
    tasks = labelstudio_client.list_tasks(project_id)
    first_two = {
        task_id: [
            {"result": text_config.build_result("fresh"), "completed_by": ids[name], "lead_time": 1.0}
            for name in names[:2]
        ]
        for task_id, _ in tasks.values()
    }
    assert labelstudio_client.add_annotations(first_two) == 20
    assert labelstudio_client.progress(project_id).labelled == 10
    raised = sorted(task_id for task_id, _ in tasks.values())[:4]
    assert labelstudio_client.reopen_tasks({task_id: 3 for task_id in raised}) == 4

    overlaps = {task_id: overlap for task_id, overlap in labelstudio_client.list_tasks(project_id).values()}
    assert {t for t, n in overlaps.items() if n == 3} == set(raised)
    third = _annotator_client(labelstudio_server, names[2])
    served: list[int] = []
    try:
        while (task := third.next_task(project_id)) is not None:
            served.append(int(task["id"]))
            third.submit_annotation(int(task["id"]), text_config.build_result("rotten"), lead_time=1.0)
    finally:
        third.close()
    assert sorted(served) == raised  # exactly the reopened tasks, once each
    parsed = parse_export(labelstudio_client.export_tasks(project_id), classes=CLASSES, overlap=3)
    assert parsed.n_kept == 24


@pytest.mark.labelstudio
def test_sqlite_database_runs_in_wal_mode(labelstudio_server: RunningServer) -> None:
    import sqlite3

    with sqlite3.connect(f"file:{labelstudio_server.data_dir / 'label_studio.sqlite3'}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- predictions -----------------------------------------------------------------------------
@pytest.mark.labelstudio
def test_pushed_predictions_show_up(labelstudio_client: LabelStudioClient, text_config: LabelConfig) -> None:
    project_id = _project(labelstudio_client, text_config)
    items = _items(12)
    labelstudio_client.import_items(project_id, items, "text")
    predictions = pd.DataFrame(
        {"item_id": items["item_id"], "label": items["label"], "score": [0.5 + i / 100 for i in range(12)]}
    )
    assert labelstudio_client.push_predictions(project_id, predictions, "tfidf-v1") == 12
    tasks = labelstudio_client.export_tasks(project_id)
    assert {t["total_predictions"] for t in tasks} == {1}
    by_item = {t["data"]["item_id"]: t for t in tasks}
    detail = labelstudio_client._sdk.predictions.list(task=by_item["rt-0003"]["id"])  # noqa: SLF001
    assert [(p.model_version, p.score, p.result[0]["value"]["choices"]) for p in detail] == [
        ("tfidf-v1", pytest.approx(0.53), ["rotten"])
    ]
    with pytest.raises(LabelStudioError, match="import those items first"):
        labelstudio_client.push_predictions(
            project_id, pd.DataFrame({"item_id": ["nope"], "label": ["fresh"], "score": [0.9]}), "tfidf-v1"
        )


@pytest.mark.labelstudio
def test_inline_predictions_on_import(labelstudio_client: LabelStudioClient, text_config: LabelConfig) -> None:
    project_id = _project(labelstudio_client, text_config)
    items = _items(5)
    predictions = pd.DataFrame({"item_id": items["item_id"], "label": "fresh", "score": 0.9})
    result = labelstudio_client.import_items(project_id, items, "text", predictions=predictions, model_version="m0")
    assert result.predictions == 5
    assert all(t["total_predictions"] == 1 for t in labelstudio_client.export_tasks(project_id))


# -- adjudication ----------------------------------------------------------------------------
@pytest.mark.labelstudio
def test_review_tasks_and_adjudication_round_trip(
    labelstudio_server: RunningServer, labelstudio_client: LabelStudioClient, text_config: LabelConfig
) -> None:
    review_xml = build_review_config(text_config)
    review_id = labelstudio_client.ensure_project(f"review-{uuid.uuid4().hex[:8]}", "sluice review", review_xml, 1)
    queue = pd.DataFrame(
        {
            "item_id": ["rt-0001", "rt-0002"],
            "text": ["split opinions", "more split opinions"],
            "votes": [
                {
                    "alice@sluice.local": "fresh",
                    "bruno@sluice.local": "rotten",
                    "chidi@sluice.local": "rotten",
                },
                {
                    "alice@sluice.local": "fresh",
                    "bruno@sluice.local": "fresh",
                    "chidi@sluice.local": "rotten",
                },
            ],
        }
    )
    assert labelstudio_client.create_review_tasks(review_id, queue).imported == 2
    assert labelstudio_client.create_review_tasks(review_id, queue).imported == 0  # idempotent

    tasks = {t["data"]["item_id"]: t for t in labelstudio_client.export_tasks(review_id)}
    assert "bruno@sluice.local: rotten" in tasks["rt-0001"]["data"]["votes"]
    reviewer_email = f"reviewer-{uuid.uuid4().hex[:6]}@sluice.local"
    labelstudio_client.ensure_users([reviewer_email])
    with _annotator_client(labelstudio_server, reviewer_email) as reviewer:
        served = reviewer.next_task(review_id)
        assert served is not None
        # The reviewer sees the majority vote pre-selected (a prediction) and overrules it.
        majority = {"rt-0001": ("rotten", 2 / 3), "rt-0002": ("fresh", 2 / 3)}[served["data"]["item_id"]]
        prediction = served["predictions"][0]
        assert prediction["result"][0]["value"]["choices"] == [majority[0]]
        assert prediction["score"] == pytest.approx(majority[1])
        reviewer.submit_annotation(int(served["id"]), text_config.build_result("fresh"), lead_time=4.0)
    decisions = labelstudio_client.fetch_adjudications(review_id)
    assert list(decisions.columns) == ["item_id", "label", "reviewer"]
    assert decisions.to_dict("records") == [
        {"item_id": served["data"]["item_id"], "label": "fresh", "reviewer": reviewer_email}
    ]


@pytest.mark.labelstudio
def test_busy_port_is_refused_not_silently_moved(
    labelstudio_server: RunningServer, labelstudio_settings: LabelStudioSettings, tmp_path: Path
) -> None:
    busy = int(labelstudio_server.url.rsplit(":", 1)[1])
    settings = labelstudio_settings.model_copy(update={"port": busy})
    with pytest.raises(LabelStudioServerError, match=f"port {busy} on 127.0.0.1 is busy"):
        start_server(settings, Home(tmp_path / "home"))


def _fake_venv(tmp_path: Path, script: str) -> Path:
    venv = tmp_path / "fake-venv"
    (venv / "bin").mkdir(parents=True)
    executable = venv / "bin" / "label-studio"
    executable.write_text(f"#!/bin/sh\n{script}\n")
    executable.chmod(0o755)
    return venv


@pytest.mark.parametrize(
    ("script", "timeout_s", "expected"),
    [
        ("echo 'django.db.utils.OperationalError: disk full' >&2; exit 3", 30.0, "exited with code 3"),
        ("echo 'still migrating'; sleep 30", 1.0, "was not healthy after 1 s"),
    ],
)
def test_failed_start_points_at_the_log(tmp_path: Path, script: str, timeout_s: float, expected: str) -> None:
    settings = LabelStudioSettings(venv=_fake_venv(tmp_path, script), token="ab" * 20, start_timeout_s=timeout_s)
    home = Home(tmp_path / "home")
    with pytest.raises(LabelStudioServerError) as err:
        start_server(settings, home)
    message = str(err.value)
    assert expected in message
    assert str(home.logs / "labelstudio.log") in message
    assert ("disk full" in message) or ("still migrating" in message)  # the log's tail is quoted
    assert not (home.labelstudio / "server.json").exists()
