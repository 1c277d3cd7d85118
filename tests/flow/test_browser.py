"""People label in a real browser: three annotators and a reviewer in Label Studio, then the sync reports them.

Playwright drives Debian's chromium (`make test` installs it with apt-get; Playwright downloads no
browser). Screenshots of the labelling screen are kept under the test's tmp folder (printed) and,
when `$SLUICE_TEST_ARTIFACTS` is set, copied there.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import krippendorff
import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from sluice.cli import main
from sluice.home import Home
from sluice.labelstudio import LabelStudioClient
from sluice.labelstudio_server import RunningServer
from tasks.demo_data import rotten_tomatoes_frame

pytestmark = [pytest.mark.browser, pytest.mark.labelstudio, pytest.mark.usefixtures("prefect_server")]
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("SLUICE_CHROMIUM", "/usr/bin/chromium"))
ITEMS = 5


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.skip(
            f"no chromium at {CHROMIUM}: `make test` installs Debian's chromium and chromium-driver with apt-get, "
            "which this machine could not do"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def screenshots(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    print(f"\nscreenshots of the labelling screen: {folder}")
    yield folder
    if target := os.environ.get("SLUICE_TEST_ARTIFACTS"):
        shutil.copytree(folder, Path(target) / request.node.name, dirs_exist_ok=True)


def _norm(text: str) -> str:
    return " ".join(text.split())


def _sign_in(browser: Browser, url: str, email: str, password: str, *, signup_link: str | None = None) -> Page:
    """A person opens the sign-up link (or the login page), types their email and password, and is in."""
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(signup_link or f"{url}/user/login/")
    page.fill('input[name="email"]', email)
    page.fill('input[name="password"]', password)
    page.click('button[type="submit"]')
    page.wait_for_url(lambda u: "/user/login" not in u and "/user/signup" not in u, timeout=60_000)
    return page


def _label_all(page: Page, url: str, project_id: int, choose: Callable[[str], str], shot: Path) -> dict[str, str]:
    """Press "Label All Tasks", pick a label for each task the stream serves, submit, until the queue is empty."""
    page.goto(f"{url}/projects/{project_id}/data")
    page.get_by_role("button", name=re.compile("Label All Tasks", re.I)).click()
    text = page.locator(".lsf-richtext__line").first
    done = page.get_by_text("No More Tasks Left", exact=False)
    given: dict[str, str] = {}
    text.wait_for(timeout=60_000)
    while True:
        shown = _norm(" ".join(page.locator(".lsf-richtext__line").all_inner_texts()))
        label = choose(shown)
        page.locator(f'label.lsf-choice__checkbox:has(input[name="{label}"])').click()
        if not given:
            page.screenshot(path=str(shot))
        with page.expect_response(lambda r: "/annotations" in r.url and r.request.method == "POST") as response:
            page.locator('[data-testid="bottombar-submit-button"]').click()
        assert response.value.status == 201
        given[shown] = label
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the next task, or the end of the queue
            if done.is_visible():
                return given
            if text.is_visible() and _norm(" ".join(page.locator(".lsf-richtext__line").all_inner_texts())) != shown:
                break
            time.sleep(0.1)
        else:
            expect(done).to_be_visible()


def _cli(capsys: pytest.CaptureFixture[str], home: Home, *args: str) -> str:
    """`sluice --home HOME ARGS` in this process; the environment it sets for itself is undone after."""
    saved = dict(os.environ)
    try:
        assert main(["--home", str(home.root), *args]) == 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return capsys.readouterr().out


@pytest.mark.slow
def test_three_people_and_a_reviewer_label_in_the_browser(
    browser: Browser,
    screenshots: Path,
    make_config: Callable[..., Path],
    home: Home,
    tmp_path: Path,
    mlflow_store: str,
    use_labelstudio: RunningServer,
    labelstudio_home: Home,
    labelstudio_client: LabelStudioClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.annotate import annotation_sync

    started = time.monotonic()
    url, tag = use_labelstudio.url, uuid.uuid4().hex[:6]
    source = tmp_path / "reviews.csv"
    rotten_tomatoes_frame(None).iloc[160 : 160 + ITEMS].to_csv(source, index=False)  # five real review snippets
    config = make_config(
        demo=None,
        source__path=str(source),
        expectations__clean_suite=None,  # its row-count floor is for whole datasets
        labels__source="annotation",
        labels__column="category",
        annotation__label_config=str(REPO / "label_config" / "text_classification.xml"),
        annotation__project_identifier=f"browser-{tag}",
        annotation__project_title=f"browser {tag}: fresh or rotten?",
        consensus__method="majority",  # this test is about the people and the screens: a 2-1 item goes to review
        consensus__min_item_agreement=0.7,
    )

    # The first sync puts the items into Label Studio; nobody has labelled yet.
    first = annotation_sync(config_path=str(config), home=str(home.root))
    assert first["status"] == "waiting" and first["coverage"] == 0.0
    project = first["project_id"]
    tasks = sorted(labelstudio_client.export_tasks(project), key=lambda t: t["id"])
    assert len(tasks) == ITEMS
    item_of = {_norm(t["data"]["text"]): str(t["data"]["item_id"]) for t in tasks}
    plan = {str(t["data"]["item_id"]): ("fresh", "rotten")[k % 2] for k, t in enumerate(tasks)}
    disputed = str(tasks[0]["data"]["item_id"])  # the third annotator sees this one differently

    # Accounts: two people sign up through the invite link, one gets an account with a password.
    link = re.search(r"(http://\S+/user/signup/\?token=\S+)", _cli(capsys, labelstudio_home, "annotators", "invite"))
    assert link is not None
    people = {f"{name}-{tag}@example.org": f"{name}-own-password-{tag}" for name in ("ana", "ben", "cleo", "rev")}
    ana, ben, cleo, rev = people
    added = _cli(capsys, labelstudio_home, "annotators", "add", ben)
    password = re.search(r"password\s+(\S+)", added)
    assert password is not None
    people[ben] = password.group(1)

    clicked: dict[tuple[str, str], str] = {}
    for who in (ana, ben, cleo):
        page = _sign_in(browser, url, who, people[who], signup_link=None if who == ben else link.group(1))

        def choose(shown: str, who: str = who) -> str:
            item = item_of[shown]
            label = plan[item]
            return ("rotten" if label == "fresh" else "fresh") if who == cleo and item == disputed else label

        for shown, label in _label_all(page, url, project, choose, screenshots / f"{who}.png").items():
            clicked[(who, item_of[shown])] = label
        page.context.close()
    assert len(clicked) == 3 * ITEMS  # the stream served each of them every item once

    # The sync reports agreement and consensus from exactly those clicks; the 2-1 item goes to review.
    second = annotation_sync(config_path=str(config), home=str(home.root))
    matrix = np.array(
        [[{"fresh": 0.0, "rotten": 1.0}[clicked[(who, item)]] for item in plan] for who in (ana, ben, cleo)]
    )
    assert second["status"] == "ready" and second["coverage"] == 1.0
    assert second["alpha"] == pytest.approx(krippendorff.alpha(matrix, level_of_measurement="nominal"), abs=1e-4)
    assert second["consensus_labels"] == ITEMS - 1 and second["review_queue"] == 1
    consensus = pd.read_parquet(Path(second["folder"]) / "consensus.parquet").set_index("item_id")["label"]
    assert consensus.to_dict() == {item: label for item, label in plan.items() if item != disputed}
    telemetry = pd.read_csv(Path(second["folder"]) / "annotator_telemetry.csv").set_index("annotator")
    assert telemetry.loc[[ana, ben, cleo], "items_done"].tolist() == [ITEMS] * 3
    assert (telemetry.loc[[ana, ben, cleo], "median_lead_time_s"] > 0).all()  # the screen measured them
    assert telemetry.loc[cleo, "quality_score"] == pytest.approx((ITEMS - 1) / ITEMS)

    # A reviewer signs in and settles the disputed item in the review project; the next sync takes it.
    reviewer = _sign_in(browser, url, rev, people[rev], signup_link=link.group(1))
    settled = _label_all(reviewer, url, second["review_project_id"], lambda _: "rotten", screenshots / "review.png")
    assert list(settled.values()) == ["rotten"]
    # Community does not keep people's annotations apart: any member can read them (documented, not promised).
    others = reviewer.request.get(f"{url}/api/tasks/{tasks[0]['id']}/annotations/")
    assert others.status == 200 and len(others.json()) == 3
    reviewer.context.close()
    third = annotation_sync(config_path=str(config), home=str(home.root))
    assert third["adjudicated"] == 1 and third["review_queue"] == 0
    consensus = pd.read_parquet(Path(third["folder"]) / "consensus.parquet").set_index("item_id")
    assert consensus.loc[disputed, "label"] == "rotten" and consensus.loc[disputed, "reviewer"] == rev

    shots = sorted(p.name for p in screenshots.glob("*.png"))
    assert shots == sorted([f"{ana}.png", f"{ben}.png", f"{cleo}.png", "review.png"])
    print(f"browser test: {time.monotonic() - started:.0f} s")
