"""People in the loop against a real Label Studio: accounts from the CLI, gold items that catch a careless annotator."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest

from sluice.cli import main
from sluice.home import Home
from sluice.labelstudio import LabelStudioAuthError, LabelStudioClient
from sluice.labelstudio_server import RunningServer, read_user_token
from tasks.demo_data import rotten_tomatoes_frame
from tasks.label_config import load_label_config
from tasks.simulate import label_stream

pytestmark = [pytest.mark.labelstudio]
REPO = Path(__file__).resolve().parents[2]
CLASSES = ["fresh", "rotten"]


def sign_up(link: str, email: str, password: str) -> int:
    """What a person does with the invite link: the sign-up form; returns the HTTP status (302 = signed up)."""
    with httpx.Client(timeout=60) as http:
        page = http.get(link)
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        form = {"csrfmiddlewaretoken": found.group(1) if found else "", "email": email, "password": password}
        return http.post(link, data=form, headers={"Referer": link}).status_code


def _cli(capsys: pytest.CaptureFixture[str], home: Home, *args: str) -> tuple[int, str, str]:
    """`sluice --home HOME ARGS` in this process; the environment it sets for itself is undone after."""
    saved = dict(os.environ)
    try:
        code = main(["--home", str(home.root), *args])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    out, err = capsys.readouterr()
    return code, out, err


def test_invite_add_list_remove(
    use_labelstudio: RunningServer,
    labelstudio_home: Home,
    labelstudio_client: LabelStudioClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tag = uuid.uuid4().hex[:6]
    signed, added = f"signed-{tag}@example.org", f"added-{tag}@example.org"
    url = use_labelstudio.url

    # invite: a link anyone can sign up with; --rotate retires it
    code, out, _ = _cli(capsys, labelstudio_home, "annotators", "invite")
    link = re.search(r"(http://\S+/user/signup/\?token=\S+)", out)
    assert code == 0 and link is not None
    assert sign_up(link.group(1), signed, "their-own-password-1") == 302
    code, out, _ = _cli(capsys, labelstudio_home, "annotators", "invite", "--rotate")
    assert code == 0 and link.group(1) not in out and "the old link no longer works" in out
    assert sign_up(link.group(1), f"late-{tag}@example.org", "their-own-password-1") == 403

    # add: an account and a password shown once, that works; adding twice is refused with the fix
    code, out, _ = _cli(capsys, labelstudio_home, "annotators", "add", added)
    password = re.search(r"password\s+(\S+)", out)
    assert code == 0 and password is not None
    assert "kept nowhere" in out
    kept = [f for f in labelstudio_home.root.rglob("*") if f.is_file() and password.group(1).encode() in f.read_bytes()]
    assert kept == []
    code, _, err = _cli(capsys, labelstudio_home, "annotators", "add", added)
    assert code == 1 and "--new-password" in err and "Traceback" not in err

    # both label through their own stream
    project = labelstudio_client.ensure_project(f"people-{tag}", f"people {tag}", _xml(), 2)
    labelstudio_client.import_items(
        project, pd.DataFrame({"item_id": ["p1", "p2", "p3"], "text": ["one", "two", "three"]}), "text"
    )
    reference = {"p1": "fresh", "p2": "rotten", "p3": "fresh"}
    config = load_label_config(REPO / "label_config" / "text_classification.xml", CLASSES)
    with LabelStudioClient.login(url, signed, "their-own-password-1") as them:
        assert len(label_stream(them, project, reference, classes=CLASSES, build_result=config.build_result)) == 3
    with LabelStudioClient.login(url, added, password.group(1)) as them:
        assert (
            len(label_stream(them, project, reference, classes=CLASSES, build_result=config.build_result, limit=2)) == 2
        )

    # list: each person's progress in the project
    code, out, _ = _cli(capsys, labelstudio_home, "annotators", "list", "--project", str(project))
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert code == 0 and rows[signed][1:4] == ["active", "people", tag] and rows[signed][4] == "3"
    assert rows[added][4] == "2"

    # remove: out of the stream and locked out; the annotations stay, named, and are reported
    held = read_user_token(use_labelstudio.data_dir, added)
    code, out, _ = _cli(capsys, labelstudio_home, "annotators", "remove", added, "--project", str(project))
    assert code == 0 and "out of the labelling stream" in out and "2 in 'people" in out
    with pytest.raises(LabelStudioAuthError):
        LabelStudioClient.login(url, added, password.group(1))
    assert (
        httpx.get(f"{url}/api/projects/{project}/next", headers={"Authorization": f"Token {held}"}).status_code == 401
    )
    fresh_token = read_user_token(use_labelstudio.data_dir, added)  # nobody holds it; the stream refuses it anyway
    assert (
        httpx.get(f"{url}/api/projects/{project}/next", headers={"Authorization": f"Token {fresh_token}"}).status_code
        == 403
    )
    log = labelstudio_client.annotation_log(project)
    assert (log["annotator"] == added).sum() == 2
    code, out, _ = _cli(capsys, labelstudio_home, "annotators", "list", "--project", str(project))
    assert any(line.split()[:2] == [added, "removed"] for line in out.splitlines())
    code, _, err = _cli(capsys, labelstudio_home, "annotators", "remove", added)
    assert code == 1 and "no active account" in err


def _xml() -> str:
    return (REPO / "label_config" / "text_classification.xml").read_text()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_gold_catches_a_careless_annotator(
    make_config: Callable[..., Path],
    home: Home,
    tmp_path: Path,
    mlflow_store: str,
    use_labelstudio: RunningServer,
    labelstudio_client: LabelStudioClient,
) -> None:
    from flows.annotate import annotation_sync
    from flows.pipeline import pipeline

    # Gold: reviews the pipeline never sees as its own rows, with their known labels.
    corpus = rotten_tomatoes_frame(None)
    gold = corpus.iloc[4000:4030][["text", "category"]].rename(columns={"category": "label"})
    gold.to_csv(tmp_path / "gold.csv", index=False)
    tag = uuid.uuid4().hex[:6]
    careless = f"chidi-{tag}@sluice.local"  # the simulator names them chidi-<tag>: MLflow params take no "@"
    config = make_config(
        demo__rows=256,  # 100 review snippets after the 156 plot summaries are quarantined
        columns__group=None,  # those 100 come from three movies: too few groups for three splits
        labels__source="annotation",
        labels__column="category",
        annotation__label_config=str(REPO / "label_config" / "text_classification.xml"),
        annotation__project_identifier=f"gold-{tag}",
        annotation__simulate=True,
        annotation__simulator={"annotators": {"alice": 0.02, "bruno": 0.04, f"chidi-{tag}": 0.5}, "seed": 7},
        annotation__gold=str(tmp_path / "gold.csv"),
        annotation__gold_rate=0.1,
        consensus__min_gold_accuracy=0.8,
        consensus__min_gold_items=5,
        train__epochs=2,
        registry__model_name=f"rt-gold-{tag}",
    )

    # First sync: the careless annotator fails gold, is excluded, leaves the stream, and their items reopen.
    first = annotation_sync(config_path=str(config), home=str(home.root))
    assert list(first["excluded_annotators"]) == [careless]
    assert "below consensus.min_gold_accuracy 80%" in first["excluded_annotators"][careless]
    assert first["status"] == "waiting" and first["coverage"] == 0.0  # every item had them: all reopened
    assert first["gold_items"] == 30 and first["counts"]["excluded"] == 100
    assert careless not in {a.email for a in labelstudio_client.list_accounts() if not a.removed}
    tasks = labelstudio_client.list_tasks(first["project_id"])
    gold_ids = set(pd.read_csv(tmp_path / "gold.csv").pipe(lambda f: f["text"]).map(_gold_id))
    assert sum(1 for item in tasks if item in gold_ids) == 12  # ceil(0.1 * 100 / 0.9): a tenth of the stream
    assert {overlap for item, (_, overlap) in tasks.items() if item not in gold_ids} == {4}

    # A new annotator works through their own stream, as a person does: the reopened items and the gold.
    snapshot = next(home.snapshots.glob("*/data.parquet"))
    reference = dict(zip(*pd.read_parquet(snapshot)[["item_id", "category"]].astype(str).T.to_numpy(), strict=True))
    reference |= dict(zip([_gold_id(t) for t in gold["text"]], gold["label"], strict=True))
    labelstudio_client.ensure_users([f"dana-{tag}@sluice.local"])
    config_xml = load_label_config(REPO / "label_config" / "text_classification.xml", CLASSES)
    with LabelStudioClient(
        use_labelstudio.url, read_user_token(use_labelstudio.data_dir, f"dana-{tag}@sluice.local")
    ) as dana:
        done = label_stream(dana, first["project_id"], reference, classes=CLASSES, build_result=config_xml.build_result)
    assert len(done) == 100 + 12

    # Then the pipeline trains on consensus without them; gold items never reach the splits or the row account.
    result = pipeline(config_path=str(config), home=str(home.root))
    annotation = result["annotation"]
    assert annotation["status"] == "ready" and annotation["coverage"] == 1.0
    rows = result["rows"]
    assert rows["rows_in"] == 256 == rows["trainable"] + rows["awaiting"] + rows["quarantined_total"]
    manifest = pd.read_parquet(home.splits / f"{result['split_manifest_hash'][:16]}.parquet")
    assert not set(manifest["item_id"].astype(str)) & gold_ids
    report = (home.labels / f"gold-{tag}" / "agreement.md").read_text()
    assert f"| {careless} | excluded |" in report and "below consensus.min_gold_accuracy" in report
    metrics = mlflow.MlflowClient(tracking_uri=mlflow_store).get_run(result["run_id"]).data.metrics
    assert metrics["annotator_alice_sluice.local_gold_accuracy"] >= 0.8
    assert metrics[f"annotator_chidi-{tag}_sluice.local_gold_accuracy"] < 0.8
    assert metrics["annotators_excluded"] == 1.0
    reports = mlflow.MlflowClient(tracking_uri=mlflow_store).list_artifacts(result["run_id"], "reports")
    assert {"reports/annotator_telemetry.png", "reports/annotator_telemetry.csv"} <= {a.path for a in reports}


def _gold_id(text: str) -> str:
    from tasks.annotations import gold_item_id

    return gold_item_id(str(text).strip())
