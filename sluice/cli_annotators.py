"""People subcommands of the `sluice` CLI: `annotators invite|add|list|remove` and the admin's credentials."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from sluice.home import Home

if TYPE_CHECKING:
    from sluice.annotators import AdminSession

COMMANDS = ("annotators",)
SIGN_IN_HINT = "each person signs in with their own account (`sluice annotators invite` or `add`)"


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `sluice annotators ...` on the main parser."""
    annotators = sub.add_parser("annotators", help="accounts for the people who label, on the project's Label Studio")
    actions = annotators.add_subparsers(dest="annotators_action", required=True)
    invite = actions.add_parser("invite", help="print the sign-up link for new annotators")
    invite.add_argument("--rotate", action="store_true", help="make a new link; the old one stops working")
    add = actions.add_parser("add", help="create an account and print its password once")
    add.add_argument("email")
    add.add_argument("--new-password", action="store_true", help="the account exists: give it a new password")
    listing = actions.add_parser("list", help="each person's progress: tasks done per project, last activity")
    listing.add_argument("--project", type=int, default=None, help="one project id (default: every project)")
    remove = actions.add_parser("remove", help="take a person out of the labelling stream (annotations stay)")
    remove.add_argument("email")
    remove.add_argument("--project", type=int, default=None, help="count their annotations in this project only")
    remove.add_argument(
        "--keep-login", action="store_true", help="only end the membership; leave their password and API token"
    )


def _say(message: str, *, error: bool = False) -> None:
    print(message, file=sys.stderr if error else sys.stdout, flush=True)  # noqa: T201 - a terminal command


def print_credentials(home: Home) -> int:
    """`sluice labelstudio credentials`: the admin login of this home's server (for its owner, not annotators)."""
    from sluice.labelstudio_server import LabelStudioSettings

    credentials = LabelStudioSettings().credentials(home)
    _say("sluice: the Label Studio admin of this home: for setting up projects, not for labelling;")
    _say(f"        {SIGN_IN_HINT}")
    _say(f"  user      {credentials.username}")
    _say(f"  password  {credentials.password}")
    if credentials.password_file is not None:
        _say(f"  kept in   {credentials.password_file} (mode 0600)")
    return 0


def _invite(session: AdminSession, rotate: bool) -> None:
    from sluice.annotators import invite_link

    link = invite_link(session, rotate=rotate)
    fresh = " (a new one: the old link no longer works)" if rotate else ""
    _say(f"sluice: sign-up link for Label Studio at {session.client.url}{fresh}:")
    _say(f"  {link}")
    _say("  Send it to each annotator: they sign up with their email and a password of their own, open the")
    _say('  project and press "Label All Tasks". Anyone holding the link can join: `--rotate` retires it.')
    if session.local:
        _say("  The server listens on loopback only; for people on other machines see README, Labelling with people.")


def _add(session: AdminSession, email: str, new_password: bool) -> None:
    from sluice.annotators import add_annotator

    password = add_annotator(session, email, new_password=new_password)
    _say(f"sluice: {'new password for' if new_password else 'created the Label Studio account'} {email}")
    _say(f"  sign in at  {session.client.url}/user/login/")
    _say(f"  password    {password}")
    _say("  Shown this once and kept nowhere: pass it on privately. Community has no self-service password")
    _say(f"  change; `sluice annotators add {email} --new-password` makes a new one.")


def _list(session: AdminSession, project_id: int | None) -> None:
    from sluice.annotators import list_annotators

    table = list_annotators(session, project_id=project_id)
    if table.empty:
        _say("sluice: no annotator accounts yet; `sluice annotators invite` prints the sign-up link")
        return
    shown = table.assign(
        last_annotation=table["last_annotation"].fillna("-").astype(str).str[:19],
        last_activity=table["last_activity"].fillna("-").astype(str).str[:19],
    )
    _say(shown.to_string(index=False))


def _remove(session: AdminSession, email: str, keep_login: bool, project_id: int | None) -> None:
    from sluice.annotators import remove_annotator

    removal = remove_annotator(session, email, lock_out=not keep_login, project_id=project_id)
    _say(f"sluice: {removal.email} is out of the labelling stream (organisation membership ended)")
    if removal.locked_out:
        _say("  their password was replaced and their API token rotated: they can no longer sign in")
    elif not keep_login:
        _say("  this is not the home's own server: their login still works, but every project answers 403")
    kept = ", ".join(f"{n} in {title!r}" for title, n in removal.annotations.items()) or "none"
    _say(f"  their annotations stay and keep counting: {kept}")


def handle(args: argparse.Namespace, home: Home) -> int | None:
    """Run an annotators subcommand; None when `args.command` is not one of them."""
    if args.command not in COMMANDS:
        return None
    # Before Prefect is imported (the token may sit in a Prefect Secret block): settings point at the home.
    for key, value in home.service_env().items():
        os.environ.setdefault(key, value)
    from sluice.annotators import AdminSession, AnnotatorError
    from sluice.labelstudio import LabelStudioError
    from sluice.labelstudio_server import LabelStudioServerError, LabelStudioSettings

    try:
        session = AdminSession.open(LabelStudioSettings(), home)
        try:
            action = args.annotators_action
            if action == "invite":
                _invite(session, args.rotate)
            elif action == "add":
                _add(session, args.email, args.new_password)
            elif action == "list":
                _list(session, args.project)
            else:
                _remove(session, args.email, args.keep_login, args.project)
        finally:
            session.close()
    except (AnnotatorError, LabelStudioError, LabelStudioServerError) as exc:
        _say(f"sluice: {exc}", error=True)
        return 1
    return 0
