"""People who label: invite, add, list and remove annotator accounts on the project's Label Studio.

Every person signs in with their own account, so each annotation names who made it and overlap
and agreement mean something. Accounts live in Label Studio; this module composes the HTTP
client (`sluice.labelstudio`) with the server's own management commands
(`sluice.labelstudio_server`), which Community needs for passwords.

What "remove" does, measured on Community 1.23.2: the member is taken out of the organisation
(the labelling stream, projects, tasks and exports answer 403 to them; their task locks are
released; their annotations stay and the export still names them). On the home's own server
their password is also replaced and their API token rotated, so they can no longer sign in or
call the API at all. Community has no way to bring a removed member back.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

import pandas as pd

from sluice.home import Home
from sluice.labelstudio import Account, LabelStudioClient, LabelStudioError
from sluice.labelstudio_server import LabelStudioSettings, is_home_server, resolve_url, set_user_password
from tasks.annotations import summarise_progress

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class AnnotatorError(ValueError):
    """An annotator account cannot be added or removed; the message says why and what to do."""


@dataclass
class AdminSession:
    """The admin client of the project's Label Studio, and whether that server is this home's own."""

    client: LabelStudioClient
    settings: LabelStudioSettings
    home: Home
    local: bool

    @classmethod
    def open(cls, settings: LabelStudioSettings, home: Home) -> AdminSession:
        """Connect as the admin to `$SLUICE_LABEL_STUDIO_URL`, else to the home's own server (started if needed)."""
        url = resolve_url(settings, home)
        client = LabelStudioClient.connect(url, settings.resolve_token(home))
        return cls(client, settings, home, local=is_home_server(home, url))

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class Removal:
    """What `remove_annotator` did: the account, their annotations per project (kept), and how far it went."""

    email: str
    user_id: int
    annotations: dict[str, int] = field(default_factory=dict)
    locked_out: bool = False


def invite_link(session: AdminSession, *, rotate: bool = False) -> str:
    """The sign-up link for new annotators (`rotate`: a new link, the old one stops working)."""
    return session.client.invite_link(rotate=rotate)


def add_annotator(session: AdminSession, email: str, *, new_password: bool = False) -> str:
    """Create an account for `email` and set a generated password; returns the password (shown once, never kept).

    Args:
        new_password: the account exists already: give it a new password instead.

    Raises:
        AnnotatorError: not an email, the account exists (or is missing with `new_password`), or
            the server is not this home's own (passwords are set through its database).
    """
    email = email.strip()
    if not _EMAIL_RE.match(email):
        raise AnnotatorError(f"{email!r} is not an email address; Label Studio signs people in by email")
    if not session.local:
        raise AnnotatorError(
            f"the Label Studio at {session.client.url} is not this home's own server, and Community sets "
            "passwords only through the server's database; send them the sign-up link instead "
            "(`sluice annotators invite`)"
        )
    existing = _active_account(session.client, email)
    if existing is None and new_password:
        raise AnnotatorError(f"{email} has no active account; add it without --new-password")
    if existing is not None and not new_password:
        raise AnnotatorError(
            f"{email} already has an account; `sluice annotators add {email} --new-password` gives them a new password"
        )
    if existing is None:
        try:
            session.client.create_account(email)
        except LabelStudioError as exc:
            # Removed members keep their row (their email is masked), so the address stays taken.
            raise AnnotatorError(
                f"Label Studio would not create {email} ({exc}); if they were removed, Community cannot bring "
                "them back: add them with another address"
            ) from None
    password = secrets.token_urlsafe(12)
    set_user_password(session.settings, session.home, email, password)
    return password


def list_annotators(session: AdminSession, *, project_id: int | None = None) -> pd.DataFrame:
    """Each person's progress: tasks done and skipped per project (or one project), last annotation, activity."""
    client = session.client
    admin_id = int(client.whoami()["id"])
    accounts = pd.DataFrame(
        [vars(a) for a in client.list_accounts() if a.id != admin_id],
        columns=["id", "email", "removed", "last_activity"],
    ).rename(columns={"id": "user_id"})
    logs = [client.annotation_log(pid).assign(project=title) for pid, title in _projects(client, project_id).items()]
    log = pd.concat(logs, ignore_index=True) if logs else pd.DataFrame()
    return summarise_progress(log, accounts)


def remove_annotator(
    session: AdminSession, email: str, *, lock_out: bool = True, count: bool = True, project_id: int | None = None
) -> Removal:
    """Take a person out of the labelling stream; their annotations stay (and are counted here).

    On the home's own server `lock_out` also replaces their password and rotates their API
    token, so they can no longer sign in; elsewhere only the organisation membership ends.
    `count` reads every project's export (or `project_id`'s) to count what they did.

    Raises:
        AnnotatorError: no active account has that email, or it is the admin the pipeline uses.
    """
    client = session.client
    account = _active_account(client, email)
    if account is None:
        raise AnnotatorError(
            f"{email} has no active account in Label Studio at {client.url} (see `sluice annotators list`)"
        )
    if account.id == int(client.whoami()["id"]):
        raise AnnotatorError(f"{email} is the admin account the pipeline uses; it cannot be removed")
    counts: dict[str, int] = {}
    for pid, title in _projects(client, project_id).items() if count else ():
        log = client.annotation_log(pid)
        done = int(((log["user_id"] == account.id) & ~log["cancelled"]).sum())
        if done:
            counts[title] = done
    client.remove_member(account.id)
    locked_out = False
    if lock_out and session.local:
        # A password reset ends their browser sessions but not their API token: rotate that too.
        password = secrets.token_urlsafe(24)
        set_user_password(session.settings, session.home, account.email, password)
        with LabelStudioClient.login(client.url, account.email, password) as them:
            them.rotate_own_token()
        locked_out = True
    return Removal(email=account.email, user_id=account.id, annotations=counts, locked_out=locked_out)


def _projects(client: LabelStudioClient, project_id: int | None) -> dict[int, str]:
    projects = client.list_projects()
    if project_id is None:
        return projects
    if project_id not in projects:
        raise AnnotatorError(f"Label Studio at {client.url} has no project {project_id}; projects: {sorted(projects)}")
    return {project_id: projects[project_id]}


def _active_account(client: LabelStudioClient, email: str) -> Account | None:
    wanted = email.strip().lower()
    return next((a for a in client.list_accounts() if not a.removed and a.email.lower() == wanted), None)
