"""The one place that talks to Label Studio (over HTTP, through label-studio-sdk).

Everything else in sluice calls `LabelStudioClient`; nobody else imports the SDK.

Overlap in Community edition: a project's `maximum_annotations=N` makes the labelling
stream (`GET /api/projects/{id}/next`, what the UI's "Label all tasks" uses) serve each task
to N distinct annotators, never twice to the same one. sluice does not assign items to
annotators. The limit is not enforced on direct POSTs, so exports are cleaned
(`tasks.annotations.parse_export`).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pandas as pd
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from tasks.annotations import parse_export
from tasks.label_config import build_choice_result

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
_ID_FIELD = "item_id"
_MARKER_PREFIX = "sluice-project:"
_TASK_PAGE_SIZE = 2000  # measured: 10k tasks listed in ~3 s at 2000/page, the SDK pager takes ~25 s
_RESULT_TYPES = {"Choices": "choices", "Labels": "labels"}
REVIEW_MODEL_VERSION = "annotator-votes"
# Requests in flight for per-task updates (measured in bench/labelstudio_overlap.py: ~4x one at a time; more
# than four gains nothing on a 2-core server and queues behind SQLite's one writer).
_PARALLEL_REQUESTS = 4


class LabelStudioError(RuntimeError):
    """Label Studio refused a request or answered something sluice cannot use."""


class LabelStudioUnreachableError(LabelStudioError):
    """No Label Studio server answers at the URL."""


class LabelStudioAuthError(LabelStudioError):
    """Label Studio rejected the API token."""


@dataclass(frozen=True)
class Progress:
    """How far labelling is: tasks, tasks with all their annotations, annotations."""

    tasks: int
    labelled: int
    annotations: int


@dataclass(frozen=True)
class ImportResult:
    """What an import did: new tasks created, items skipped because already present."""

    imported: int
    already_present: int
    annotations: int
    predictions: int


@dataclass(frozen=True)
class Account:
    """A Label Studio user as the admin sees it; `removed` once taken out of the organisation."""

    id: int
    email: str
    removed: bool
    last_activity: str | None


@dataclass(frozen=True)
class _Control:
    from_name: str
    to_name: str
    result_type: str
    labels: tuple[str, ...]


class LabelStudioClient:
    """A Label Studio API client that retries connection errors and explains failures.

    Args:
        url: e.g. http://127.0.0.1:8080.
        token: an API token (legacy 40-hex token); never shown in errors.
        tries: connection attempts before giving up, with exponential backoff.
        backoff_s: first wait between attempts; doubles each time.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str = "",
        *,
        tries: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 300.0,
    ) -> None:
        if not token:
            raise LabelStudioAuthError(
                "no Label Studio API token given; set $SLUICE_LABEL_STUDIO_TOKEN or pass the admin token "
                "(it is kept in <home>/labelstudio/admin_token when sluice started the server)"
            )
        self.url = url.rstrip("/")
        self.tries = max(1, tries)
        self.backoff_s = backoff_s
        self._token = token
        self._http = httpx.Client(timeout=timeout_s)
        # The SDK's own retries (connection errors, 5xx, 409) would multiply ours and could
        # repeat an import that the server already committed: ours are the only ones.
        self._sdk = LabelStudio(base_url=self.url, api_key=token, httpx_client=self._http, max_retries=0)
        self._controls: dict[int, _Control] = {}

    def __repr__(self) -> str:
        return f"LabelStudioClient(url={self.url!r})"

    @classmethod
    def connect(
        cls, url: str = DEFAULT_URL, token: str = "", *, tries: int = 5, backoff_s: float = 0.5
    ) -> LabelStudioClient:
        """A client whose server is reachable and accepts the token.

        Raises:
            LabelStudioUnreachableError: nothing answers after `tries` attempts.
            LabelStudioAuthError: the token is rejected.
        """
        client = cls(url, token, tries=tries, backoff_s=backoff_s)
        client.whoami()
        return client

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- users ----------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        """The user the token belongs to: {id, email, ...}."""
        user = self._call(self._sdk.users.whoami)
        return {"id": user.id, "email": user.email, "username": user.username}

    def ensure_users(self, names: Sequence[str], *, email_domain: str = "sluice.local") -> dict[str, int]:
        """Create the users that do not exist yet; name -> user id.

        A name with an "@" is the user's email; other names get `<name>@<email_domain>`.
        """
        existing = {
            str(u.email).lower(): int(u.id) for u in self._call(lambda: list(self._sdk.users.list())) if u.email
        }
        ids: dict[str, int] = {}
        for name in names:
            email = name if "@" in name else f"{name}@{email_domain}"
            if email.lower() not in existing:
                try:
                    user = self._call(self._sdk.users.create, username=email.split("@")[0], email=email)
                except LabelStudioError as exc:
                    if "already exists" not in str(exc):
                        raise
                    # Listed users hide removed members' emails ("Deleted"), but the address stays taken.
                    raise LabelStudioError(
                        f"{email} was removed from the Label Studio organisation and Community cannot bring them "
                        "back; take them out of the list of annotators, or use another address"
                    ) from None
                existing[email.lower()] = int(user.id)
            ids[name] = existing[email.lower()]
        return ids

    def user_names(self) -> dict[int, str]:
        """User id -> email, for exports that carry bare ids."""
        return {int(u.id): str(u.email) for u in self._call(lambda: list(self._sdk.users.list()))}

    # -- people: accounts, invites, removal -------------------------------------
    @classmethod
    def login(cls, url: str, email: str, password: str, *, tries: int = 5) -> LabelStudioClient:
        """A client acting as `email`: signs in like the browser does, then takes the user's own API token.

        Raises:
            LabelStudioAuthError: the email or password is wrong (or the account was locked out).
        """
        base = url.rstrip("/")
        with httpx.Client(timeout=60.0) as http:
            form = _csrf_form(http, f"{base}/user/login/")
            response = http.post(
                f"{base}/user/login/",
                data={**form, "email": email, "password": password},
                headers={"Referer": f"{base}/user/login/"},
            )
            # Success redirects away from the login page; a wrong password shows the form again (200).
            if response.status_code != 302:
                raise LabelStudioAuthError(f"Label Studio at {base} refused the login of {email}")
            token = http.get(f"{base}/api/current-user/token").json().get("token")
        return cls.connect(base, str(token), tries=tries)

    def invite_link(self, *, rotate: bool = False) -> str:
        """The organisation's sign-up link; `rotate` makes a new one and the old one stops working (403)."""
        if rotate:
            self._raw("POST", "/api/invite/reset-token", ok_statuses=(200, 201))
        body = self._raw("GET", "/api/invite").json()
        return f"{self.url}{body['invite_url']}"

    def list_accounts(self) -> list[Account]:
        """Every user of the organisation, removed ones included (Label Studio masks their email as "Deleted")."""
        users = self._raw("GET", "/api/users/").json()
        return [
            Account(
                id=int(user["id"]),
                email=str(user.get("email") or ""),
                # A removed member comes back as "Deleted User" (first and last name) with email "Deleted".
                removed=user.get("first_name") == "Deleted" and user.get("last_name") == "User",
                last_activity=user.get("last_activity"),
            )
            for user in users
        ]

    def create_account(self, email: str) -> int:
        """Create a user (username = the part before the @); returns the id. The password is set elsewhere."""
        user = self._call(self._sdk.users.create, username=email.split("@")[0], email=email)
        return _require_id(user.id, "user")

    def remove_member(self, user_id: int) -> bool:
        """Take a user out of the organisation (Community's soft delete); False if they were out already.

        Measured on Community 1.23.2: the labelling stream and every project, task and export
        endpoint then answer 403 to them, their task locks are released, and their annotations
        stay (the snapshot export still names them).
        """
        organisation = self._raw("GET", "/api/current-user/whoami").json()["active_organization"]
        response = self._raw(
            "DELETE", f"/api/organizations/{organisation}/memberships/{user_id}/", ok_statuses=(204, 404)
        )
        return response.status_code == 204

    def rotate_own_token(self) -> None:
        """Replace this client's user's API token; the old one stops working (this client with it)."""
        self._raw("POST", "/api/current-user/reset-token/", ok_statuses=(200, 201))

    def annotation_log(self, project_id: int) -> pd.DataFrame:
        """One row per annotation: task_id, user_id, annotator (email), cancelled, created_at, lead_time."""
        rows = [
            {
                "task_id": task.get("id"),
                "user_id": (ann.get("completed_by") or {}).get("id"),
                "annotator": (ann.get("completed_by") or {}).get("email"),
                "cancelled": bool(ann.get("was_cancelled")),
                "created_at": ann.get("created_at"),
                "lead_time": ann.get("lead_time"),
            }
            for task in json.loads(self._snapshot_bytes(project_id))
            for ann in task.get("annotations") or []
        ]
        columns = ["task_id", "user_id", "annotator", "cancelled", "created_at", "lead_time"]
        return pd.DataFrame(rows, columns=columns)

    def list_projects(self) -> dict[int, str]:
        """Project id -> title."""
        return {int(p["id"]): str(p["title"]) for p in self._list_projects()}

    # -- projects -------------------------------------------------------------
    def ensure_project(
        self,
        identifier: str,
        title: str,
        label_config_xml: str,
        maximum_annotations: int,
        *,
        description: str = "",
    ) -> int:
        """The id of the project tagged `identifier`, created or brought up to date.

        The identifier lives on the first line of the description ("sluice-project: <id>"),
        so renaming the project in the UI does not lose it. An existing project gets the
        given label config and overlap if they differ (Label Studio refuses a config change
        that would invalidate existing annotations: the error says so).
        """
        marker = f"{_MARKER_PREFIX} {identifier}"
        matches = [p for p in self._list_projects() if (p.get("description") or "").split("\n", 1)[0] == marker]
        if len(matches) > 1:
            ids = [p["id"] for p in matches]
            raise LabelStudioError(
                f"several Label Studio projects {ids} are tagged {identifier!r}; delete or retag all but one"
            )
        if matches:
            project_id = int(matches[0]["id"])
            current = self._call(self._sdk.projects.get, id=project_id)
            changes: dict[str, Any] = {}
            if (current.label_config or "").strip() != label_config_xml.strip():
                changes["label_config"] = label_config_xml
            if current.maximum_annotations != maximum_annotations:
                changes["maximum_annotations"] = maximum_annotations
            if changes:
                self._call(self._sdk.projects.update, id=project_id, **changes)
                self._controls.pop(project_id, None)
            return project_id
        project = self._call(
            self._sdk.projects.create,
            title=title,
            description=f"{marker}\n{description}".rstrip(),
            label_config=label_config_xml,
            maximum_annotations=maximum_annotations,
            # Overlap for every task, not a cohort of them.
            overlap_cohort_percentage=100,
            show_skip_button=True,
        )
        return _require_id(project.id, "project")

    def progress(self, project_id: int) -> Progress:
        """Tasks, tasks labelled by `maximum_annotations` annotators, and annotations so far."""
        project = self._call(self._sdk.projects.get, id=project_id)
        return Progress(
            tasks=int(project.task_number or 0),
            labelled=int(project.finished_task_number or 0),
            annotations=int(project.total_annotations_number or 0),
        )

    # -- tasks ----------------------------------------------------------------
    def list_item_ids(self, project_id: int) -> dict[str, int]:
        """str(item_id) -> task id of every task in the project that carries an item_id."""
        return {item: task_id for item, (task_id, _) in self.list_tasks(project_id).items()}

    def list_tasks(self, project_id: int) -> dict[str, tuple[int, int]]:
        """str(item_id) -> (task id, overlap) of every task in the project that carries an item_id."""
        found: dict[str, tuple[int, int]] = {}
        page = 1
        while True:
            response = self._raw(
                "GET",
                "/api/tasks",
                params={
                    "project": project_id,
                    "page": page,
                    "page_size": _TASK_PAGE_SIZE,
                    "fields": "task_only",
                    "include": "id,data,overlap",
                },
                ok_statuses=(200, 404),
            )
            if response.status_code == 404:  # past the last page
                break
            body = response.json()
            tasks = body.get("tasks", [])
            for task in tasks:
                item_id = (task.get("data") or {}).get(_ID_FIELD)
                if item_id is not None:
                    found[str(item_id)] = (int(task["id"]), int(task.get("overlap") or 1))
            if len(tasks) < _TASK_PAGE_SIZE or page * _TASK_PAGE_SIZE >= int(body.get("total", 0)):
                break
            page += 1
        return found

    def import_items(
        self,
        project_id: int,
        items: pd.DataFrame,
        text_col: str,
        id_col: str = _ID_FIELD,
        batch_size: int = 500,
        predictions: pd.DataFrame | None = None,
        annotations: Mapping[Hashable, Sequence[Mapping[str, Any]]] | None = None,
        *,
        data_key: str | None = None,
        extra_cols: Sequence[str] = (),
        model_version: str | None = None,
        task_data: Callable[[Any], Any] | None = None,
    ) -> ImportResult:
        """Import the items the project does not hold yet, in batches, with inline extras.

        Safe to rerun: items whose item_id is already in a task are skipped (read first),
        and so are their predictions and annotations (use push_predictions for those).

        Args:
            items: one row per item; `id_col` is stored as task data `item_id`.
            text_col: the column shown to annotators, stored under `data_key` (default: same
                name), which must match the config's object tag value (`$text`).
            predictions: optional rows of item_id, label, score[, model_version].
            annotations: optional item_id -> Label Studio annotation payloads
                (`tasks.simulate.build_annotation_payloads`).
            extra_cols: more item columns copied into the task data.
            task_data: turns a `text_col` cell into its task data (the modality's `task_data`, e.g. an
                image path as text); None stores the cell as it is.
        """
        for col in (id_col, text_col, *extra_cols):
            if col not in items.columns:
                raise LabelStudioError(f"column {col!r} is missing from the items to import into Label Studio")
        dupes = items[id_col][items[id_col].duplicated()].unique().tolist()
        if dupes:
            raise LabelStudioError(
                f"item ids {dupes[:5]} appear more than once in the items to import; deduplicate them first"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        existing = self.list_item_ids(project_id)
        fresh = items[~items[id_col].astype(str).isin(existing)]
        key = data_key or text_col
        preds_by_item = (
            self._prediction_payloads(project_id, predictions, model_version) if predictions is not None else {}
        )
        anns_by_item = {str(k): list(v) for k, v in (annotations or {}).items()}

        n_preds = n_anns = 0
        batch: list[dict[str, Any]] = []
        columns = [id_col, text_col, *extra_cols]
        shown = task_data or (lambda value: value)
        for row in fresh[columns].itertuples(index=False, name=None):
            record = dict(zip(columns, row, strict=True))
            item_id = _plain(record[id_col])
            task: dict[str, Any] = {
                "data": {key: _plain(shown(record[text_col])), _ID_FIELD: item_id}
                | {c: _plain(record[c]) for c in extra_cols}
            }
            if preds := preds_by_item.get(str(item_id)):
                task["predictions"] = preds
                n_preds += len(preds)
            if anns := anns_by_item.get(str(item_id)):
                task["annotations"] = anns
                n_anns += len(anns)
            batch.append(task)
            if len(batch) >= batch_size:
                self._import_batch(project_id, batch)
                batch = []
        if batch:
            self._import_batch(project_id, batch)
        if predictions is not None and n_preds:
            self._set_model_version(project_id, predictions, model_version)
        return ImportResult(
            imported=len(fresh), already_present=len(items) - len(fresh), annotations=n_anns, predictions=n_preds
        )

    def list_predictions(self, project_id: int) -> pd.DataFrame:
        """The project's predictions: item_id, label, score, model_version (what annotators see as suggestions)."""
        task_items = {task_id: item for item, task_id in self.list_item_ids(project_id).items()}
        rows = []
        for prediction in self._call(lambda: list(self._sdk.predictions.list(project=project_id))):
            choices = [c for r in prediction.result or [] for c in (r.get("value") or {}).get("choices", [])]
            rows.append(
                {
                    "item_id": task_items.get(int(prediction.task or 0)),
                    "label": choices[0] if choices else None,
                    "score": prediction.score,
                    "model_version": prediction.model_version,
                }
            )
        return pd.DataFrame(rows, columns=["item_id", "label", "score", "model_version"])

    def push_predictions(
        self, project_id: int, predictions: pd.DataFrame, model_version: str, *, batch_size: int = 1000
    ) -> int:
        """Attach model predictions (item_id, label, score) to existing tasks; returns how many.

        The project's model_version is set too, so the UI shows them as pre-annotations.
        """
        task_ids = self.list_item_ids(project_id)
        keys = predictions["item_id"].astype(str)
        unknown = predictions.loc[~keys.isin(task_ids), "item_id"].tolist()
        if unknown:
            raise LabelStudioError(
                f"{len(unknown)} predictions are for items not in project {project_id} (e.g. {unknown[:5]}); "
                "import those items first (import_items)"
            )
        by_item = self._prediction_payloads(project_id, predictions, model_version)
        request = [{"task": task_ids[item], **payload} for item, payloads in by_item.items() for payload in payloads]
        for start in range(0, len(request), batch_size):
            self._call(
                self._sdk.projects.import_predictions, id=project_id, request=request[start : start + batch_size]
            )
        self._call(self._sdk.projects.update, id=project_id, model_version=model_version)
        return len(request)

    def reopen_tasks(self, task_overlaps: Mapping[int, int]) -> int:
        """Give tasks more annotator slots (their own overlap) and put them back in the stream; returns how many.

        Measured: Label Studio keeps a task's `is_labeled` as it was when its overlap rises, so a
        finished task is not served again unless that flag is cleared too (the next annotation
        recomputes it). A task's overlap survives later imports, but changing the project's
        `maximum_annotations` resets every task above 1 (so callers set it again each sync).
        """
        # `?review=true` has Label Studio evaluate only two fields of the task it returns: the default
        # evaluates every Data Manager field and costs several times as much per PATCH (bench/labelstudio_overlap.py).
        self._raw_each(
            [("PATCH", f"/api/tasks/{task_id}/", {"review": "true"}, {"overlap": int(overlap), "is_labeled": False})]
            for task_id, overlap in task_overlaps.items()
        )
        return len(task_overlaps)

    def add_annotations(self, task_annotations: Mapping[int, Sequence[Mapping[str, Any]]]) -> int:
        """Add annotations to existing tasks, each on behalf of its `completed_by` user; returns how many.

        For the demo annotators' later rounds (their first answers travel inline with the import).
        """
        per_task = [
            [("POST", f"/api/tasks/{task_id}/annotations/", None, dict(payload)) for payload in payloads]
            for task_id, payloads in task_annotations.items()
        ]
        self._raw_each(per_task)
        return sum(len(requests) for requests in per_task)

    # -- export ---------------------------------------------------------------
    def export_snapshot(self, project_id: int, dest_dir: Path, *, timeout_s: float = 600.0) -> tuple[Path, str]:
        """Export every task with annotations (annotators expanded to emails) to `dest_dir`.

        The raw bytes are kept as they came, named by project, time and hash, with a
        `.sha256` file beside them.

        Returns:
            (path of the JSON export, its sha256).
        """
        raw = self._snapshot_bytes(project_id, timeout_s=timeout_s)
        sha256 = hashlib.sha256(raw).hexdigest()
        dest_dir.mkdir(parents=True, exist_ok=True)
        path = dest_dir / f"labelstudio-project{project_id}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{sha256[:12]}.json"
        path.write_bytes(raw)
        path.with_name(path.name + ".sha256").write_text(f"{sha256}  {path.name}\n")
        return path, sha256

    def _snapshot_bytes(self, project_id: int, *, timeout_s: float = 600.0) -> bytes:
        """A snapshot export's raw JSON; annotators expanded to {id, email} (removed members keep their email)."""
        export = self._call(
            self._sdk.projects.exports.create,
            id=project_id,
            title=f"sluice snapshot {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}",
            serialization_options={"annotations__completed_by": {"only_id": False}},
        )
        export_id = _require_id(export.id, "export")
        deadline = time.monotonic() + timeout_s
        while True:
            state = self._call(self._sdk.projects.exports.get, id=project_id, export_pk=export_id)
            if state.status == "completed":
                break
            if state.status == "failed" or time.monotonic() > deadline:
                raise LabelStudioError(
                    f"Label Studio export {export_id} of project {project_id} ended as {state.status!r}; "
                    f"see the server log (<home>/logs/labelstudio.log)"
                )
            time.sleep(0.2)
        raw = self._call(
            lambda: b"".join(
                self._sdk.projects.exports.download(id=project_id, export_pk=export_id, export_type="JSON")
            )
        )
        # The server keeps every export file; the caller keeps its own copy.
        self._call(self._sdk.projects.exports.delete, id=project_id, export_pk=export_id)
        return raw

    def export_tasks(self, project_id: int) -> list[dict[str, Any]]:
        """All tasks of a project with their annotations (completed_by as ids), in memory."""
        raw = self._call(
            lambda: b"".join(
                self._sdk.projects.exports.download_sync(id=project_id, export_type="JSON", download_all_tasks=True)
            )
        )
        tasks: list[dict[str, Any]] = json.loads(raw)
        return tasks

    # -- adjudication ---------------------------------------------------------
    def create_review_tasks(
        self,
        review_project_id: int,
        queue: pd.DataFrame,
        *,
        text_col: str = "text",
        data_key: str | None = None,
        votes_key: str = "votes",
        batch_size: int = 500,
    ) -> ImportResult:
        """Put disputed items into an adjudication project, showing the annotators' votes.

        Args:
            queue: item_id, `text_col`, and votes: a mapping annotator -> label (or a list of
                labels) per item.
            votes_key: task data field the review config shows (tasks.label_config.build_review_config).

        The votes appear as text in the task and the majority label as a prediction
        (model_version "annotator-votes", score = its share), pre-selected for the reviewer. When the
        queue has `suggestion` and `suggestion_score` (the label-quality model's), that is the prediction.
        """
        for col in ("item_id", text_col, "votes"):
            if col not in queue.columns:
                raise LabelStudioError(f"column {col!r} is missing from the review queue")
        items = queue[["item_id", text_col]].copy()
        items[votes_key] = [_format_votes(v) for v in queue["votes"]]
        majority = [_majority(v) for v in queue["votes"]]
        label = pd.Series([m[0] for m in majority], index=queue.index, dtype=object)
        score = pd.Series([m[1] for m in majority], index=queue.index, dtype=float)
        if {"suggestion", "suggestion_score"} <= set(queue.columns):
            has = queue["suggestion"].notna()
            label[has], score[has] = queue.loc[has, "suggestion"], queue.loc[has, "suggestion_score"]
        predictions = pd.DataFrame({"item_id": queue["item_id"].to_numpy(), "label": label, "score": score})
        return self.import_items(
            review_project_id,
            items,
            text_col,
            batch_size=batch_size,
            predictions=predictions,
            data_key=data_key,
            extra_cols=[votes_key],
            model_version=REVIEW_MODEL_VERSION,
        )

    def fetch_adjudications(self, review_project_id: int) -> pd.DataFrame:
        """The reviewers' final labels: item_id, label, reviewer (newest decision per item)."""
        control = self._control(review_project_id)
        parsed = parse_export(
            json.loads(self._snapshot_bytes(review_project_id)),
            classes=control.labels,
            overlap=None,
            user_names=self.user_names(),
        )
        latest = (
            parsed.annotations.sort_values(["created_at", "annotation_id"])
            .drop_duplicates(subset=["item_id"], keep="last")
            .rename(columns={"annotator": "reviewer"})
        )
        return latest[["item_id", "label", "reviewer"]].reset_index(drop=True)

    # -- labelling stream (what an annotator does) ----------------------------
    def next_task(self, project_id: int) -> dict[str, Any] | None:
        """The next task the stream serves this client's user, or None when nothing is left."""
        response = self._raw("GET", f"/api/projects/{project_id}/next", ok_statuses=(200, 404))
        if response.status_code == 404:
            return None
        task: dict[str, Any] = response.json()
        return task

    def submit_annotation(
        self, task_id: int, result: Sequence[Mapping[str, Any]], *, lead_time: float | None = None
    ) -> int:
        """Annotate a task as this client's user; returns the annotation id."""
        kwargs: dict[str, Any] = {"id": task_id, "result": list(result)}
        if lead_time is not None:
            kwargs["lead_time"] = lead_time
        annotation = self._call(self._sdk.annotations.create, **kwargs)
        return int(annotation.id or 0)

    def skip_task(self, task_id: int) -> int:
        """Skip a task as this client's user (a cancelled annotation); returns its id."""
        annotation = self._call(self._sdk.annotations.create, id=task_id, result=[], was_cancelled=True)
        return int(annotation.id or 0)

    # -- internals ------------------------------------------------------------
    def _call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Call the SDK, retrying connection errors with exponential backoff; explain failures."""
        for attempt in range(self.tries):
            try:
                return fn(*args, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                # Only errors before the request was sent are retried: a POST is never doubled.
                if attempt + 1 < self.tries:
                    time.sleep(self.backoff_s * 2**attempt)
            except httpx.TransportError as exc:
                # The server went away mid-request (stopped, crashed): the request may have been applied, so it
                # is not repeated here; a rerun of the stage reads what is there first and sends only the rest.
                raise LabelStudioUnreachableError(
                    f"Label Studio at {self.url} stopped answering during a request ({type(exc).__name__}); "
                    "start it with `sluice labelstudio start`"
                ) from exc
            except ApiError as exc:
                raise self._api_error(exc.status_code, exc.body) from None
        raise LabelStudioUnreachableError(
            f"Label Studio at {self.url} is unreachable after {self.tries} tries; "
            "start it with `sluice labelstudio start`"
        ) from None

    def _raw(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        ok_statuses: Sequence[int] = (200, 201),
    ) -> httpx.Response:
        """A request the SDK has no method (or only a slow one) for."""
        response = self._call(
            self._http.request,
            method,
            f"{self.url}{path}",
            params=dict(params or {}),
            json=json_body,
            headers={"Authorization": f"Token {self._token}"},
        )
        if response.status_code not in ok_statuses:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text[:500]
            raise self._api_error(response.status_code, body)
        return response

    def _raw_each(self, groups: Iterable[Sequence[tuple[str, str, Mapping[str, Any] | None, Any]]]) -> None:
        """Send groups of requests (method, path, params, JSON body), `_PARALLEL_REQUESTS` groups at a time.

        Each task's PATCH or annotation POST is its own transaction on the server, which answers one
        request per worker thread: four in flight keep it busy where one at a time waits on every round
        trip. A group's requests go one after another: two annotations of one task posted at once race in
        Label Studio's count of the task's annotations, and the task can stay unlabelled with its overlap
        reached (measured: 2 of 10 tasks), so the stream would serve it again. The first error is raised
        once the requests already sent have finished.
        """

        def send(requests: Sequence[tuple[str, str, Mapping[str, Any] | None, Any]]) -> None:
            for method, path, params, body in requests:
                self._raw(method, path, params=params, json_body=body)

        with ThreadPoolExecutor(max_workers=_PARALLEL_REQUESTS) as pool:
            futures = [pool.submit(send, requests) for requests in groups]
        for future in futures:
            future.result()

    def _api_error(self, status: int | None, body: Any) -> LabelStudioError:
        if status in (401, 403):
            return LabelStudioAuthError(
                f"Label Studio at {self.url} rejected the API token (HTTP {status}); set the admin token "
                "in $SLUICE_LABEL_STUDIO_TOKEN (for a server sluice started: <home>/labelstudio/admin_token)"
            )
        detail = body
        if isinstance(body, Mapping):
            detail = body.get("validation_errors") or body.get("detail") or body
        return LabelStudioError(f"Label Studio at {self.url} answered HTTP {status}: {detail}")

    def _list_projects(self) -> Iterator[dict[str, Any]]:
        projects: list[Any] = self._call(lambda: list(self._sdk.projects.list(page_size=1000)))
        for project in projects:
            yield {"id": project.id, "title": project.title, "description": project.description}

    def _control(self, project_id: int) -> _Control:
        if project_id not in self._controls:
            project = self._call(self._sdk.projects.get, id=project_id)
            parsed = project.parsed_label_config or {}
            controls = [
                (name, spec)
                for name, spec in parsed.items()
                if isinstance(spec, Mapping) and spec.get("type") in _RESULT_TYPES
            ]
            if len(controls) != 1:
                raise LabelStudioError(
                    f"project {project_id} needs exactly one Choices or Labels control, it has "
                    f"{[name for name, _ in controls]}; fix its label config"
                )
            name, spec = controls[0]
            self._controls[project_id] = _Control(
                from_name=name,
                to_name=str((spec.get("to_name") or [""])[0]),
                result_type=_RESULT_TYPES[str(spec["type"])],
                labels=tuple(str(label) for label in spec.get("labels") or []),
            )
        return self._controls[project_id]

    def _prediction_payloads(
        self, project_id: int, predictions: pd.DataFrame, model_version: str | None
    ) -> dict[str, list[dict[str, Any]]]:
        missing = {"item_id", "label", "score"} - set(predictions.columns)
        if missing:
            raise LabelStudioError(f"predictions need columns item_id, label, score; missing {sorted(missing)}")
        control = self._control(project_id)
        bad = sorted(set(predictions["label"].astype(str)) - set(control.labels))
        if bad:
            raise LabelStudioError(
                f"predicted labels {bad[:10]} are not choices of project {project_id} ({list(control.labels)})"
            )
        versions = (
            predictions["model_version"].astype(str).tolist()
            if "model_version" in predictions.columns
            else [model_version or "unknown"] * len(predictions)
        )
        payloads: dict[str, list[dict[str, Any]]] = {}
        for (item_id, label, score), version in zip(
            predictions[["item_id", "label", "score"]].itertuples(index=False, name=None), versions, strict=True
        ):
            payloads.setdefault(str(item_id), []).append(
                {
                    "result": build_choice_result(
                        str(label),
                        from_name=control.from_name,
                        to_name=control.to_name,
                        result_type=control.result_type,
                    ),
                    "score": float(score),
                    "model_version": version,
                }
            )
        return payloads

    def _set_model_version(self, project_id: int, predictions: pd.DataFrame, model_version: str | None) -> None:
        version = model_version or (
            str(predictions["model_version"].iloc[-1]) if "model_version" in predictions.columns else None
        )
        if version:
            self._call(self._sdk.projects.update, id=project_id, model_version=version)

    def _import_batch(self, project_id: int, batch: list[dict[str, Any]]) -> None:
        self._call(self._sdk.projects.import_tasks, id=project_id, request=batch, return_task_ids=False)


def _csrf_form(http: httpx.Client, url: str) -> dict[str, str]:
    """The hidden CSRF field of a Label Studio form page (the GET also sets the csrftoken cookie)."""
    page = http.get(url)
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    if page.status_code != 200 or found is None:
        raise LabelStudioError(f"Label Studio at {url} answered HTTP {page.status_code} without a form to fill")
    return {"csrfmiddlewaretoken": found.group(1)}


def _require_id(value: int | None, what: str) -> int:
    if value is None:
        raise LabelStudioError(f"Label Studio created a {what} but returned no id; check the server log")
    return int(value)


def _plain(value: Any) -> Any:
    """A JSON-ready scalar (numpy and pandas scalars -> Python)."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _votes_pairs(votes: Any) -> list[tuple[str, str]]:
    if isinstance(votes, Mapping):
        return [(str(k), str(v)) for k, v in votes.items()]
    return [(f"annotator {i + 1}", str(v)) for i, v in enumerate(votes)]


def _format_votes(votes: Any) -> str:
    return " · ".join(f"{who}: {label}" for who, label in _votes_pairs(votes))


def _majority(votes: Any) -> tuple[str, float]:
    labels = [label for _, label in _votes_pairs(votes)]
    if not labels:
        raise LabelStudioError("a review item has no votes; drop it from the queue or add its annotations")
    counts = pd.Series(labels).value_counts()
    return str(counts.index[0]), float(counts.iloc[0] / len(labels))
