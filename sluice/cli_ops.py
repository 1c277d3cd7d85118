"""Operations subcommands of the `sluice` CLI: `serve`, `ui` and `secret`."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from sluice.home import Home

COMMANDS = ("serve", "ui", "secret")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the operations subcommands on the main parser."""
    serve = sub.add_parser(
        "serve",
        help="deploy prefect.yaml to the local Prefect server and run a worker for the scheduled flows",
    )
    serve.add_argument(
        "--detach", action="store_true", help="run the worker in the background (stop it with `sluice stop`)"
    )

    ui = sub.add_parser("ui", help="open the Prefect, MLflow and Label Studio UIs until Ctrl-C")
    ui.add_argument("--no-labelstudio", action="store_true", help="leave Label Studio out (slowest to start)")

    secret = sub.add_parser("secret", help="store a secret (e.g. the Label Studio token) in a Prefect block")
    actions = secret.add_subparsers(dest="secret_action", required=True)
    store = actions.add_parser("set", help="read the value from the terminal (hidden) or stdin and store it")
    store.add_argument("name", help="block name, e.g. sluice-labelstudio-token")


def _say(message: str, *, error: bool = False) -> None:
    print(message, file=sys.stderr if error else sys.stdout, flush=True)  # noqa: T201 - a terminal command


def _serve(home: Home, *, detach: bool) -> int:
    from sluice.deploy import (
        WORK_POOL,
        DeployError,
        prepare_deployments,
        run_worker_foreground,
        start_worker_detached,
    )
    from sluice.services import ServiceError

    _say("sluice: starting/reusing the Prefect server and deploying prefect.yaml (~1 min)…")
    try:
        served = prepare_deployments(home)
    except (DeployError, ServiceError) as exc:
        _say(f"sluice: {exc}", error=True)
        return 1
    _say(f"  Prefect UI   {served.server.url}")
    _say(f"  work pool    {WORK_POOL}{' (created)' if served.pool_created else ''}")
    _say("  deployments")
    for deployment in served.deployments:
        schedules = ", ".join(deployment.schedules) or "on demand only"
        _say(f"    {deployment.name:<45} {schedules}")
    for name in served.skipped:
        _say(f"    {name:<45} not deployed: its flow file does not exist yet")
    _say("  run one now: .venv/bin/prefect deployment run 'sluice-pipeline/train'")
    if detach:
        try:
            worker = start_worker_detached(home, served.env)
        except ServiceError as exc:
            _say(f"sluice: the worker did not start: {exc}", error=True)
            return 1
        _say(f"sluice: worker running in the background (pid {worker.pid}, log {worker.log})")
        _say("sluice: `sluice stop` stops it")
        return 0
    _say(f"sluice: worker polling {WORK_POOL}; Ctrl-C stops it (the server keeps running: `sluice stop`)")
    return run_worker_foreground(served.env)


def _secret(args: argparse.Namespace) -> int:
    from sluice.secrets import SecretError, store_secret

    if sys.stdin.isatty():
        value = getpass.getpass(f"value for {args.name} (hidden): ")
    else:
        value = sys.stdin.readline().strip()
    try:
        store_secret(args.name, value)
    except SecretError as exc:
        _say(f"sluice: {exc}", error=True)
        return 1
    _say(f"sluice: stored the Prefect Secret block {args.name}")
    return 0


def handle(args: argparse.Namespace, home: Home) -> int | None:
    """Run an operations subcommand; None when `args.command` is not one of them."""
    if args.command not in COMMANDS:
        return None
    # Before Prefect or MLflow is imported: they read their settings (and home folders) at import.
    for key, value in home.service_env().items():
        os.environ.setdefault(key, value)
    home.root.mkdir(parents=True, exist_ok=True)
    if args.command == "serve":
        return _serve(home, detach=args.detach)
    if args.command == "ui":
        from sluice.ui import run_ui

        return run_ui(home, labelstudio=not args.no_labelstudio)
    if not os.environ.get("PREFECT_API_URL"):
        from sluice.services import ensure_prefect_server

        os.environ["PREFECT_API_URL"] = f"{ensure_prefect_server(home).url}/api"
    return _secret(args)
