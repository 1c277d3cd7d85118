"""The `sluice` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from sluice.home import Home

DEMO_CONFIG = "configs/rotten_tomatoes.yaml"
EXIT_GATE = 2  # a gate (expectations, leakage, agreement, promotion) stopped the run
EXIT_BAD_INPUT = 1


def _prepare_environment(home: Home, *, prefect: str) -> None:
    """Point every service at the home before Prefect or MLflow is imported (they read settings at import)."""
    for key, value in home.service_env().items():
        os.environ.setdefault(key, value)
    home.root.mkdir(parents=True, exist_ok=True)
    if prefect == "server" and not os.environ.get("PREFECT_API_URL"):
        from sluice.services import ensure_prefect_server

        print("sluice: starting the local Prefect server (first time ~20 s)…", flush=True)
        server = ensure_prefect_server(home)
        os.environ["PREFECT_API_URL"] = f"{server.url}/api"


def _gate_errors() -> tuple[type[BaseException], ...]:
    from tasks.leakage import LeakageError
    from tasks.validate import ExpectationGateError

    errors: list[type[BaseException]] = [ExpectationGateError, LeakageError]
    try:
        from tasks.consensus import AgreementGateError

        errors.append(AgreementGateError)
    except ImportError:
        pass
    return tuple(errors)


def _input_errors() -> tuple[type[BaseException], ...]:
    from sluice.config import ConfigError
    from sluice.tracking import TrackingError
    from tasks.ingest import IngestError
    from tasks.validate import SuiteFileError

    return (ConfigError, IngestError, SuiteFileError, TrackingError, ValueError, FileNotFoundError)


def format_summary(result: dict[str, Any], *, prefect_url: str | None) -> str:
    """What the terminal says when a run ends: rows, expectations, splits, metrics, model, where to look."""
    rows = result["rows"]
    quarantined = ", ".join(f"{step} {n}" for step, n in rows["quarantined"].items()) or "none"
    lines = [
        "",
        f"sluice: pipeline finished — {Path(result['config']).name}, snapshot {result['snapshot_id']}",
        f"  rows        {rows['rows_in']} in → {rows['trainable']} kept for training, "
        f"{rows['awaiting']} awaiting labels, {rows['quarantined_total']} quarantined ({quarantined})",
        f"              quarantine: {result['quarantine_path']}",
    ]
    for suite in result["expectations"]:
        total = len(suite["passed"]) + len(suite["failed"])
        verdict = "passed" if suite["success"] else "FAILED"
        lines.append(f"  expectations {suite['suite']}: {verdict}, {len(suite['passed'])}/{total} expectations passed")
        lines += [f"                ✓ {name}" for name in suite["passed"]]
        lines += [f"                ✗ {name}" for name in suite["failed"]]
    sizes = ", ".join(f"{k} {v}" for k, v in result["split_sizes"].items())
    lines.append(f"  split       {sizes} (manifest {result['split_manifest_hash'][:12]})")
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in result["test_metrics"].items())
    lines.append(f"  test        {metrics}")
    lines.append(
        f"  model       {result['model_name']} version {result['model_version']} "
        f"(run {result['run_id'][:12]}, device {result['device']})"
    )
    lines.append("  look")
    if prefect_url:
        lines.append(f"    Prefect UI   {prefect_url}/runs/flow-run/{result['flow_run_id']}")
    else:
        lines.append("    Prefect UI   `sluice ui`")
    lines.append(
        f"    MLflow UI    `sluice ui`, then the model {result['model_name']} under Models "
        f"(tracking store {result['tracking_uri']})"
    )
    docs = next((s["data_docs"] for s in result["expectations"] if s.get("data_docs")), None)
    if docs:
        lines.append(f"    Data Docs    {docs}")
    lines.append(f"    run folder   {result['run_dir']}")
    return "\n".join(lines)


def _run(config: str, home: Home, *, prefect: str) -> int:
    _prepare_environment(home, prefect=prefect)
    from flows.pipeline import pipeline

    gate_errors, input_errors = _gate_errors(), _input_errors()
    try:
        result = pipeline(config_path=config, home=str(home.root))
    except gate_errors as exc:
        print(f"\nsluice: a gate stopped the run: {exc}", file=sys.stderr)
        return EXIT_GATE
    except input_errors as exc:
        print(f"\nsluice: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    api = os.environ.get("PREFECT_API_URL", "")
    print(format_summary(result, prefect_url=api.removesuffix("/api") if api else None))
    return 0


def _stop(home: Home) -> int:
    from sluice.services import stop_service

    for name in ("prefect", "mlflow", "labelstudio"):
        if stop_service(home, name):
            print(f"sluice: stopped {name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Raw data to a reviewed, registered model.")
    parser.add_argument("--home", help="project home (default: $SLUICE_HOME or ./.sluice)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline for one dataset config")
    run.add_argument("--config", required=True, help="a pipeline config, e.g. configs/rotten_tomatoes.yaml")
    run.add_argument(
        "--prefect",
        choices=["server", "ephemeral"],
        default="server",
        help="server: start/reuse a local Prefect server under the home (default); ephemeral: a throwaway one",
    )

    demo = sub.add_parser("demo", help=f"run the pipeline on the bundled demo data ({DEMO_CONFIG})")
    demo.add_argument("--config", default=DEMO_CONFIG)
    demo.add_argument("--prefect", choices=["server", "ephemeral"], default="server")

    sub.add_parser("stop", help="stop the background services this home started")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    home = Home.resolve(args.home)
    if args.command in ("run", "demo"):
        return _run(args.config, home, prefect=args.prefect)
    if args.command == "stop":
        return _stop(home)
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
